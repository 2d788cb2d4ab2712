"""Fault injection: every kind, the matching options, the command line, and quiet logs."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import socket

import httpx
import pytest

from openai_fs.emulator.control import EmulatorControlError, EmulatorProcess
from openai_fs.emulator.faults import DIE_EXIT_STATUS

from .helpers import MiB, assert_error, chunks, created, multipart_stream, post_file, wait_for

pytestmark = pytest.mark.timeout(60)


def statuses(api, n, path="/files"):
    return [api.get(path).status_code for _ in range(n)]


def test_status_500(api, ctl):
    rule = ctl.add_fault("status", status=500, count=1)
    assert rule["id"] and rule["kind"] == "status" and rule["remaining"] == 1
    r = api.get("/files")
    assert_error(r, 500, type="server_error", code=None)
    assert r.headers["x-emulator-fault"] == "status"
    assert api.get("/files").status_code == 200
    [rule] = ctl.faults()
    assert rule["remaining"] == 0 and rule["applied"] == 1 and rule["matched"] == 1
    assert [e["fault"] for e in ctl.requests()] == ["status", None]


def test_rate_limit_429(api, ctl):
    ctl.add_fault("status", status=429, retry_after=2, retry_after_ms=1500, message="Slow down.")
    r = api.get("/files")
    assert_error(r, 429, type="requests", code="rate_limit_exceeded", contains="Slow down.")
    assert r.headers["retry-after"] == "2" and r.headers["retry-after-ms"] == "1500"
    ctl.clear_faults()
    ctl.add_fault("status", status=429)
    r = api.get("/files")
    assert_error(r, 429, code="rate_limit_exceeded")
    assert "retry-after" not in r.headers and "retry-after-ms" not in r.headers


def test_status_with_type_and_code(api, ctl):
    ctl.add_fault("status", status=403, type="permission_error", code="unsupported_country_region_territory",
                  message="Country, region, or territory not supported", count=1)
    r = api.get("/files")
    assert r.json() == {"error": {"message": "Country, region, or territory not supported",
                                  "type": "permission_error", "param": None,
                                  "code": "unsupported_country_region_territory"}}
    ctl.add_fault("status", status=429, code="tokens", count=1)
    assert_error(api.get("/files"), 429, type="requests", code="tokens")


QUOTA_BODY = {"error": {
    "message": "You exceeded your current quota, please check your plan and billing details. For more "
               "information on this error, read the docs: "
               "https://platform.openai.com/docs/guides/error-codes/api-errors.",
    "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}


def test_insufficient_quota(api, ctl):
    rule = ctl.add_fault("insufficient_quota", path=r"^/v1/files$", method="POST", count=2)
    assert rule["kind"] == "insufficient_quota"
    for _ in range(2):
        r = post_file(api, "a.txt", b"x")
        assert r.status_code == 429 and r.json() == QUOTA_BODY
        assert r.headers["x-emulator-fault"] == "insufficient_quota"
        assert "retry-after" not in r.headers and "retry-after-ms" not in r.headers
    assert ctl.state()["files"] == []
    assert created(post_file(api, "a.txt", b"x"))
    assert api.get("/files").status_code == 200
    for params in ({"status": 500}, {"message": "m"}, {"retry_after": 1}, {"after_bytes": 3}):
        with pytest.raises(EmulatorControlError):
            ctl.add_fault("insufficient_quota", **params)


def test_stuck_cursor_repeats_the_first_page(api, ctl):
    seeded = ctl.seed_files([{"filename": f"{i}.txt", "purpose": "user_data", "content": b"x",
                              "created_at": 1_700_000_000 + i} for i in range(5)])
    newest_first = [f["id"] for f in reversed(seeded)]
    rule = ctl.add_fault("stuck_cursor")
    first = api.get("/files", params={"limit": 2}).json()
    assert [f["id"] for f in first["data"]] == newest_first[:2] and first["has_more"] is True
    again = api.get("/files", params={"limit": 2, "after": first["last_id"]})
    assert again.headers["x-emulator-fault"] == "stuck_cursor"
    assert again.json() == first
    # a page that holds everything still claims that more follow
    whole = api.get("/files", params={"purpose": "user_data"}).json()
    assert [f["id"] for f in whole["data"]] == newest_first and whole["has_more"] is True
    assert api.get("/files", params={"after": whole["last_id"]}).json() == whole
    # no other request matches, nor counts
    assert api.get(f"/files/{seeded[0]['id']}").status_code == 200
    assert created(post_file(api, "new.txt", b"y"))
    assert_error(api.get("/files", params={"limit": 0}), 400, param="limit")
    assert [f for f in ctl.faults() if f["id"] == rule["id"]][0]["matched"] == 5
    ctl.clear_faults()
    assert api.get("/files", params={"limit": 2, "after": first["last_id"]}).json()["data"] != first["data"]


def test_stuck_cursor_makes_the_sdk_walk_the_same_page_again(sdk, ctl):
    seeded = ctl.seed_files([{"filename": f"{i}.txt", "purpose": "vision", "content": b"x",
                              "created_at": 1_700_000_000 + i} for i in range(3)])
    ctl.add_fault("stuck_cursor", count=4)
    walked = [f.id for f in itertools.islice(sdk.files.list(limit=2), 9)]
    top2 = [seeded[2]["id"], seeded[1]["id"]]
    # four stuck pages, then the real next page (after the stuck page's last id), and the end
    assert walked == top2 * 4 + [seeded[0]["id"]]


def test_latency_rule_and_global_latency(api, ctl):
    ctl.add_fault("latency", seconds=0.2, count=1)
    assert api.get("/files").status_code == 200
    entry = ctl.requests()[-1]
    assert entry["fault"] == "latency" and entry["duration"] >= 0.19
    ctl.clear_faults()
    ctl.set_config(latency=0.15)
    assert api.get("/files").status_code == 200
    entry = ctl.requests()[-1]
    assert entry["fault"] is None and entry["duration"] >= 0.14


def test_latency_adds_to_the_deciding_fault(api, ctl):
    ctl.add_fault("latency", seconds=0.1)
    ctl.add_fault("status", status=503)
    assert_error(api.get("/files"), 503, type="server_error")
    entry = ctl.requests()[-1]
    assert entry["fault"] == "status" and entry["duration"] >= 0.09


def test_drop_closes_without_a_response(api, ctl, emulator):
    ctl.add_fault("drop", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("/files")
    assert api.get("/files").status_code == 200
    assert [(e["fault"], e["status"]) for e in ctl.requests()] == [("drop", None), (None, 200)]


def test_drop_before_processing_a_post(api, ctl):
    ctl.add_fault("drop", method="POST")
    with pytest.raises(httpx.TransportError):
        post_file(api, "a.txt", b"x" * 100_000)
    assert ctl.state()["files"] == []


def test_drop_after_commit_creates_the_file(api, ctl):
    ctl.add_fault("drop_after_commit", method="POST", path=r"^/v1/files$")
    with pytest.raises(httpx.TransportError):
        post_file(api, "a.txt", b"committed")
    [f] = ctl.state()["files"]
    assert f["filename"] == "a.txt" and not f["deleted"]
    entry = ctl.requests()[-1]
    assert entry["fault"] == "drop_after_commit" and entry["status"] is None and entry["request_bytes"] > 0


def test_status_after_commit_deletes_anyway(api, ctl):
    f = created(post_file(api, "a.txt", b"x"))
    ctl.add_fault("status_after_commit", status=502, method="DELETE")
    assert_error(api.delete(f"/files/{f['id']}"), 502, type="server_error")
    assert_error(api.get(f"/files/{f['id']}"), 404)


def test_truncate_json(api, ctl):
    created(post_file(api, "a.txt", b"x"))
    ctl.add_fault("truncate", after_bytes=20, path=r"^/v1/files$", method="GET")
    with api.stream("GET", "/files") as r:
        assert r.status_code == 200 and r.headers["x-emulator-fault"] == "truncate"
        assert int(r.headers["content-length"]) > 20
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in r.iter_raw():
                received += piece
    assert len(received) == 20
    entry = ctl.requests()[-1]
    assert entry["fault"] == "truncate" and entry["status"] == 200 and entry["response_bytes"] == 20


def test_truncate_content(api, ctl):
    content = bytes(range(256)) * 8192  # 2 MiB
    f = created(post_file(api, "big.bin", content))
    ctl.add_fault("truncate", after_bytes=MiB + 5, path=r"/content$")
    received = bytearray()
    with api.stream("GET", f"/files/{f['id']}/content") as r:
        assert r.headers["content-length"] == str(len(content))
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in r.iter_raw():
                received += piece
    assert bytes(received) == content[:MiB + 5]
    # with after_bytes=0 only the headers arrive
    ctl.clear_faults()
    ctl.add_fault("truncate", path=r"/content$")
    with api.stream("GET", f"/files/{f['id']}/content") as r:
        with pytest.raises(httpx.RemoteProtocolError):
            r.read()


@pytest.fixture
def own(tmp_path):
    """An emulator of this test's own (permissive, like the session one), that it may kill."""
    emu = EmulatorProcess(tmp_path / "own", permissive=True)
    emu.start()
    client = httpx.Client(base_url=emu.base_url, headers={"Authorization": "Bearer k"}, timeout=30)
    yield emu, client
    client.close()
    emu.stop()


