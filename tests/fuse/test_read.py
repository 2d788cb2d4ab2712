"""Reading through a real mount: bytes, how many requests, caches, Range, errors."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
import sys
import threading

import pytest

from fusetools import content_requests, delete_on_server, run, wait_for

MiB = 1024 * 1024


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def fetched(control, file_id: str) -> int:
    """Bytes of the file's content the emulator sent, over all its requests."""
    return sum(r["response_bytes"] for r in content_requests(control, file_id))


@pytest.mark.parametrize("ignore_range", [False, True], ids=["range", "no-range"])
def test_cat_reads_the_exact_bytes_once_and_a_reread_with_no_request(
        mount, seed, emulator, ignore_range):
    data = payload(3 * MiB + 12345)
    made = seed("blob.bin", "vision", data)
    emulator.control.set_config(ignore_range=ignore_range)
    mounted = mount()
    path = mounted / "vision" / "blob.bin"
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
    # with Range a few growing windows, without one download; every byte once
    assert len(content_requests(emulator.control, made["id"])) <= (1 if ignore_range else 3)
    assert fetched(emulator.control, made["id"]) == len(data)
    emulator.control.clear_requests()
    # the kernel keeps the pages (keep_cache): a second reader causes no request at all
    copy = mounted.path.parent / "copy.bin"
    run("cp", str(path), str(copy))
    assert copy.read_bytes() == data
    assert emulator.control.requests() == []


def test_a_large_file_is_read_through_a_ring_and_cached_whole(mount, seed, emulator, tmp_path):
    # over 16 MiB: the download passes through memory and is written with O_DIRECT
    data = payload(40 * MiB + 4321, seed=3)
    made = seed("large.bin", "vision", data)
    cache = tmp_path / "ring-cache"
    mounted = mount(cache_dir=cache)
    digest = run("sha256sum", str(mounted / "vision" / "large.bin")).stdout.split()[0]
    assert digest == hashlib.sha256(data).hexdigest()
    assert fetched(emulator.control, made["id"]) == len(data)
    # the reader may finish before the last disk write does
    wait_for(lambda: mounted.status()["cache"]["downloads_running"] == 0)
    statistics = mounted.status()["cache"]
    assert statistics["downloads"] == 1
    if statistics["ring_downloads"] == 0:     # a cache folder on tmpfs before Linux 6.6
        assert "tmpfs" in run("stat", "-f", "-c", "%T", str(tmp_path)).stdout
    assert mounted.unmount() == 0
    (cached,) = (cache / "content").glob(f"*/{made['id']}")
    assert cached.read_bytes() == data


@pytest.mark.parametrize(("args", "window_kib"), [
    ((), 1024), (("--read-ahead", "2M"), 2048), (("-o", "read_ahead=0"), None),
], ids=["default", "2M", "kernel's"])
def test_the_kernel_reads_ahead_by_the_window_asked_for(mount, seed, args, window_kib):
    data = payload(3 * MiB, seed=5)
    seed("ahead.bin", "vision", data)
    mounted = mount(*args)
    device = os.stat(mounted.path).st_dev
    knob = f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb"
    with open(knob) as current:
        in_force = int(current.read())
    if window_kib is None:      # 0 leaves the kernel's own default alone
        assert in_force not in (1024, 2048)
    else:
        assert in_force == window_kib
    assert mounted.status()["read_ahead"] == in_force * 1024
    shown = run(sys.executable, "-m", "openai_fs", "status", str(mounted.path)).stdout
    assert f"Kernel read-ahead: {in_force / 1024:.1f} MiB" in shown \
        or f"Kernel read-ahead: {in_force:.1f} KiB" in shown
    assert (mounted / "vision" / "ahead.bin").read_bytes() == data


def test_status_shows_a_download_while_it_runs(mount, seed, emulator):
    data = payload(6 * MiB, seed=11)
    made = seed("slow.bin", "vision", data)
    emulator.control.set_config(bandwidth=2 * MiB)         # about 3 s
    mounted = mount()
    reader = subprocess.Popen(["cat", str(mounted / "vision" / "slow.bin")],
                              stdout=subprocess.PIPE)

    def status() -> str:
        return run(sys.executable, "-m", "openai_fs", "status", str(mounted.path)).stdout

    shown = wait_for(lambda: next((text for text in [status()]
                                   if "Downloads running: 1" in text), None))
    assert f"vision/slow.bin ({made['id']}):" in shown and "of 6.0 MiB" in shown
    assert reader.communicate(timeout=60)[0] == data
    wait_for(lambda: "Downloads running" not in status())


