"""--write-back through a real mount: close() and rm return once journaled, the queue is seen by
ls, cat and status, sync DIR / openai-fs sync / unmount wait for it, failures reach fsync and
status, and a mount killed with its queue full loses and repeats nothing (docs/SEMANTICS.md,
"Write-back")."""

from __future__ import annotations

import collections
import errno
import os

import pytest

from checktools import live_files, openai_fs
from fusetools import kill, run, wait_for

SLOW_POSTS = {"kind": "latency", "method": "POST", "path": "^/v1/files$"}


def names_on_server(emulator, purpose: str | None = None) -> list[str]:
    return sorted(f["filename"] for f in live_files(emulator, purpose))


def test_cp_returns_before_the_upload_and_sync_dir_waits_for_it(mount, emulator, tmp_path):
    emulator.control.add_fault(**SLOW_POSTS, seconds=1.5)
    mounted = mount("--write-back", "--upload-concurrency", "4")
    sources = []
    for n in range(6):
        source = tmp_path / f"doc{n}.txt"
        source.write_bytes(f"document {n}\n".encode() * 100)
        sources.append(str(source))
    run("cp", *sources, str(mounted / "assistants"))
    # cp is back, the uploads are not: the files show with their sizes, read from the spool,
    # and status shows the queue
    assert names_on_server(emulator) != [f"doc{n}.txt" for n in range(6)]
    assert sorted(os.listdir(mounted / "assistants")) == [f"doc{n}.txt" for n in range(6)]
    assert os.stat(mounted / "assistants" / "doc3.txt").st_size == len(b"document 3\n") * 100
    assert (mounted / "assistants" / "doc3.txt").read_bytes() == b"document 3\n" * 100
    shown = openai_fs("status", str(mounted.path)).stdout
    assert "Write-back queue:" in shown and "waiting" in shown
    run("sync", str(mounted / "assistants"))            # FSYNCDIR: waits for the directory
    assert names_on_server(emulator) == [f"doc{n}.txt" for n in range(6)]
    for made in live_files(emulator):
        assert emulator.control.stored_content(made["id"]) == \
            f"document {made['filename'][3]}\n".encode() * 100
    assert "Write-back queue: empty" in openai_fs("status", str(mounted.path)).stdout


def test_rm_returns_at_once_the_name_goes_and_sync_waits_for_the_deletes(
        mount, emulator, seed):
    made = [seed(f"old{n}.jsonl", "batch", b"{}\n") for n in range(5)]
    emulator.control.add_fault("latency", method="DELETE", seconds=1.5)
    mounted = mount("--write-back")
    run("rm", *[str(mounted / "batch" / f"old{n}.jsonl") for n in range(5)])
    assert os.listdir(mounted / "batch") == []          # gone at once
    assert len(live_files(emulator)) > 0                # the deletes are still on their way
    done = openai_fs("sync", str(mounted.path))
    assert done.returncode == 0, done.stderr
    assert live_files(emulator) == []
    assert os.listdir(mounted / "batch") == [] and made


def test_a_failed_background_upload_reaches_fsync_status_and_sync(mount, emulator):
    emulator.control.add_fault("status", method="POST", path="^/v1/files$", status=400,
                               message="this file is refused", count=2)
    mounted = mount("--write-back")
    mounted.expect_log(r"upload of (vision/kept|evals/later)\.txt failed: 400")
    fd = os.open(mounted / "vision" / "kept.txt", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"bytes the server refuses")
    with pytest.raises(OSError) as caught:
        os.fsync(fd)                                    # the writer learns of it
    assert caught.value.errno == errno.EINVAL
    with pytest.raises(OSError):                        # and its close() says so again
        os.close(fd)
    (mounted / "evals" / "later.txt").write_bytes(b"refused too")    # close() returns 0
    done = openai_fs("sync", str(mounted.path))
    assert done.returncode == 1 and "this file is refused" in done.stderr, done.stderr
    shown = openai_fs("status", str(mounted.path)).stdout
    assert "this file is refused" in shown and "unsent" in shown
    kept = sorted(path.read_bytes() for path in (mounted.cache_dir / "unsent").iterdir())
    assert kept == [b"bytes the server refuses", b"refused too"]
    assert live_files(emulator) == []