def assert_died(emu: EmulatorProcess) -> None:
    wait_for(lambda: not emu.running(), what="the emulator to exit")
    assert emu.returncode == DIE_EXIT_STATUS
    # (the output is read by a thread of its own, which may not have seen the last line yet)
    wait_for(lambda: "fault die: the emulator exits now" in emu.output(), what="the emulator's last words")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{emu.base_url}/files", headers={"Authorization": "Bearer k"})


def test_die_mid_download(own):
    emu, client = own
    content = bytes(range(256)) * 8192  # 2 MiB
    f = emu.control.seed_file("big.bin", "vision", content)
    emu.control.add_fault("die", after_bytes=MiB + 7, path=r"/content$")
    received = bytearray()
    with pytest.raises(httpx.TransportError):
        with client.stream("GET", f"/files/{f['id']}/content") as r:
            assert r.status_code == 200 and r.headers["x-emulator-fault"] == "die"
            for piece in r.iter_raw():
                received += piece
    assert bytes(received) == content[:MiB + 7]
    assert_died(emu)
    # started again, it has lost nothing and forgotten the fault
    emu.restart()
    client.headers["Connection"] = "close"
    assert client.get(f"/files/{f['id']}/content").content == content
    assert emu.control.faults() == []


def test_die_mid_upload_leaves_no_file(own):
    emu, client = own
    emu.control.add_fault("die", after_bytes=MiB, method="POST", path=r"^/v1/files$")
    size = 16 * MiB
    headers, body = multipart_stream([("purpose", "user_data")], "file", "big.bin", size, chunks(size, 9))
    with pytest.raises(httpx.TransportError):
        client.post("/files", content=body, headers=headers)
    assert_died(emu)
    emu.restart()
    client.headers["Connection"] = "close"
    assert client.get("/files").json()["data"] == []
    assert list((emu.data_dir / "tmp").iterdir()) == []