def test_a_later_mount_reuses_the_disk_cache(mount, seed, emulator, tmp_path):
    data = payload(2 * MiB)
    made = seed("keep.bin", "vision", data)
    cache = tmp_path / "shared-cache"
    first = mount(cache_dir=cache)
    assert (first / "vision" / "keep.bin").read_bytes() == data
    assert first.unmount() == 0
    emulator.control.clear_requests()
    second = mount(cache_dir=cache)
    assert (second / "vision" / "keep.bin").read_bytes() == data
    assert content_requests(emulator.control, made["id"]) == []


def test_a_mount_starting_on_a_shared_cache_leaves_a_running_download_alone(
        mount, seed, emulator, tmp_path):
    """Every mount of a user shares the default --cache-dir: one starting while another
    downloads must leave that download's partial file alone (it once removed it, and the
    first mount died when the download ended)."""
    data = payload(6 * MiB, seed=12)
    seed("slow.bin", "vision", data)
    emulator.control.set_config(bandwidth=2 * MiB)         # about 3 s
    cache = tmp_path / "shared-cache"
    first = mount(cache_dir=cache)
    reader = subprocess.Popen(["cat", str(first / "vision" / "slow.bin")],
                              stdout=subprocess.PIPE)
    folder = wait_for(lambda: next(iter((cache / "content").glob("*/*.partial-*")), None))
    second = mount(cache_dir=cache)
    assert folder.exists()
    assert reader.communicate(timeout=60)[0] == data
    wait_for(lambda: (folder.parent / folder.name.split(".partial")[0]).exists())
    assert os.path.ismount(first.path) and os.path.ismount(second.path)
    emulator.control.set_config(bandwidth=None)
    assert (second / "vision" / "slow.bin").read_bytes() == data


def test_concurrent_readers_of_one_file_share_one_download(mount, seed, emulator):
    data = payload(12 * MiB, seed=7)
    made = seed("shared.bin", "vision", data)
    emulator.control.add_fault("latency", path="/content", seconds=0.3)
    mounted = mount()
    path = mounted / "vision" / "shared.bin"
    results: list[bytes] = []

    def reader() -> None:
        with open(path, "rb", buffering=0) as handle:
            chunks = []
            while chunk := handle.read(1 << 20):
                chunks.append(chunk)
            results.append(b"".join(chunks))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 8 and all(r == data for r in results)
    assert fetched(emulator.control, made["id"]) == len(data)


def test_random_reads_of_a_large_file_use_range_when_the_server_honours_it(
        mount, seed, emulator):
    data = payload(64 * MiB, seed=3)
    made = seed("huge.bin", "vision", data)
    emulator.control.set_config(honour_range=True)
    mounted = mount()
    fd = os.open(mounted / "vision" / "huge.bin", os.O_RDONLY)
    try:
        for offset in (40 * MiB + 17, 10 * MiB, 63 * MiB):
            assert os.pread(fd, 4096, offset) == data[offset:offset + 4096]
    finally:
        os.close(fd)
    requests = content_requests(emulator.control, made["id"])
    assert requests and all(r["status"] == 206 and r["range"] for r in requests)
    # only the blocks around the reads travelled, never the whole file
    assert sum(r["response_bytes"] for r in requests) < 16 * MiB


def test_random_reads_without_range_support_use_one_download_to_disk(mount, seed, emulator):
    data = payload(40 * MiB, seed=4)
    made = seed("huge.bin", "vision", data)
    emulator.control.set_config(ignore_range=True)
    mounted = mount()
    fd = os.open(mounted / "vision" / "huge.bin", os.O_RDONLY)
    try:
        for offset in (30 * MiB + 5, 1 * MiB, 39 * MiB, 20 * MiB):
            assert os.pread(fd, 8192, offset) == data[offset:offset + 8192]
    finally:
        os.close(fd)
    # at most one probe that learnt Range is ignored, then the one download serves the rest
    assert len(content_requests(emulator.control, made["id"])) <= 2
    # the reads return as soon as the download passed them; the download then completes
    cached = wait_for(lambda: list((mounted.cache_dir / "content").glob(f"*/{made['id']}")),
                      timeout=30, message="the download to finish")
    assert len(cached) == 1 and cached[0].stat().st_size == len(data)
    assert len(content_requests(emulator.control, made["id"])) <= 2


