"""Large downloads through a ring (openai_fs/core/download_ring.py): written to the disk cache with
O_DIRECT, readers answered from memory, the download kept within a ring of its reader."""

from __future__ import annotations

import errno
import os

import pytest
import trio

from openai_fs.core import download_ring
from openai_fs.api import FileObject
from openai_fs.core.download_ring import RING_BYTES, RingPool, direct_io

from .conftest import MiB
from .test_cache import add_file, read_all

#: larger than a ring, and not a whole number of blocks or pages
BIG = RING_BYTES + 5 * MiB + 123
#: a memory budget that leaves room for two rings
MEMORY = 4 * RING_BYTES


@pytest.fixture(autouse=True)
def needs_direct_io(tmp_path):
    fd = os.open(tmp_path / "probe", os.O_RDWR | os.O_CREAT)
    try:
        if not direct_io(fd):
            pytest.skip(f"{tmp_path} does not take O_DIRECT writes")
    finally:
        os.close(fd)
        os.unlink(tmp_path / "probe")


def leftovers(core) -> list[str]:
    return [path.name for path in core.disk.folder.iterdir() if ".partial" in path.name]


@pytest.mark.parametrize("chunk", [128 * 1024, MiB + 4096])     # the second straddles blocks
async def test_a_large_file_is_read_through_a_ring_and_kept_whole_on_disk(fake, make_core,
                                                                          chunk):
    core = await make_core(memory_bytes=MEMORY)
    file, data = add_file(fake, BIG)
    assert await read_all(core.cache, file, chunk) == data
    assert fake.content_bytes() == file.bytes
    assert core.cache.stats.ring_downloads == 1
    assert core.cache.stats.ring_misses == 0
    assert await core.cache.fetch_whole(file)       # the last writes may still be under way
    assert core.disk.path(file.id).read_bytes() == data
    assert leftovers(core) == []
    assert await read_all(core.cache, file) == data          # again: from the disk cache
    assert fake.content_bytes() == file.bytes


async def test_the_download_stays_within_a_ring_of_a_slow_reader(fake, make_core):
    # The fake server sends as fast as it is read: without the pacing the download would be
    # finished long before this reader, and most of its reads would come back from disk.
    core = await make_core(memory_bytes=MEMORY)
    file, data = add_file(fake, 2 * RING_BYTES + 3 * MiB)
    pieces = []
    for offset in range(0, file.bytes, MiB):
        pieces.append(bytes(await core.cache.read(file, offset, MiB)))
        await trio.sleep(0.005)
    assert b"".join(pieces) == data
    assert core.cache.stats.ring_misses == 0
    assert await core.cache.fetch_whole(file)
    assert core.disk.path(file.id).read_bytes() == data


async def test_a_reader_that_stops_does_not_hold_the_download_back(fake, make_core,
                                                                    monkeypatch):
    monkeypatch.setattr(download_ring, "READER_IDLE", 0.05)
    core = await make_core(memory_bytes=MEMORY)
    file, data = add_file(fake, 2 * RING_BYTES + 3 * MiB)
    assert await core.cache.read(file, 0, MiB) == data[:MiB]
    with trio.fail_after(10):
        assert await core.cache.fetch_whole(file)     # waits for the download to end
    assert core.disk.path(file.id).read_bytes() == data
    # a reader far behind the ring reads from disk
    assert await core.cache.read(file, MiB, MiB) == data[MiB:2 * MiB]


async def test_a_reader_left_behind_by_the_ring_reads_from_disk(fake, make_core, monkeypatch):
    monkeypatch.setattr(download_ring, "READER_IDLE", 0.0)
    fake.honour_range = False       # one stream from 0, which a far read moves on
    core = await make_core(memory_bytes=MEMORY)
    file, data = add_file(fake, 2 * RING_BYTES + 3 * MiB)
    assert await core.cache.read(file, 0, MiB) == data[:MiB]
    # a reader far ahead moves the stream on past the ring; block 1 leaves it
    assert await core.cache.read(file, RING_BYTES + 2 * MiB, MiB)
    [stream] = core.cache._partials[file.id].streams
    assert stream.ring is not None
    assert await core.cache.read(file, MiB, MiB) == data[MiB:2 * MiB]
    assert core.cache.stats.ring_misses == 1
    assert await core.cache.fetch_whole(file)
    assert await read_all(core.cache, file) == data