def test_die_before_answering(own):
    emu, client = own
    emu.control.add_fault("die", method="GET", path=r"^/v1/files$")
    with pytest.raises(httpx.TransportError):
        client.get("/files")
    assert_died(emu)


def test_die_on_a_small_post_never_answers(own):
    emu, client = own
    emu.control.add_fault("die", after_bytes=10**9, method="POST")
    with pytest.raises(httpx.TransportError):
        post_file(client, "a.txt", b"small")
    assert_died(emu)
    emu.restart()
    assert httpx.get(f"{emu.base_url}/files", headers={"Authorization": "Bearer k"}).json()["data"] == []


def impatient(api: httpx.Client) -> httpx.Client:
    """A client of the same server that waits at most half a second for the next bytes."""
    return httpx.Client(base_url=api.base_url, headers=api.headers, timeout=httpx.Timeout(30, read=0.5))


def test_stall_without_answering(api, ctl, emulator):
    start = len(emulator.output())
    ctl.add_fault("stall", path=r"^/v1/files$", count=1)
    with impatient(api) as client, pytest.raises(httpx.ReadTimeout):
        client.get("/files")
    wait_for(lambda: ctl.requests()[0]["duration"] is not None, what="the stalled request to end")
    [entry] = ctl.requests()
    assert entry["fault"] == "stall" and entry["status"] is None and entry["response_bytes"] == 0
    assert api.get("/files").status_code == 200
    new = emulator.output()[start:]
    assert "Traceback" not in new and "ERROR" not in new, new