def test_memory_stays_bounded_when_the_disk_cache_is_off(mount, seed, emulator):
    data = payload(48 * MiB, seed=5)
    made = seed("stream.bin", "vision", data)
    emulator.control.set_config(honour_range=True)     # blocks through memory need Range
    mounted = mount("--disk-cache-size", "0", "--cache-size", "8M")
    digest = hashlib.sha256()
    with open(mounted / "vision" / "stream.bin", "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    assert digest.digest() == hashlib.sha256(data).digest()
    status = mounted.status()
    assert status["cache"]["memory_bytes"] <= 8 * MiB
    # read-ahead: a sequential read fetches growing windows, not one request per 1 MiB block
    assert len(content_requests(emulator.control, made["id"])) <= 48 // 2
    assert status["cache"]["disk_bytes"] == 0
    assert not list((mounted.cache_dir / "content").glob(f"*/{made['id']}*"))


def test_cp_out_and_empty_files(mount, seed, tmp_path):
    seed("empty.txt", "vision", b"")
    seed("notes.md", "vision", b"# notes\n")
    mounted = mount()
    run("cp", str(mounted / "vision" / "notes.md"), str(tmp_path / "notes.md"))
    assert (tmp_path / "notes.md").read_bytes() == b"# notes\n"
    assert (mounted / "vision" / "empty.txt").read_bytes() == b""


def test_a_server_error_on_content_is_eio_with_one_log_line(mount, seed, emulator):
    made = seed("broken.bin", "vision", b"unreachable")
    emulator.control.add_fault("status", path=f"/files/{made['id']}/content", status=500)
    mounted = mount("--retries", "1")
    mounted.expect_log(r"ERROR .*500 from GET /files/.*/content.*request_id=req_")
    with pytest.raises(OSError) as caught:
        (mounted / "vision" / "broken.bin").read_bytes()
    assert caught.value.errno == errno.EIO
    # each failed request is logged exactly once, with its request id (the kernel may retry
    # a failed read itself, which is a request of its own)
    failed = [r for r in content_requests(emulator.control, made["id"]) if r["status"] == 500]
    lines = [line for line in mounted.log().splitlines() if " ERROR " in line]
    assert failed and len(lines) == len(failed) // 2     # --retries 1: two attempts per error
    assert all("500 from GET" in line and "request_id=req_" in line for line in lines)


def test_a_file_deleted_after_listing_reads_as_enoent_not_a_hang(mount, seed, emulator):
    made = seed("vanishing.txt", "vision", b"bye")
    mounted = mount()
    path = mounted / "vision" / "vanishing.txt"
    assert path.exists()
    delete_on_server(emulator, made["id"])
    with pytest.raises(FileNotFoundError):
        path.read_bytes()
    assert os.listdir(mounted.path)      # and the mount is still alive


@pytest.mark.parametrize("honour_range", [True, False], ids=["range", "no-range"])
def test_head_and_a_far_read_fetch_windows_not_the_file(mount, seed, emulator, honour_range):
    data = payload(48 * MiB + 777, seed=12)
    made = seed("window.jsonl", "batch", data)
    emulator.control.set_config(honour_range=honour_range)
    mounted = mount()
    path = mounted / "batch" / "window.jsonl"
    head = subprocess.run(["head", "-c", "4096", str(path)], capture_output=True, check=True)
    assert head.stdout == data[:4096]

    def settled() -> int:
        seen = [-1]

        def same() -> bool:
            now = fetched(emulator.control, made["id"])
            stable, seen[0] = now == seen[0], now
            return stable
        wait_for(same, interval=0.3)
        return seen[0]

    after_head = settled()
    assert after_head <= (2 * MiB if honour_range else 16 * MiB)
    far = 40 * MiB + 123
    fd = os.open(path, os.O_RDONLY)              # a new open, and one 4 KiB read (not Python's
    try:                                         # buffered read, which asks for st_blksize)
        assert os.pread(fd, 4096, far) == data[far:far + 4096]
    finally:
        os.close(fd)
    after_far = settled()
    if honour_range:
        assert after_far - after_head <= 4 * MiB
    else:       # every byte before it, once: the paused download went on
        assert after_far <= far + 16 * MiB
        assert len(content_requests(emulator.control, made["id"])) == 1


@pytest.mark.parametrize("honour_range", [True, False], ids=["range", "no-range"])
def test_a_removed_file_open_for_reading_reads_on_after_a_partial_read(
        mount, seed, emulator, honour_range):
    data = payload(20 * MiB + 5, seed=13)
    seed("gone.jsonl", "batch", data)
    emulator.control.set_config(honour_range=honour_range)
    mounted = mount()
    path = mounted / "batch" / "gone.jsonl"
    with open(path, "rb") as handle:
        assert handle.read(4096) == data[:4096]
        os.unlink(path)
        handle.seek(15 * MiB)
        assert handle.read(MiB) == data[15 * MiB:16 * MiB]
