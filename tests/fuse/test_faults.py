"""A real mount while the server misbehaves: injected 429s and 500s, dropped connections,
a stopped server, latency. The mount must keep working, lose nothing and duplicate nothing."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
import sys
import threading

import pytest

from fusetools import KEY, run, wait_for

from openai_fs.emulator.control import EmulatorProcess

MiB = 1024 * 1024


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def live_files(control) -> list[dict]:
    return [f for f in control.state()["files"] if not f.get("deleted")]


def faults_survived(control) -> int:
    return sum(1 for r in control.requests() if r["fault"] and r["fault"] != "latency")


def test_everyday_operations_succeed_with_429_and_500_on_a_share_of_requests(
        mount, emulator, seed, tmp_path):
    small = {f"doc{n}.jsonl": f"document {n}\n".encode() * (n + 1) for n in range(6)}
    seeded = {name: seed(name, "batch", data) for name, data in small.items()}
    big = payload(3 * MiB, seed=1)
    (tmp_path / "big.bin").write_bytes(big)
    (tmp_path / "new.jsonl").write_bytes(b"a new file\n")
    control = emulator.control
    # every 3rd request is rate limited (asking for a short wait), every 4th fails with 500
    control.add_fault("status", status=429, retry_after_ms=20, every=3)
    control.add_fault("status", status=500, every=4)
    mounted = mount("--multipart-threshold", "1M", "--part-size", "1M")
    purpose = mounted / "batch"

    assert sorted(os.listdir(purpose)) == sorted(small)
    for name, data in small.items():
        assert (purpose / name).read_bytes() == data
    run("cp", str(tmp_path / "new.jsonl"), str(purpose / "new.jsonl"))
    run("cp", str(tmp_path / "big.bin"), str(mounted / "vision" / "big.bin"))
    run("rm", str(purpose / "doc0.jsonl"))
    run("mv", str(purpose / "doc1.jsonl"), str(mounted / "user_data" / "moved.txt"))

    survived = faults_survived(control)
    control.clear_faults()
    files = {(f["purpose"], f["filename"]): f for f in live_files(control)}
    expected = {("batch", name) for name in small if name not in ("doc0.jsonl", "doc1.jsonl")}
    expected |= {("batch", "new.jsonl"), ("vision", "big.bin"), ("user_data", "moved.txt")}
    assert set(files) == expected                       # nothing lost, nothing duplicated
    assert len(live_files(control)) == len(expected)
    assert emulator.control.stored_content(files[("user_data", "moved.txt")]["id"]) == \
        small["doc1.jsonl"]
    assert hashlib.sha256(emulator.control.stored_content(files[("vision", "big.bin")]["id"])) \
        .digest() == hashlib.sha256(big).digest()
    assert seeded["doc0.jsonl"]["id"] not in {f["id"] for f in live_files(control)}
    assert [u["status"] for u in control.state()["uploads"]] == ["completed"]
    assert survived >= 10, survived
    print(f"faults injected and survived: {survived}")


def test_a_retried_post_that_had_created_the_file_leaves_no_duplicate(mount, emulator,
                                                                      tmp_path):
    control = emulator.control
    # the server creates the file, then the connection drops before the answer
    control.add_fault("drop_after_commit", method="POST", path="^/v1/files$", count=1)
    mounted = mount()
    (tmp_path / "once.txt").write_bytes(b"exactly once")
    run("cp", str(tmp_path / "once.txt"), str(mounted / "assistants" / "once.txt"))
    files = live_files(control)
    assert [f["filename"] for f in files] == ["once.txt"]
    assert (mounted / "assistants" / "once.txt").read_bytes() == b"exactly once"
    posts = [r for r in control.requests() if r["method"] == "POST"]
    assert len(posts) == 1          # found the file the failed attempt made: no second POST


def test_a_completion_that_failed_after_committing_leaves_no_duplicate(mount, emulator,
                                                                      tmp_path):
    control = emulator.control
    control.add_fault("status_after_commit", method="POST", path="/complete$", status=500,
                      count=1)
    mounted = mount("--multipart-threshold", "1M", "--part-size", "1M")
    data = payload(2 * MiB + 5, seed=2)
    (tmp_path / "big.bin").write_bytes(data)
    run("cp", str(tmp_path / "big.bin"), str(mounted / "assistants" / "big.bin"))
    files = live_files(control)
    assert [f["filename"] for f in files] == ["big.bin"]
    assert emulator.control.stored_content(files[0]["id"]) == data
    assert [u["status"] for u in control.state()["uploads"]] == ["completed"]


def test_a_plain_500_on_post_is_retried_without_a_duplicate(mount, emulator, tmp_path):
    control = emulator.control
    control.add_fault("status", method="POST", path="^/v1/files$", status=500, count=2)
    mounted = mount()
    (tmp_path / "x.txt").write_bytes(b"third time lucky")
    run("cp", str(tmp_path / "x.txt"), str(mounted / "evals" / "x.txt"))
    assert [f["filename"] for f in live_files(control)] == ["x.txt"]
    assert len([r for r in control.requests() if r["method"] == "POST"]) == 3


def test_a_download_dropped_midway_resumes_and_a_persistent_drop_is_eio(mount, emulator,
                                                                        seed):
    control = emulator.control
    data = payload(6 * MiB, seed=3)
    made = seed("big.bin", "vision", data)
    control.add_fault("truncate", path="/content$", after_bytes=1_000_000, count=1)
    mounted = mount("--retries", "2")
    assert (mounted / "vision" / "big.bin").read_bytes() == data
    ranges = [r["range"] for r in control.requests() if r["path"].endswith("/content")]
    # the first window from 0 broke after 1,000,000 bytes; its resume asked from there on
    assert ranges[0] is None or ranges[0].startswith("bytes=0-")
    assert ranges[1] is not None and ranges[1].startswith("bytes=1000000-")
    other = seed("other.bin", "vision", b"z" * 200_000)
    control.add_fault("truncate", path=f"/files/{other['id']}/content", after_bytes=1000)
    mounted.expect_log(rf"ERROR openai_fs.fuse.operations: read: GET /files/{other['id']}/content")
    result = subprocess.run(["cat", str(mounted / ".by-id" / other["id"])],
                            capture_output=True, timeout=120)
    assert result.returncode != 0 and b"Input/output error" in result.stderr
    assert os.listdir(mounted / "vision")       # the mount is still fine
    assert made["id"]


def test_an_upload_whose_connection_drops_fails_close_and_leaves_nothing(mount, emulator,
                                                                        tmp_path):
    control = emulator.control
    control.add_fault("drop", method="POST", path="/parts$")
    mounted = mount("--multipart-threshold", "1M", "--part-size", "1M", "--retries", "1")
    mounted.expect_log(r"upload of vision/lost.bin failed")
    (tmp_path / "lost.bin").write_bytes(payload(3 * MiB, seed=4))
    result = run("cp", str(tmp_path / "lost.bin"), str(mounted / "vision" / "lost.bin"),
                 check=False)
    assert result.returncode != 0 and "Input/output error" in result.stderr
    assert live_files(control) == []
    assert [u["status"] for u in control.state()["uploads"]] == ["cancelled"]


@pytest.fixture
def own_emulator(tmp_path):
    """An emulator this test may stop and start again (same port, same data)."""
    server = EmulatorProcess(tmp_path / "own-emulator")
    server.start()
    yield server
    server.stop()


def test_a_stopped_server_gives_eio_in_bounded_time_and_the_mount_recovers(
        own_emulator, tmp_path):
    own_emulator.control.seed_file("before.txt", "vision", b"seen before the outage")
    uncached = own_emulator.control.seed_file("later.txt", "vision", b"read after")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "mount.log"
    env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": own_emulator.base_url}
    process = subprocess.Popen([sys.executable, "-m", "openai_fs", "mount", "-f", str(mnt),
                                "--cache-dir", str(tmp_path / "c"), "--log-file", str(log),
                                "--retries", "2", "--timeout", "5"], env=env)
    try:
        wait_for(lambda: os.path.ismount(mnt))
        assert (mnt / "vision" / "before.txt").read_bytes() == b"seen before the outage"
        (tmp_path / "new.txt").write_bytes(b"written during the outage")
        own_emulator.stop()
        # a read that needs the server fails, and does not hang (the timeout bounds it)
        result = subprocess.run(["cat", str(mnt / "vision" / "later.txt")],
                                capture_output=True, text=True, timeout=90)
        assert result.returncode != 0 and "Input/output error" in result.stderr
        # what was read before is still there
        assert (mnt / "vision" / "before.txt").read_bytes() == b"seen before the outage"
        # an upload fails at close, and its bytes are kept
        result = subprocess.run(["cp", str(tmp_path / "new.txt"), str(mnt / "vision")],
                                capture_output=True, text=True, timeout=90)
        assert result.returncode != 0
        kept = list((tmp_path / "c" / "unsent").iterdir())
        assert [p.read_bytes() for p in kept] == [b"written during the outage"]
        # the server comes back: the mount recovers by itself
        own_emulator.start()
        assert (mnt / "vision" / "later.txt").read_bytes() == b"read after"
        run("cp", str(tmp_path / "new.txt"), str(mnt / "vision"))
        names = sorted(f["filename"] for f in live_files(own_emulator.control))
        assert names == ["before.txt", "later.txt", "new.txt"]
        assert uncached["id"]
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)])
        assert process.wait(timeout=30) == 0
    text = log.read_text()
    assert "Traceback" not in text and "unexpected" not in text


def test_a_slow_download_does_not_block_other_operations(mount, emulator, seed):
    control = emulator.control
    slow = seed("slow.bin", "vision", b"s" * 100_000)
    seed("quick.txt", "batch_output", b"quick")
    control.add_fault("latency", path=f"/files/{slow['id']}/content", seconds=4)
    mounted = mount()
    done = threading.Event()

    def slow_reader() -> None:
        (mounted / "vision" / "slow.bin").read_bytes()
        done.set()

    reader = threading.Thread(target=slow_reader)
    reader.start()
    wait_for(lambda: any(r["path"].endswith("/content") for r in control.requests()),
             message="the slow download to start")
    # while it waits: listings, stats, xattrs and other reads of the mount all answer
    assert os.listdir(mounted / "batch_output") == ["quick.txt"]
    assert (mounted / "batch_output" / "quick.txt").read_bytes() == b"quick"
    assert os.getxattr(mounted / "vision" / "slow.bin", "user.openai.id").decode() == \
        slow["id"]
    assert not done.is_set()                # all of that happened while the download waited
    reader.join(timeout=60)
    assert done.is_set()


def test_a_429_asking_for_too_long_a_wait_is_eagain(mount, emulator, seed):
    made = seed("busy.txt", "assistants", b"busy")
    emulator.control.add_fault("status", path=f"/files/{made['id']}/content", status=429,
                               retry_after=3600)
    mounted = mount()
    mounted.expect_log(r"429 from GET /files/.*/content")
    fd = os.open(mounted / "assistants" / "busy.txt", os.O_RDONLY)
    try:
        # os.read, not a file object's read: Python's FileIO turns EAGAIN into "no data yet"
        with pytest.raises(OSError) as caught:
            os.read(fd, 100)
    finally:
        os.close(fd)
    assert caught.value.errno == errno.EAGAIN
    assert len([r for r in emulator.control.requests() if r["status"] == 429]) <= 2