def test_stall_mid_download(api, ctl):
    content = bytes(range(256)) * 8192  # 2 MiB
    f = created(post_file(api, "big.bin", content))
    ctl.add_fault("stall", after_bytes=MiB + 3, path=r"/content$", count=1)
    ctl.clear_requests()
    received = bytearray()
    with impatient(api) as client:
        with client.stream("GET", f"/files/{f['id']}/content") as r:
            assert r.status_code == 200 and r.headers["x-emulator-fault"] == "stall"
            with pytest.raises(httpx.ReadTimeout):
                for piece in r.iter_raw():
                    received += piece
    assert bytes(received) == content[:MiB + 3]
    wait_for(lambda: ctl.requests()[0]["duration"] is not None, what="the stalled request to end")
    assert ctl.requests()[0]["response_bytes"] == MiB + 3


def test_a_stalled_connection_stays_open_until_the_client_leaves(api, ctl, emulator):
    f = created(post_file(api, "a.bin", b"0123456789" * 1000))
    ctl.add_fault("stall", after_bytes=5, path=r"/content$", count=1)
    ctl.clear_requests()
    host, port = emulator.base_url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET /v1/files/{f['id']}/content HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: Bearer k\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        head, _, body = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"x-emulator-fault: stall" in head
        while b"01234" not in body:
            body += sock.recv(65536)
        # nothing more comes, and the connection is not closed (recv would return b"")
        sock.settimeout(1.0)
        with pytest.raises(socket.timeout):
            sock.recv(65536)
        # meanwhile the server answers others
        assert api.get(f"/files/{f['id']}").status_code == 200
        assert ctl.requests()[0]["duration"] is None
    wait_for(lambda: ctl.requests()[0]["duration"] is not None, what="the stalled request to end")


def test_stall_on_an_upload_commits_nothing(api, ctl):
    ctl.add_fault("stall", method="POST")
    with impatient(api) as client, pytest.raises(httpx.ReadTimeout):
        post_file(client, "a.txt", b"x" * 100_000)
    wait_for(lambda: ctl.requests()[0]["duration"] is not None, what="the stalled request to end")
    assert ctl.state()["files"] == [] and ctl.requests()[0]["request_bytes"] > 100_000


