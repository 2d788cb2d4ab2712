"""Content caching (openai_fs/core/cache.py): whole-file downloads shared by readers, ranged block
fetches into a bounded memory LRU, and the disk cache (LRU, pinning, reuse across mounts)."""

from __future__ import annotations

import random

import pytest
import trio

from openai_fs.api import FileObject
from openai_fs.core import cache as cache_module
from openai_fs.core.cache import BLOCK_SIZE, ContentCache
from openai_fs.core.disk_cache import DiskCache

from .conftest import MiB
from .fake_api import BASE_URL

READ = 128 * 1024


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def add_file(fake, size: int, *, seed: int = 1, name: str = "data.bin") -> tuple[FileObject,
                                                                                 bytes]:
    data = payload(size, seed)
    return FileObject.from_json(fake.add(name, data)), data


async def read_all(cache: ContentCache, file: FileObject, chunk: int = READ) -> bytes:
    pieces = []
    for offset in range(0, file.bytes, chunk):
        pieces.append(await cache.read(file, offset, chunk))
    return b"".join(pieces)


@pytest.fixture
def short_linger(monkeypatch):
    """Streams wait 0.3 s for a handle to come back (real time: their disk writes are
    threads, which a test clock would jump past)."""
    monkeypatch.setattr(cache_module, "LINGER_SECONDS", 0.3)


async def streams_ended(core, within: float = 10) -> None:
    """Wait until no stream runs."""
    with trio.fail_after(within):
        while core.cache.statistics()["downloads_running"]:
            await trio.sleep(0.05)


#: a file much larger than any window
LARGE = 96 * MiB + 12345


@pytest.mark.parametrize("honour_range", [True, False])
async def test_a_whole_sequential_read_fetches_every_byte_once(fake, core, honour_range):
    fake.honour_range = honour_range
    file, data = add_file(fake, LARGE)
    assert await read_all(core.cache, file) == data
    assert fake.content_bytes() == file.bytes           # no byte twice
    # windows that double up to MAX_WINDOW: a few requests, not one per block
    assert fake.count("content") <= (10 if honour_range else 1)
    assert await core.cache.fetch_whole(file)
    assert core.disk.has(file)
    assert await read_all(core.cache, file) == data     # again: from the disk cache
    assert fake.content_bytes() == file.bytes


async def test_a_first_read_fetches_a_window_around_it_with_range(fake, core):
    file, data = add_file(fake, LARGE)
    assert await core.cache.read(file, 0, 4096) == data[:4096]
    assert fake.content_bytes() <= BLOCK_SIZE
    [call] = fake.of("content")
    assert call.headers["range"] == f"bytes=0-{BLOCK_SIZE - 1}"
    far = 70 * MiB + 5000
    assert await core.cache.read(file, far, 4096) == data[far:far + 4096]
    assert fake.content_bytes() <= 2 * BLOCK_SIZE
    assert fake.of("content")[1].headers["range"] == f"bytes={70 * MiB}-{71 * MiB - 1}"
    # the rest of that block is held; a read on into the next block is sequential: it fetches
    # that block and the next window
    assert await core.cache.read(file, far + 4096, 8192) == data[far + 4096:far + 12288]
    assert fake.content_bytes() <= 2 * BLOCK_SIZE
    edge = 71 * MiB - 1000
    assert await core.cache.read(file, edge, 4000) == data[edge:edge + 4000]
    assert fake.content_bytes() <= 5 * BLOCK_SIZE
    assert not core.disk.has(file)
    # a later whole read fetches only what is missing
    assert await read_all(core.cache, file) == data
    assert fake.content_bytes() == file.bytes


async def test_sequential_reads_grow_the_window_and_a_far_seek_starts_a_new_one(fake, core):
    file, data = add_file(fake, LARGE)
    for offset in range(0, 8 * MiB, READ):
        assert await core.cache.read(file, offset, READ) == data[offset:offset + READ]
    await trio.sleep(0.5)                                       # the last window arrives
    sizes = [call.sent for call in fake.of("content")]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]      # growing windows
    before = fake.content_bytes()
    assert before <= 8 * MiB + 2 * 16 * MiB                     # at most two windows ahead
    far = 80 * MiB
    assert await core.cache.read(file, far, READ) == data[far:far + READ]
    assert fake.of("content")[-1].headers["range"].startswith(f"bytes={far}-")
    assert fake.content_bytes() - before <= BLOCK_SIZE


async def test_without_range_a_stream_pauses_with_its_reader_and_stops_after_the_last_close(
        fake, core, short_linger):
    fake.honour_range = False
    file, data = add_file(fake, LARGE)
    core.cache.pin(file.id)
    assert await core.cache.read(file, 0, 4096) == data[:4096]
    await trio.sleep(1)                                 # a paused reader (less)
    paused = fake.content_bytes()
    assert paused <= 4 * MiB
    offset = 2 * MiB                                    # it reads on: the same download
    assert await core.cache.read(file, offset, READ) == data[offset:offset + READ]
    assert fake.count("content") == 1
    core.cache.unpin(file.id)
    await streams_ended(core)
    assert fake.content_bytes() <= paused + cache_module.EXTRA_AFTER_CLOSE + 4 * MiB
    assert not core.disk.has(file)
    # what it fetched stays: reading it again costs nothing
    assert await core.cache.read(file, 0, MiB) == data[:MiB]
    assert fake.count("content") == 1