async def test_a_failed_disk_write_fails_the_readers_and_leaves_no_partial_file(
        fake, make_core, monkeypatch):
    written = []
    real_write = download_ring._write_direct

    def full_disk(fd, piece, offset, truncate_to):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(offset)
        real_write(fd, piece, offset, truncate_to)

    monkeypatch.setattr(download_ring, "_write_direct", full_disk)
    core = await make_core(memory_bytes=MEMORY)
    file, data = add_file(fake, BIG)
    with pytest.raises(OSError) as failure:
        await read_all(core.cache, file)
    assert failure.value.errno == errno.ENOSPC
    assert leftovers(core) == [] and not core.disk.has(file)
    monkeypatch.setattr(download_ring, "_write_direct", real_write)
    assert await read_all(core.cache, file) == data          # the next read starts afresh


@pytest.mark.parametrize("told", [-1, +1])
async def test_a_body_longer_or_shorter_than_the_file_fails_the_download(fake, make_core, told):
    core = await make_core(memory_bytes=MEMORY)
    obj = fake.add("liar.bin", os.urandom(BIG))
    obj["bytes"] = BIG + told * 3 * MiB
    file = FileObject.from_json({key: value for key, value in obj.items() if key != "_seq"})
    with pytest.raises(OSError) as failure:
        await read_all(core.cache, file)
    assert failure.value.errno == errno.EIO
    assert leftovers(core) == [] and not core.disk.has(file)


async def test_without_o_direct_a_large_download_goes_through_the_page_cache(
        fake, make_core, monkeypatch):
    monkeypatch.setattr("openai_fs.core.cache.direct_io", lambda fd, probe=True: False)
    core = await make_core(memory_bytes=MEMORY)
    file, data = add_file(fake, BIG)
    assert await read_all(core.cache, file) == data
    assert core.cache.stats.ring_downloads == 0
    assert await core.cache.fetch_whole(file)
    assert core.disk.path(file.id).read_bytes() == data


async def test_a_partial_file_that_cannot_be_opened_fails_the_read_and_not_the_next(
        fake, make_core, monkeypatch):
    real_open = os.open

    def no_descriptor_for_partial_readers(path, flags, *args):
        if ".partial" in str(path) and flags & os.O_CREAT:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, flags, *args)

    core = await make_core(memory_bytes=MEMORY)
    file, data = add_file(fake, BIG)
    monkeypatch.setattr(os, "open", no_descriptor_for_partial_readers)
    with pytest.raises(OSError) as failure:
        await core.cache.read(file, 0, MiB)
    assert failure.value.errno == errno.EMFILE
    monkeypatch.setattr(os, "open", real_open)
    assert await read_all(core.cache, file) == data
    assert core.cache.stats.ring_downloads == 1         # rings were not turned off for good


async def test_rings_come_out_of_the_memory_budget(fake, make_core):
    small = await make_core(memory_bytes=16 * MiB)      # too little to spare a ring
    file, data = add_file(fake, BIG)
    assert await read_all(small.cache, file) == data
    assert small.cache.stats.ring_downloads == 0

    core = await make_core(memory_bytes=MEMORY, cache_dir=small.cache_dir.parent / "other")
    assert core.cache.memory.maxsize == MEMORY - 2 * RING_BYTES
    files = [add_file(fake, BIG, seed=seed, name=f"{seed}.bin") for seed in range(3)]
    results: dict[str, bytes] = {}

    async def reader(file: FileObject) -> None:
        results[file.id] = await read_all(core.cache, file)

    async with trio.open_nursery() as nursery:
        for file, _ in files:
            nursery.start_soon(reader, file)
    assert all(results[file.id] == data for file, data in files)
    assert core.cache.stats.ring_downloads == 2         # the third had to do without


def test_a_ring_pool_lends_at_most_its_count_and_reuses_what_comes_back():
    pool = RingPool(2)
    first, second = pool.take(), pool.take()
    assert first is not None and second is not None and pool.take() is None
    pool.give_back(first)
    assert pool.take() is first
    pool.give_back(first)
    pool.give_back(second)
    pool.close()
