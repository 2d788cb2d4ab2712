"""The mount process killed (SIGKILL) while files are written or uploaded: nothing
half-uploaded appears on the server, and the next mount recovers what the dead one left."""

from __future__ import annotations

import errno
import os
import random
import subprocess

import pytest

from fusetools import kill, wait_for

MiB = 1024 * 1024


def live_files(control) -> list[dict]:
    return [f for f in control.state()["files"] if not f.get("deleted")]


def test_killed_while_a_file_is_being_written(mount, emulator, tmp_path):
    cache = tmp_path / "shared-cache"
    first = mount(cache_dir=cache)
    fd = os.open(first / "assistants" / "draft.txt", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"half of a document that was never closed")
    kill(first)
    with pytest.raises(OSError) as caught:
        os.write(fd, b" more")
    assert caught.value.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO)
    try:
        os.close(fd)
    except OSError:
        pass
    assert live_files(emulator.control) == []           # nothing half-made on the server

    second = mount(cache_dir=cache)
    second.expect_log(r"WARNING .*a previous mount stopped while 1 file\(s\) were being written")
    assert "draft.txt" not in os.listdir(second / "assistants")
    kept = list((cache / "unsent").iterdir())
    assert [p.name for p in kept] == ["recovered-assistants-draft.txt"]
    assert kept[0].read_bytes() == b"half of a document that was never closed"
    assert "recovered-assistants-draft.txt" in second.log()
    assert live_files(emulator.control) == []           # recovered, not uploaded on its own


def test_killed_during_a_multipart_upload(mount, emulator, tmp_path):
    control = emulator.control
    cache = tmp_path / "shared-cache"
    data = random.Random(5).randbytes(4 * MiB)
    (tmp_path / "big.bin").write_bytes(data)
    control.add_fault("latency", method="POST", path="/parts$", seconds=30)
    first = mount("--multipart-threshold", "1M", "--part-size", "1M", cache_dir=cache)
    writer = subprocess.Popen(["cp", str(tmp_path / "big.bin"), str(first / "vision")],
                              stderr=subprocess.PIPE)
    # the mount notes the Upload's id before it sends any part: once a part is on its way,
    # the dead mount's spool says which Upload it left open
    wait_for(lambda: any(r["path"].endswith("/parts") for r in control.requests()),
             message="the first part to be sent")
    kill(first)
    assert writer.wait(timeout=30) != 0                 # cp was never told it was written
    control.clear_faults()
    assert live_files(control) == []                    # no file, not even a partial one
    assert [u["status"] for u in control.state()["uploads"]] == ["pending"]

    second = mount(cache_dir=cache)
    second.expect_log(r"WARNING .*a previous mount stopped while 1 file\(s\) were being written")
    # the next mount cancels the Upload the dead one left open
    wait_for(lambda: [u["status"] for u in control.state()["uploads"]] == ["cancelled"],
             timeout=20, message="the abandoned Upload to be cancelled")
    kept = list((cache / "unsent").iterdir())
    assert len(kept) == 1 and kept[0].read_bytes() == data
    assert live_files(control) == []


def test_killed_while_reading_leaves_no_partial_download_behind(mount, emulator, seed,
                                                                tmp_path):
    control = emulator.control
    cache = tmp_path / "shared-cache"
    made = seed("slow.bin", "vision", random.Random(6).randbytes(6 * MiB))
    control.add_fault("truncate", path="/content$", after_bytes=2 * MiB, count=1)
    control.add_fault("latency", path="/content$", seconds=30)
    first = mount(cache_dir=cache)
    reader = subprocess.Popen(["cat", str(first / "vision" / "slow.bin")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: list((cache / "content").glob("*/*.partial-*")),
             message="a partial download")
    kill(first)
    reader.wait(timeout=30)
    control.clear_faults()
    second = mount(cache_dir=cache)
    assert (second / "vision" / "slow.bin").read_bytes()[:10]
    assert not list((cache / "content").glob("*/*.partial-*"))
    assert not (cache / "unsent").exists()              # reading leaves nothing to recover
    assert made["id"]
