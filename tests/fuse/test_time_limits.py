"""Time limits through a real mount (docs/SEMANTICS.md, "Retries and time limits"): a server
that dies or goes silent mid-transfer is an error within --timeout however the retries nest;
a live server is not cut off (bytes still arriving, a Retry-After, the work after an upload's
body). The defaults are measured by bench/dead_server.py; these tests use a short --timeout."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import time

import pytest

from checktools import live_files
from fusetools import upload_on_server

MiB = 1024 * 1024
TIMEOUT = 4.0
#: what the error may take beyond the budget: the last attempt's connect, a backoff's jitter,
#: the time a command needs to start and the kernel to pass the answer on
SLACK = 4.0


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def timed(*command: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    return time.monotonic() - started, result


@pytest.fixture
def revive(emulator):
    """Start the session emulator again after a test killed it (same port, same data)."""
    yield
    if not emulator.running():
        emulator.start()


def test_a_server_killed_mid_download_is_eio_within_the_timeout(mount, emulator, revive):
    made = upload_on_server(emulator, "big.bin", "vision", payload(8 * MiB, 1))
    mounted = mount("--timeout", str(TIMEOUT))
    mounted.expect_log(rf"read: GET /files/{made['id']}/content")
    assert os.listdir(mounted / "vision") == ["big.bin"]
    emulator.control.add_fault("die", path="/content$", after_bytes=MiB)
    elapsed, result = timed("cat", str(mounted / "vision" / "big.bin"))
    assert result.returncode != 0 and "Input/output error" in result.stderr
    # the budget is spent (connections refused are retried), and not multiplied by the
    # resumption loop around the request's own retries
    assert TIMEOUT - 1 <= elapsed <= TIMEOUT + SLACK, elapsed
    assert mounted.process.poll() is None


def test_a_server_killed_mid_upload_fails_close_within_the_timeout(mount, emulator, revive,
                                                                  tmp_path):
    source = tmp_path / "new.bin"
    source.write_bytes(payload(4 * MiB, 2))
    mounted = mount("--timeout", str(TIMEOUT))
    mounted.expect_log(r"upload of vision/new.bin failed")
    emulator.control.add_fault("die", method="POST", path="^/v1/files$", after_bytes=MiB)
    elapsed, result = timed("cp", str(source), str(mounted / "vision" / "new.bin"))
    assert result.returncode != 0 and "Input/output error" in result.stderr
    # the search for a file the dropped attempt may have made spends the same budget
    assert elapsed <= TIMEOUT + SLACK, elapsed
    [kept] = (mounted.cache_dir / "unsent").iterdir()
    assert kept.read_bytes() == source.read_bytes()


def test_a_server_killed_during_the_parts_of_an_upload_fails_close_within_the_timeout(
        mount, emulator, revive, tmp_path):
    source = tmp_path / "parts.bin"
    source.write_bytes(payload(6 * MiB, 3))
    mounted = mount("--timeout", str(TIMEOUT), "--multipart-threshold", "2M", "--part-size",
                    "1M", "--upload-concurrency", "2")
    mounted.expect_log(r"upload of vision/parts.bin failed")
    mounted.expect_log(r"could not cancel Upload .*; it expires on its own within an hour")
    emulator.control.add_fault("die", method="POST", path="/parts$", skip=2, after_bytes=1000)
    elapsed, result = timed("cp", str(source), str(mounted / "vision" / "parts.bin"))
    assert result.returncode != 0 and "Input/output error" in result.stderr
    assert elapsed <= TIMEOUT + SLACK, elapsed


def test_a_server_that_goes_silent_is_eio_within_the_timeout(mount, emulator):
    made = upload_on_server(emulator, "slow.bin", "vision", payload(4 * MiB, 4))
    mounted = mount("--timeout", str(TIMEOUT))
    mounted.expect_log(rf"read: GET /files/{made['id']}/content")
    os.listdir(mounted / "vision")
    # 1 MiB, then silence on that connection, and no answer at all to any other
    emulator.control.add_fault("stall", path="/content$", after_bytes=MiB, count=1)
    emulator.control.add_fault("stall", path="/content$")
    elapsed, result = timed("cat", str(mounted / "vision" / "slow.bin"))
    assert result.returncode != 0 and "Input/output error" in result.stderr
    assert TIMEOUT - 1 <= elapsed <= TIMEOUT + SLACK, elapsed


def test_a_live_server_is_not_cut_off(mount, emulator, tmp_path):
    control = emulator.control
    data = payload(6 * MiB, 5)
    upload_on_server(emulator, "steady.bin", "vision", data)
    mounted = mount("--timeout", "2", "--processing-timeout", "30")
    # a download that takes three times --timeout, its bytes arriving all along
    control.set_config(bandwidth=1_000_000)
    started = time.monotonic()
    assert (mounted / "vision" / "steady.bin").read_bytes() == data
    assert time.monotonic() - started > 4
    control.set_config(bandwidth=None)
    # a 429 asking for longer than --timeout is waited for
    control.add_fault("status", status=429, retry_after=3, count=1, path="^/v1/files$",
                      method="GET")
    started = time.monotonic()
    assert sorted(os.listdir(mounted / "batch")) == []
    assert time.monotonic() - started >= 3
    # the server's work after an upload's body may take longer than --timeout
    control.add_fault("latency", method="POST", path="^/v1/files$", seconds=5, count=1)
    source = tmp_path / "done.jsonl"
    source.write_bytes(b'{"a": 1}\n')
    started = time.monotonic()
    subprocess.run(["cp", str(source), str(mounted / "batch" / "done.jsonl")], check=True,
                   timeout=60)
    assert time.monotonic() - started >= 5
    assert [f["filename"] for f in live_files(emulator, "batch")] == ["done.jsonl"]
    # while an answer that does not come at all, to a request without a body, is death
    silent = upload_on_server(emulator, "silent.bin", "vision", b"s" * 1000)
    control.add_fault("latency", path=f"/files/{silent['id']}/content", seconds=30)
    mounted.expect_log(rf"read: GET /files/{silent['id']}/content: timed out")
    started = time.monotonic()
    with pytest.raises(OSError) as caught:
        (mounted / ".by-id" / silent["id"]).read_bytes()
    assert caught.value.errno == errno.EIO
    assert time.monotonic() - started <= 2 + SLACK