async def test_without_range_a_far_read_after_a_reopen_continues_the_same_download(
        fake, core, short_linger):
    fake.honour_range = False
    file, data = add_file(fake, LARGE)
    core.cache.pin(file.id)
    assert await core.cache.read(file, 0, 4096) == data[:4096]
    core.cache.unpin(file.id)                           # head is done
    await trio.sleep(0.1)
    core.cache.pin(file.id)                             # a new open, soon after
    far = 80 * MiB
    assert await core.cache.read(file, far, 4096) == data[far:far + 4096]
    assert fake.count("content") == 1                   # no byte fetched twice
    assert fake.content_bytes() <= far + 16 * MiB
    core.cache.unpin(file.id)
    assert await core.cache.read(file, 40 * MiB, 4096) == data[40 * MiB:40 * MiB + 4096]
    assert fake.count("content") == 1


async def test_without_range_a_later_download_keeps_only_what_is_missing(
        fake, core, short_linger):
    fake.honour_range = False
    file, data = add_file(fake, LARGE)
    assert await core.cache.read(file, 0, 4096) == data[:4096]
    await streams_ended(core)                           # the first download stopped
    first = fake.content_bytes()
    assert first < 16 * MiB
    assert await read_all(core.cache, file) == data
    assert fake.count("content") == 2
    assert fake.content_bytes() == first + file.bytes   # from 0 again: no way around that
    assert await core.cache.fetch_whole(file) and core.disk.has(file)


async def test_a_partial_file_is_not_taken_for_a_whole_one_by_a_later_mount(
        fake, make_core, tmp_path):
    file, data = add_file(fake, LARGE)
    first = await make_core(cache_dir=tmp_path / "shared")
    assert await first.cache.read(file, 50 * MiB, 4096) == data[50 * MiB:50 * MiB + 4096]
    assert not first.disk.has(file)
    second = await make_core(cache_dir=tmp_path / "shared")
    assert not second.disk.has(file)
    assert await second.cache.read(file, 0, 4096) == data[:4096]


async def test_mounts_sharing_a_cache_folder_leave_each_others_downloads_alone(
        fake, make_core, tmp_path, short_linger):
    """The default --cache-dir is shared by every mount of the user: a mount starting while
    another downloads must not take that one's partial file for a dead mount's, and a copy
    that another mount removed is fetched again rather than failing a read."""
    file, data = add_file(fake, LARGE)
    first = await make_core(cache_dir=tmp_path / "shared")
    assert await first.cache.read(file, 0, 4096) == data[:4096]
    [held] = [path for path in first.disk.folder.iterdir() if ".partial" in path.name]
    dead = first.disk.folder / f"{file.id}.partial-dead"
    dead.write_bytes(b"half")                           # a dead mount's download

    second = await make_core(cache_dir=tmp_path / "shared")
    assert held.exists() and not dead.exists()
    assert await read_all(first.cache, file, MiB) == data   # and it becomes whole
    await streams_ended(first)
    assert first.disk.has(file) and first.disk.path(file.id).exists()

    # a copy the index holds is gone from the folder (another mount evicted it, or somebody
    # cleaned the folder): the read fetches it again
    third = await make_core(cache_dir=tmp_path / "other")
    incoming = tmp_path / "incoming"
    incoming.write_bytes(data)
    assert third.disk.add(file.id, incoming) and third.disk.has(file)
    third.disk.path(file.id).unlink()
    fetched = fake.count("content")
    assert await third.cache.read(file, 5 * MiB, 4096) == data[5 * MiB:5 * MiB + 4096]
    assert fake.count("content") > fetched


def test_a_partial_file_that_went_away_is_forgotten_not_fatal(tmp_path):
    disk = DiskCache(tmp_path, 10 * MiB, server=BASE_URL)
    disk.scan()
    path = disk.partial_path("file-a")
    path.write_bytes(b"")
    disk.add_partial("file-a", path)
    disk.grow("file-a", 100)
    path.unlink()                                       # removed behind the mount's back
    disk.complete("file-a")
    assert not disk.path("file-a").exists() and "file-a" not in disk._sizes
    assert disk.used == 0


async def test_memory_stays_within_its_bound_after_many_blocks(fake, make_core):
    # a file that does not fit the disk cache is read through memory
    limit = 3 * MiB + MiB // 2
    core = await make_core(memory_bytes=limit, disk_bytes=0)
    file, data = add_file(fake, 24 * MiB)
    order = [9, 20, 11, 23, 15, 12, 18, 10, 21, 13, 22, 16, 14, 19, 17, 9, 20]
    for block in order:
        offset = block * BLOCK_SIZE + 12345
        assert await core.cache.read(file, offset, 7000) == data[offset:offset + 7000]
        assert core.cache.memory.currsize <= limit
    # one read of several blocks at once
    offset = 13 * BLOCK_SIZE + 1
    assert await core.cache.read(file, offset, 5 * MiB) == data[offset:offset + 5 * MiB]
    assert core.cache.memory.currsize <= limit
    assert 0 < core.cache.memory.currsize
    assert core.cache.stats.downloads == 0


