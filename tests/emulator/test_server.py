"""``openai-fs serve`` as a process, the demo seed and the control API."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

from openai_fs.core import purposes
from openai_fs.emulator.config import REAL_DOWNLOADABLE
from openai_fs.emulator.control import EmulatorControlError, EmulatorProcess

from .helpers import assert_error, created, post_file

pytestmark = pytest.mark.timeout(60)

READY = re.compile(r"^openai-fs emulator listening on http://127\.0\.0\.1:(\d+)/v1\n$")


def serve(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "openai_fs", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or os.environ)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_prints_one_line_and_exits_cleanly_on_signal(tmp_path, sig):
    proc = serve("--port", "0", "--data-dir", str(tmp_path / "data"))
    try:
        line = proc.stdout.readline()
        m = READY.match(line)
        assert m, line
        port = int(m.group(1))
        assert port > 0
        r = httpx.get(f"http://127.0.0.1:{port}/v1/files", headers={"Authorization": "Bearer k"})
        assert r.status_code == 200
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "", out  # nothing but the one line on stdout
    assert "Traceback" not in err


def test_default_data_dir_follows_xdg(tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    proc = serve("--port", "0", env=env)
    try:
        port = int(READY.match(proc.stdout.readline()).group(1))
        created(post_file(httpx.Client(base_url=f"http://127.0.0.1:{port}/v1",
                                       headers={"Authorization": "Bearer k"}), "a.txt", b"x"))
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    finally:
        proc.kill()
    data = tmp_path / "xdg" / "openai-fs" / "emulator"
    assert (data / "emulator.sqlite3").exists() and len(list((data / "files").iterdir())) == 1


def test_busy_port_fails_with_a_message(emulator, tmp_path):
    result = subprocess.run([sys.executable, "-m", "openai_fs", "serve", "--port", str(emulator.port),
                             "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "cannot listen" in result.stderr and result.stdout == ""


def test_seed_demo(tmp_path, spec_checker):
    with EmulatorProcess(tmp_path / "data", extra_args=["--seed-demo"]) as emu, \
            httpx.Client(base_url=emu.base_url, headers={"Authorization": "Bearer k"},
                         event_hooks={"response": [spec_checker.sync_hook]}) as client:
        files = client.get("/files").json()["data"]
        assert {f["purpose"] for f in files} == set(purposes.KNOWN_PURPOSES)
        by_purpose: dict[str, list[str]] = {}
        for f in files:
            by_purpose.setdefault(f["purpose"], []).append(f["filename"])
        assert any(len(names) != len(set(names)) for names in by_purpose.values()), "no duplicate filename"
        assert any("/" in f["filename"] for f in files)
        for purpose in purposes.JSONL_PURPOSES | {"batch_output"}:
            assert all(n.endswith(".jsonl") for n in by_purpose[purpose])
        assert all(n.endswith(".csv") for n in by_purpose["fine-tune-results"])
        [png] = [f for f in files if f["purpose"] == "vision"]
        content = client.get(f"/files/{png['id']}/content").content
        assert content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) == png["bytes"]
        # like the real service: content of some purposes is refused
        for f in files:
            r = client.get(f"/files/{f['id']}/content")
            if f["purpose"] in REAL_DOWNLOADABLE:
                assert r.status_code == 200 and len(r.content) == f["bytes"], f
            else:
                assert_error(r, 400, contains=f"Not allowed to download files of purpose: {f['purpose']}")
        # a restart does not seed twice
        emu.restart()
        assert len(client.get("/files", headers={"Connection": "close"}).json()["data"]) == len(files)


def test_state_seed_and_reset(api, ctl, emulator):
    out = ctl.seed_file("result.jsonl", "batch_output", b'{"ok": true}\n', created_at=1_700_000_000)
    assert out["purpose"] == "batch_output" and out["created_at"] == 1_700_000_000 and out["bytes"] == 13
    assert api.get(f"/files/{out['id']}/content").content == b'{"ok": true}\n'
    many = ctl.seed_files([{"filename": f"{i}.txt", "purpose": "mystery", "content": b"m" * i} for i in range(3)])
    assert [f["bytes"] for f in many] == [0, 1, 2]
    deleted = created(post_file(api, "d.txt", b"x"))
    api.delete(f"/files/{deleted['id']}")
    up = api.post("/uploads", json={"filename": "u", "purpose": "vision", "bytes": 1, "mime_type": "image/png"}).json()
    api.post(f"/uploads/{up['id']}/parts", files={"data": ("upload", b"x")})
    state = ctl.state()
    assert [f["deleted"] for f in state["files"]] == [False, False, False, False, True]
    assert [(u["id"], u["status"], u["parts"], u["part_bytes"]) for u in state["uploads"]] == [(up["id"], "pending", 1, 1)]
    ctl.reset()
    assert ctl.state()["files"] == [] and ctl.state()["uploads"] == [] and ctl.requests() == []
    assert [p for d in ("files", "parts", "tmp") for p in (emulator.data_dir / d).iterdir()] == []


def test_seed_errors(ctl, emulator):
    root = emulator.base_url.replace("/v1", "/_emulator")
    for body in ({"filename": "a", "purpose": "x", "content_b64": "***"}, {"filename": "a"},
                 {"filename": "a", "purpose": "x", "colour": 1}, {"filename": "a", "purpose": "x", "created_at": "now"}):
        assert httpx.post(root + "/seed", json=body).status_code == 400
    assert ctl.state()["files"] == []


def test_request_log(api, ctl):
    f = created(post_file(api, "a.txt", b"hello"))
    api.get("/files", params={"purpose": "user_data", "limit": "5"})
    api.get(f"/files/{f['id']}/content", headers={"Range": "bytes=1-2"})
    log = ctl.requests()
    assert [e["seq"] for e in log] == sorted(e["seq"] for e in log)
    post, listing, content = log
    assert (post["method"], post["path"], post["status"], post["fault"]) == ("POST", "/v1/files", 200, None)
    assert post["request_bytes"] > 5 and post["response_bytes"] > 0 and post["range"] is None
    assert listing["query"] == {"purpose": "user_data", "limit": "5"}
    assert content["range"] == "bytes=1-2" and content["status"] == 206 and content["response_bytes"] == 2
    assert all(e["duration"] >= 0 and e["started"] > 0 for e in log)
    assert ctl.count("GET") == 2 and ctl.count(path=r"/content$") == 1 and ctl.count("POST", "^/v1/files$") == 1
    assert [e["seq"] for e in ctl.requests(since=post["seq"])] == [listing["seq"], content["seq"]]
    ctl.clear_requests()
    assert ctl.requests() == []


def test_config_validation(ctl):
    for change in ({"page_cap": 0}, {"page_cap": "3"}, {"latency": -1}, {"honour_range": "yes"},
                   {"ignore_range": "yes"}, {"colour": 1},
                   {"downloadable": "batch"}, {"downloadable": ["batch", ""]}, {"downloadable": [1]},
                   {"downloadable": None}):
        with pytest.raises(EmulatorControlError):
            ctl.set_config(**change)
    assert ctl.config() == {"honour_range": True, "downloadable": "all", "page_cap": None, "latency": 0.0,
                            "bandwidth": None}


def test_clock(ctl, emulator):
    before = httpx.get(emulator.base_url.replace("/v1", "/_emulator/clock")).json()
    ctl.advance_clock(86400)
    after = httpx.get(emulator.base_url.replace("/v1", "/_emulator/clock")).json()
    assert after["offset"] == before["offset"] + 86400 and after["now"] > before["now"] + 86000
    with pytest.raises(EmulatorControlError):
        ctl._call("POST", "/clock", json={"advance": "later"})


def test_process_output_and_errors(tmp_path):
    emu = EmulatorProcess(tmp_path / "data", extra_args=["--page-cap", "0"])
    with pytest.raises(RuntimeError, match="page-cap"):
        emu.start()
    assert "must be at least 1" in emu.output()


def test_seeded_binary_content(ctl, api):
    data = bytes(range(256)) * 3
    f = ctl.seed_file("bin", "user_data", data)
    assert api.get(f"/files/{f['id']}/content").content == data


def test_every_fault_kind_is_documented():
    from pathlib import Path

    from openai_fs.emulator import faults, server

    man = (Path(__file__).resolve().parents[2] / "man" / "openai-fs.1").read_text().replace("\\-", "-")
    for kind in faults.KINDS:
        assert f"\n  {kind} " in server.DESCRIPTION, kind
        assert f"``{kind}``" in faults.__doc__, kind
        assert f"\\fI{kind}\\fR" in man, kind