def test_malformed(api, ctl):
    f = created(post_file(api, "a.txt", b"x"))
    ctl.add_fault("malformed", count=1)
    r = api.get(f"/files/{f['id']}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        r.json()
    assert api.get(f"/files/{f['id']}").json() == f


def test_method_and_path_matching(api, ctl):
    ctl.add_fault("status", status=500, method="post", path=r"^/v1/uploads")
    assert api.get("/files").status_code == 200
    assert created(post_file(api, "a.txt", b"x"))
    assert_error(api.post("/uploads", json={}), 500)
    assert_error(api.post("/uploads/upload_x/cancel"), 500)
    assert api.get("/uploads").status_code == 405


def test_count(api, ctl):
    ctl.add_fault("status", status=503, count=2)
    assert statuses(api, 4) == [503, 503, 200, 200]


def test_every(api, ctl):
    ctl.add_fault("status", status=500, every=3)
    assert statuses(api, 9) == [200, 200, 500] * 3


def test_every_with_count(api, ctl):
    ctl.add_fault("status", status=500, every=2, count=2)
    assert statuses(api, 8) == [200, 500, 200, 500, 200, 200, 200, 200]


def test_skip(api, ctl):
    ctl.add_fault("status", status=500, skip=2, count=1)
    assert statuses(api, 5) == [200, 200, 500, 200, 200]


def test_rate_is_seeded_and_repeatable(api, ctl):
    rng = random.Random(7)
    expected = [500 if rng.random() < 0.4 else 200 for _ in range(30)]
    assert 0 < expected.count(500) < 30
    ctl.add_fault("status", status=500, rate=0.4, seed=7)
    assert statuses(api, 30) == expected
    ctl.clear_faults()
    ctl.add_fault("status", status=500, rate=0.4, seed=7)
    assert statuses(api, 30) == expected


def test_first_firing_rule_decides(api, ctl):
    ctl.add_fault("status", status=500, count=1)
    ctl.add_fault("status", status=503, count=1)
    assert statuses(api, 3) == [500, 503, 200]


def test_fault_management(ctl):
    a = ctl.add_fault("status", status=500)
    b = ctl.add_fault("latency", seconds=0.5, path="/content$")
    assert [f["id"] for f in ctl.faults()] == [a["id"], b["id"]]
    assert b["path"] == "/content$" and b["seconds"] == 0.5 and b["remaining"] is None
    ctl.remove_fault(a["id"])
    assert [f["id"] for f in ctl.faults()] == [b["id"]]
    ctl.clear_faults()
    assert ctl.faults() == []
    for kind, params in [("nope", {}), ("status", {"status": 99}), ("status", {"seconds": 1}),
                         ("latency", {}), ("drop", {"count": 0}), ("drop", {"rate": 2}),
                         ("drop", {"path": "("}), ("truncate", {"after_bytes": -1})]:
        with pytest.raises(EmulatorControlError):
            ctl.add_fault(kind, **params)
    assert ctl.faults() == []


def test_reset_clears_faults_and_config(api, ctl):
    ctl.add_fault("status", status=500)
    ctl.set_config(page_cap=3, latency=0.01, honour_range=True, downloadable=["batch"])
    ctl.reset()
    assert ctl.faults() == [] and ctl.requests() == []
    # the session emulator's start configuration: the real service's behaviour
    assert ctl.config() == {"honour_range": False, "page_cap": None, "latency": 0.0, "bandwidth": None,
                            "downloadable": ["assistants_output", "batch", "batch_output", "fine-tune-results",
                                             "vision"]}
    assert api.get("/files").status_code == 200


def test_injected_faults_log_one_quiet_line(api, ctl, emulator):
    f = created(post_file(api, "a.txt", b"x" * 5000))
    start = len(emulator.output())
    for kind, params in [("drop", {}), ("truncate", {"after_bytes": 10}), ("drop_after_commit", {}),
                         ("status", {"status": 500})]:
        ctl.add_fault(kind, count=1, **params)
        with pytest.raises(httpx.TransportError) if kind != "status" else contextlib.nullcontext():
            with api.stream("GET", f"/files/{f['id']}/content") as r:
                r.read()
    kinds = ["drop", "truncate", "drop_after_commit", "status"]

    def logged() -> list[str]:
        return re.findall(r"INFO openai_fs\.emulator: injecting fault (\w+)", emulator.output()[start:])

    wait_for(lambda: logged()[-4:] == kinds, what="one log line per injected fault")
    new = emulator.output()[start:]
    assert "Traceback" not in new and "ERROR" not in new and "WARNING" not in new, new


def test_faults_from_the_command_line(tmp_path):
    faults = ["status:status=503,count=1,method=GET", '{"kind": "status", "status": 429, "path": "^/v1/uploads", "count": 1}',
              "insufficient_quota:method=DELETE,count=1"]
    args = [a for spec in faults for a in ("--fault", spec)]
    with EmulatorProcess(tmp_path / "data", extra_args=args) as emu, \
            httpx.Client(base_url=emu.base_url, headers={"Authorization": "Bearer k"}) as client:
        assert [f["kind"] for f in emu.control.faults()] == ["status", "status", "insufficient_quota"]
        assert client.get("/files").status_code == 503
        assert client.get("/files").status_code == 200
        assert client.post("/uploads", json={}).status_code == 429
        assert client.post("/uploads", json={}).status_code == 400
        assert client.delete("/files/file-x").json() == QUOTA_BODY
        assert client.delete("/files/file-x").status_code == 404


def test_bad_fault_on_the_command_line_fails_at_startup(tmp_path):
    with pytest.raises(RuntimeError, match="unknown fault kind"):
        EmulatorProcess(tmp_path / "data", extra_args=["--fault", "explode:count=1"]).start()


def test_the_spec_checker_leaves_a_stalled_body_to_the_client(api, ctl):
    """The ``api`` client validates responses in a hook; a body broken on purpose is not read
    there, so the client itself meets the failure where it reads."""
    f = created(post_file(api, "a.txt", b"x" * 5000))
    ctl.add_fault("stall", after_bytes=10, path=r"^/v1/files/[^/]+$", count=1)
    with impatient(api) as client:
        client.event_hooks = api.event_hooks
        with client.stream("GET", f"/files/{f['id']}") as r:
            assert r.status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                r.read()