async def test_the_disk_cache_evicts_the_least_recently_used_whole_file(fake, make_core):
    size = 100_000
    core = await make_core(disk_bytes=3 * size + 10)
    files = [add_file(fake, size, seed=n, name=f"f{n}") for n in range(4)]
    for file, data in files[:3]:
        assert await read_all(core.cache, file) == data
    assert await core.cache.read(files[0][0], 0, 10) == files[0][1][:10]   # f0 used again
    assert fake.count("content") == 3
    assert await read_all(core.cache, files[3][0]) == files[3][1]          # needs room
    assert core.disk.used <= 3 * size + 10
    assert not core.disk.path(files[1][0].id).exists()                      # f1 was LRU
    assert [core.disk.has(file) for file, _ in files] == [True, False, True, True]
    assert await core.cache.read(files[0][0], 0, 10) == files[0][1][:10]
    assert fake.count("content") == 4


def test_eviction_passes_over_a_pinned_file_when_another_can_go(tmp_path):
    disk = DiskCache(tmp_path, 100, server=BASE_URL)
    disk.scan()

    def add(file_id: str, size: int) -> None:
        source = tmp_path / f"incoming-{file_id}"
        source.write_bytes(b"x" * size)
        assert disk.add(file_id, source)

    add("file-a", 40)
    add("file-b", 40)
    disk.pin("file-a")                  # file-a is the least recently used, but open
    add("file-c", 40)
    assert sorted(disk._sizes) == ["file-a", "file-c"]
    assert disk.path("file-a").exists() and not disk.path("file-b").exists()
    assert disk.used == 80 <= disk.capacity
    disk.unpin("file-a")
    add("file-d", 40)
    assert sorted(disk._sizes) == ["file-c", "file-d"]
    assert disk.used == 80


async def test_a_later_mount_reuses_the_disk_cache(fake, make_core, tmp_path):
    file, data = add_file(fake, 200_000)
    first = await make_core(cache_dir=tmp_path / "shared")
    assert await read_all(first.cache, file) == data
    assert fake.count("content") == 1
    leftover = first.disk.folder / f"{file.id}.partial-dead"
    leftover.write_bytes(b"half")                       # a dead mount's download

    second = await make_core(cache_dir=tmp_path / "shared")
    assert second.disk.has(file) and not leftover.exists()
    assert await read_all(second.cache, file) == data
    assert fake.count("content") == 1
    assert second.disk.used == file.bytes

    elsewhere = DiskCache(tmp_path / "shared", 10 * MiB, server="http://other/v1")
    elsewhere.scan()
    assert not elsewhere.has(file)                      # another server, another folder


async def test_a_cached_file_whose_size_disagrees_is_dropped_and_fetched_again(
        fake, make_core, tmp_path):
    file, data = add_file(fake, 50_000)
    first = await make_core(cache_dir=tmp_path / "shared")
    stale = first.disk.path(file.id)
    first.disk.folder.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(data[:1000])                      # a truncated copy

    second = await make_core(cache_dir=tmp_path / "shared")
    assert not second.disk.has(file)
    assert not stale.exists() and second.disk.used == 0
    assert await read_all(second.cache, file) == data
    assert fake.count("content") == 1 and second.disk.has(file)


async def test_discarding_a_pinned_file_waits_for_unpin(fake, core):
    file, data = add_file(fake, 30_000)
    assert await read_all(core.cache, file) == data
    core.cache.pin(file.id)
    core.cache.discard(file.id)
    path = core.disk.path(file.id)
    assert path.exists() and core.disk.used == file.bytes
    assert await core.cache.read(file, 100, 50) == data[100:150]    # an open handle reads on
    assert fake.count("content") == 1
    core.cache.unpin(file.id)
    assert not path.exists() and core.disk.used == 0 and not core.disk.has(file)


async def test_discard_drops_the_files_blocks_from_memory(fake, make_core):
    core = await make_core(disk_bytes=0)
    file, data = add_file(fake, 12 * MiB)
    other, _ = add_file(fake, 12 * MiB, seed=2, name="other.bin")
    await core.cache.read(file, 10 * MiB, 100)
    await core.cache.read(other, 10 * MiB, 100)
    core.cache.discard(file.id)
    assert [key for key in core.cache.memory] == [(other.id, 10)]


async def test_a_failed_download_fails_its_readers_and_leaves_no_partial_file(fake, core):
    file, data = add_file(fake, 40_000)
    fake.fail("content", 500)
    with pytest.raises(Exception, match="500"):
        await core.cache.read(file, 0, 1000)
    assert list(core.disk.folder.iterdir()) == [] and not core.disk.has(file)
    assert await read_all(core.cache, file) == data          # the next read starts afresh
    assert fake.count("content") == 2