def test_unmount_waits_for_the_queue(mount, emulator):
    emulator.control.add_fault(**SLOW_POSTS, seconds=2)
    mounted = mount("--write-back")
    for n in range(3):
        (mounted / "vision" / f"last{n}.txt").write_bytes(b"before the unmount")
    assert names_on_server(emulator) == []
    done = openai_fs("unmount", str(mounted.path))
    assert done.returncode == 0, done.stderr
    mounted.stopped = True
    mounted.process.wait(timeout=30)
    assert names_on_server(emulator) == ["last0.txt", "last1.txt", "last2.txt"]


def test_killed_with_20_files_queued_the_next_mount_uploads_each_exactly_once(
        mount, emulator, tmp_path):
    cache = tmp_path / "shared-cache"
    emulator.control.add_fault(**SLOW_POSTS, seconds=8)
    first = mount("--write-back", "--upload-concurrency", "4", cache_dir=cache)
    for n in range(20):
        (first / "assistants" / f"q{n:02}.txt").write_bytes(f"queued {n}".encode())
    # some uploads are under way (their request sent, the server slow), the rest wait
    wait_for(lambda: first.status()["uploads"]["queue"]["sending"] == 4)
    kill(first)
    emulator.control.clear_faults()

    second = mount(cache_dir=cache)                     # without --write-back: it resumes too
    assert sorted(os.listdir(second / "assistants"))[:1] == ["q00.txt"]
    done = openai_fs("sync", str(second.path))
    assert done.returncode == 0, done.stderr
    # the requests the dead mount had sent may still finish on the slow server: wait them out
    wait_for(lambda: not any(r["duration"] is None for r in emulator.control.requests()),
             timeout=40, message="the dead mount's requests to end")
    on_server = [f["filename"] for f in live_files(emulator)]
    assert sorted(collections.Counter(on_server).items()) == \
        [(f"q{n:02}.txt", 1) for n in range(20)], on_server
    for made in live_files(emulator):
        assert emulator.control.stored_content(made["id"]) == \
            f"queued {int(made['filename'][1:3])}".encode()
    assert "resuming what a mount of this account that stopped had journaled: 20 upload(s)" \
        in second.log()
    assert sorted(os.listdir(second / "assistants")) == [f"q{n:02}.txt" for n in range(20)]


def test_fusermount_with_a_queue_loses_nothing(mount, emulator, tmp_path):
    cache = tmp_path / "shared-cache"
    emulator.control.add_fault(**SLOW_POSTS, seconds=6)
    first = mount("--write-back", "--upload-concurrency", "1", cache_dir=cache)
    for n in range(3):
        (first / "vision" / f"u{n}.txt").write_bytes(b"unmounted before its upload")
    assert first.unmount() == 0                         # fusermount3 -u, the queue not empty
    emulator.control.clear_faults()
    second = mount("--write-back", cache_dir=cache)
    assert openai_fs("sync", str(second.path)).returncode == 0
    wait_for(lambda: not any(r["duration"] is None for r in emulator.control.requests()),
             timeout=40, message="the first mount's requests to end")
    assert sorted(collections.Counter(names_on_server(emulator)).items()) == \
        [(f"u{n}.txt", 1) for n in range(3)]


def test_without_write_back_close_still_waits_for_the_upload(mount, emulator):
    emulator.control.add_fault(**SLOW_POSTS, seconds=0.5)
    mounted = mount()
    (mounted / "vision" / "sync.txt").write_bytes(b"on the server when close returns")
    assert names_on_server(emulator) == ["sync.txt"]
    assert "Write-back queue" not in openai_fs("status", str(mounted.path)).stdout


def test_without_write_back_rm_is_exactly_one_request_per_file(mount, emulator, seed):
    for n in range(10):
        seed(f"r{n}.jsonl", "batch", b"{}\n")
    mounted = mount()
    assert len(os.listdir(mounted / "batch")) == 10     # what a user (and rm -r) does first
    emulator.control.clear_requests()
    run("rm", *[str(mounted / "batch" / f"r{n}.jsonl") for n in range(10)])
    assert [r["method"] for r in emulator.control.requests()] == ["DELETE"] * 10
    assert live_files(emulator) == []
