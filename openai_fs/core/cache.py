"""File content, fetched once and kept: a disk cache of whole files and a memory cache of blocks.

A file id's bytes never change, so nothing here is ever revalidated; content leaves only when
space is needed or the file is deleted.

* **Whole-file downloads** (the usual case: a read from offset 0, or any read of a small file,
  or any read when the server does not honour ``Range``) stream the file into the disk cache
  with one ``GET /files/{id}/content``. Readers wait only until the download has passed the bytes
  they asked for, and every reader of the file shares the one download.
* **Blocks** (a read far into a large file when the server honours ``Range``, or any read of a
  file that does not fit the disk cache) are fetched with ``Range`` into a memory LRU bounded in
  bytes (``--cache-size``).
* **Large downloads** keep their newest 16 MiB in memory, where the readers following them are
  answered, and write to the disk cache with ``O_DIRECT`` (see :mod:`openai_fs.download_ring`):
  the page cache is not filled twice with one file, and no byte is copied back out of it.
* **The disk cache** (``--cache-dir``, bounded by ``--disk-cache-size``) holds whole files named
  by id under a folder per server, evicts the least recently used whole file, and is reused by
  later mounts.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator

import cachetools
import trio

from openai_fs.api import DownloadRefusedError, FileObject, FilesClient, usable_id
from openai_fs.core.content_access import ContentAccess, ContentRefused
from openai_fs.core.download_ring import RING_BYTES, RingDownload, RingPool, direct_io
from openai_fs.core.errors import FSError
from openai_fs.core.private import private_dirs

if TYPE_CHECKING:
    import outcome       # trio's own dependency: what a worker thread hands back

log = logging.getLogger(__name__)

BLOCK_SIZE = 1024 * 1024
#: files up to this size are always fetched whole, wherever the first read falls
SMALL_FILE = 8 * BLOCK_SIZE
#: a read this far beyond a running download fetches its own blocks (when Range works)
FAR_AHEAD = 32 * BLOCK_SIZE
#: downloaded bytes are written to disk in pieces of about this size: each piece is one hop to
#: a worker thread, and readers following a download wait for a whole piece (measured on a
#: cold read of 1 GiB: 4 MiB pieces cost more CPU and time than 1 MiB, with readers waiting
#: longer and more of pyfuse3's worker tasks piling up)
WRITE_BATCH = BLOCK_SIZE
#: sequential reads served in blocks fetch ahead by a window that doubles up to this many
#: blocks (and to a quarter of the memory cache)
MAX_READ_AHEAD_BLOCKS = 16


class DiskCache:
    """Whole files on disk, by id, least recently used first out.

    Files of one server live in their own folder (``content/<hash of base URL>/``), so a mount of
    the emulator and one of the real API never mix. A file is named by its id, which the API
    client has checked (letters, digits, ``-``, ``_``) and :meth:`path` checks again: no server
    string can choose another path. Downloads in progress are ``*.partial`` files; a dead
    mount's leftovers are removed at start.
    """

    def __init__(self, root: Path, capacity: int, *, server: str) -> None:
        self.capacity = capacity
        self._root = root
        self._server_folder = hashlib.sha256(server.encode()).hexdigest()[:16]
        self.folder = root / "content" / self._server_folder
        self._sizes: dict[str, int] = {}      # insertion order = least recently used first
        self._pinned: dict[str, int] = {}
        self._doomed: set[str] = set()
        self.used = 0

    def scan(self) -> None:
        """Build the index from the folder (blocking; run in a thread at start)."""
        if self.capacity <= 0:
            return
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_dirs(self._root, "content", self._server_folder)
        found = []
        for path in self.folder.iterdir():
            if ".partial" in path.name:
                path.unlink(missing_ok=True)
                continue
            if not usable_id(path.name):
                continue            # not a cached file: left alone
            info = path.stat()
            found.append((info.st_mtime, path.name, info.st_size))
        for _, file_id, size in sorted(found):
            self._sizes[file_id] = size
            self.used += size
        self._evict(0)

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def path(self, file_id: str) -> Path:
        return self.folder / _cache_name(file_id)

    def partial_path(self, file_id: str) -> Path:
        return self.folder / f"{_cache_name(file_id)}.partial-{secrets.token_hex(4)}"

    def has(self, file: FileObject) -> bool:
        size = self._sizes.get(file.id)
        if size is None:
            return False
        if size != file.bytes:
            log.warning("cached copy of %s has %d bytes, the server says %d; dropping it",
                        file.id, size, file.bytes)
            self.remove(file.id)
            return False
        return True

    def holds(self, file: FileObject) -> bool:
        """Whether a complete copy of ``file`` is here (without the checks of :meth:`has`)."""
        return self._sizes.get(file.id) == file.bytes

    def touch(self, file_id: str) -> None:
        size = self._sizes.pop(file_id, None)
        if size is not None:
            self._sizes[file_id] = size

    def fits(self, size: int) -> bool:
        return self.enabled and size <= self.capacity

    def reserve(self, size: int) -> bool:
        """Make room for ``size`` more bytes; False when the cache cannot hold them."""
        if not self.fits(size):
            return False
        self._evict(size)
        return True

    def add(self, file_id: str, source: Path) -> bool:
        """Move a complete file into the cache under ``file_id``."""
        size = source.stat().st_size
        if not self.reserve(size):
            source.unlink(missing_ok=True)
            return False
        os.replace(source, self.path(file_id))
        self.remove_index(file_id)
        self._sizes[file_id] = size
        self.used += size
        return True

    def pin(self, file_id: str) -> None:
        self._pinned[file_id] = self._pinned.get(file_id, 0) + 1
        if file_id in self._sizes:
            self.touch(file_id)
            # the mtime carries the use order to the next mount (see scan)
            try:
                os.utime(self.path(file_id))
            except OSError:
                pass

    def unpin(self, file_id: str) -> None:
        count = self._pinned.get(file_id, 0) - 1
        if count > 0:
            self._pinned[file_id] = count
            return
        self._pinned.pop(file_id, None)
        if file_id in self._doomed:
            self._doomed.discard(file_id)
            self.remove(file_id)

    def is_pinned(self, file_id: str) -> bool:
        return file_id in self._pinned

    def discard(self, file_id: str) -> None:
        """The file was deleted: drop it now, or when its last open handle closes."""
        if file_id in self._pinned:
            self._doomed.add(file_id)
        else:
            self.remove(file_id)

    def remove(self, file_id: str) -> None:
        if self.remove_index(file_id):
            self.path(file_id).unlink(missing_ok=True)

    def remove_index(self, file_id: str) -> bool:
        size = self._sizes.pop(file_id, None)
        if size is None:
            return False
        self.used -= size
        return True

    def _evict(self, incoming: int) -> None:
        for file_id in list(self._sizes):
            if self.used + incoming <= self.capacity:
                return
            if file_id in self._pinned:
                continue        # an open file keeps its copy; eviction takes the next one
            log.debug("evicting %s from the disk cache", file_id)
            self.remove(file_id)


@dataclass(eq=False)
class Download:
    """One whole-file download into the disk cache, followed by its readers."""

    file: FileObject
    partial: Path
    fd: int
    #: bytes of the file its readers can have so far (always a prefix): written to the partial
    #: file, or, for a download through a ring, received into the ring
    available: int = 0
    #: the memory a large download passes through (None: written through the page cache)
    ring: RingDownload | None = None
    #: a plain descriptor of the partial file, for readers the ring has left behind (the
    #: download's own descriptor is O_DIRECT, which takes only aligned reads)
    read_fd: int = -1
    error: BaseException | None = None
    done: trio.Event = field(default_factory=trio.Event)
    started: float = field(default_factory=time.time)
    _progress: trio.Event = field(default_factory=trio.Event)

    def as_dict(self) -> dict[str, object]:
        """For ``openai-fs status``."""
        elapsed = max(time.time() - self.started, 1e-6)
        return {"path": f"{self.file.purpose}/{self.file.filename} ({self.file.id})",
                "bytes_received": self.available, "bytes_total": self.file.bytes,
                "seconds": round(elapsed, 1),
                "bytes_per_second": int(self.available / elapsed)}

    def advance(self, available: int) -> None:
        self.available = available
        self._progress.set()
        self._progress = trio.Event()

    async def wait_change(self) -> None:
        await self._progress.wait()

    async def wait_until(self, end: int) -> None:
        while self.available < end and not self.done.is_set():
            await self._progress.wait()
        if self.available < end and self.error is not None:
            raise self.error


@dataclass(eq=False)
class _Fetch:
    """A block fetch other readers of the same blocks wait for."""

    done: trio.Event = field(default_factory=trio.Event)
    blocks: dict[int, bytes] = field(default_factory=dict)
    error: Exception | None = None

    async def result(self) -> dict[int, bytes]:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.blocks


@dataclass
class CacheStatistics:
    disk_hits: int = 0
    memory_hits: int = 0
    downloads: int = 0
    #: downloads that went through a ring and O_DIRECT writes
    ring_downloads: int = 0
    #: reads of such a download that had fallen so far behind it that they were read from disk
    ring_misses: int = 0
    block_fetches: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def _cache_name(file_id: str) -> str:
    """The name of a file's copy: its id, which must be one (see :func:`usable_id`)."""
    if not usable_id(file_id):
        raise ValueError(f"not a file id: {file_id[:40]!r}")
    return file_id


def _refuse_untrusted(file: FileObject) -> None:
    """The content of a listing entry that cannot be trusted is never read: its size (and
    so what a complete copy is) is not known."""
    if file.problem is not None:
        raise FSError(errno.EIO, f"{file.purpose or '?'}/{file.id}: the server's entry for it "
                                 f"cannot be trusted ({file.problem}); it cannot be read",
                      level=logging.DEBUG)


class ContentCache:
    """Reads of file content, served from the caches and filled from the server."""

    def __init__(self, client: FilesClient, *, memory_bytes: int, disk: DiskCache,
                 nursery: trio.Nursery, access: ContentAccess | None = None) -> None:
        self.client = client
        self.disk = disk
        #: which purposes' content the server hands out (learned from its answers)
        self.access = access or ContentAccess()
        # Rings for large downloads come out of the memory budget: up to two, while they take
        # no more than half of it.
        self._rings = RingPool(min(2, memory_bytes // (2 * RING_BYTES)))
        self.memory: cachetools.LRUCache[tuple[str, int], bytes] = cachetools.LRUCache(
            maxsize=max(memory_bytes - self._rings.count * RING_BYTES, 1), getsizeof=len)
        #: whether the disk cache's filesystem takes O_DIRECT writes (None: not tried yet)
        self._direct_io: bool | None = None
        self.memory_enabled = memory_bytes >= BLOCK_SIZE
        self._nursery = nursery
        self._downloads: dict[str, Download] = {}
        #: (file id, block) -> the fetch in flight that brings that block
        self._fetches: dict[tuple[str, int], _Fetch] = {}
        #: file id -> (where its last block read ended, the read-ahead window in blocks)
        self._sequence: cachetools.LRUCache[str, tuple[int, int]] = cachetools.LRUCache(4096)
        self._open_fds: dict[str, int] = {}
        self.stats = CacheStatistics()

    # ----------------------------------------------------------------- reads

    async def read(self, file: FileObject, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset+size)`` of ``file`` (fewer at its end)."""
        piece = await self.read_for_reply(file, offset, size)
        return bytes(piece) if isinstance(piece, memoryview) else piece

    async def read_for_reply(self, file: FileObject, offset: int,
                             size: int) -> bytes | memoryview:
        """As :meth:`read`, but possibly a view of a download's ring, which stays valid only
        until the caller next awaits: made for a FUSE reply, which pyfuse3 copies to the
        kernel before anything else runs, and saves copying every byte once more."""
        _refuse_untrusted(file)
        if offset >= file.bytes or size <= 0:
            return b""
        size = min(size, file.bytes - offset)
        end = offset + size
        if self.disk.has(file):
            self.stats.disk_hits += 1
            return self._pread_cached(file.id, offset, size)
        download = self._downloads.get(file.id)
        if download is not None and (offset - download.available < FAR_AHEAD
                                     or self.client.range_supported is False
                                     or not self.memory_enabled):
            return await self._read_following(download, offset, end)
        if download is None and self._fetch_whole(file, offset):
            return await self._read_following(self._start_download(file), offset, end)
        return await self._read_blocks(file, offset, end)

    async def fetch_whole(self, file: FileObject) -> bool:
        """Make sure the whole file is in the disk cache (used before deleting a file that is
        still open). False when it cannot be kept there, or when the server's entry for it
        cannot be trusted (its content is never read)."""
        if file.problem is not None:
            return False
        if self.disk.has(file):
            return True
        if not self.disk.fits(file.bytes):
            return False
        download = self._downloads.get(file.id) or self._start_download(file)
        await download.done.wait()
        if download.error is not None:
            raise download.error
        return self.disk.has(file)

    async def copy_into(self, file: FileObject, path: Path, fd: int) -> None:
        """Write the whole content of ``file`` into the local file ``path`` (open as ``fd``):
        copied from the disk cache when it is there, else streamed from the server. An empty
        file needs nothing (and nothing is lost if it is gone from the server since)."""
        _refuse_untrusted(file)
        if file.bytes == 0:
            return
        if self.disk.has(file):
            await trio.to_thread.run_sync(shutil.copyfile, self.disk.path(file.id), path)
            return
        at = 0
        async for _, chunk in self._stream(file):
            await trio.to_thread.run_sync(os.pwrite, fd, chunk, at)
            at += len(chunk)

    def _fetch_whole(self, file: FileObject, offset: int) -> bool:
        if not self.disk.fits(file.bytes):
            return False
        return (offset == 0 or file.bytes <= SMALL_FILE or not self.memory_enabled
                or self.client.range_supported is False)

    def holds(self, file: FileObject) -> bool:
        """Whether the mount has all of ``file``'s bytes without asking the server."""
        return self.disk.holds(file)

    async def _stream(self, file: FileObject, *, offset: int = 0,
                      length: int | None = None) -> AsyncIterator[tuple[int, bytes]]:
        """The client's content stream of ``file``, minding which purposes the server refuses:
        none is asked for once its purpose is known refused, and a refusal teaches that."""
        if self.access.state(file.purpose) is False:
            raise ContentRefused(f"{file.purpose}/{file.filename}", file.purpose)
        served = False
        try:
            async for at, chunk in self.client.stream_content(file.id, offset=offset,
                                                              length=length):
                if not served:
                    self.access.served(file.purpose)
                    served = True
                yield at, chunk
        except DownloadRefusedError as exc:
            self.access.refused(file.purpose, exc.message)
            raise ContentRefused(f"{file.purpose}/{file.filename}", file.purpose) from None

    # ------------------------------------------------------- whole downloads

    def _start_download(self, file: FileObject) -> Download:
        partial = self.disk.partial_path(file.id)
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        download = Download(file, partial, fd)
        self._downloads[file.id] = download
        self.stats.downloads += 1
        if file.bytes > RING_BYTES:
            self._give_ring(download)
        self._nursery.start_soon(self._run_download, download)
        return download

    def _give_ring(self, download: Download) -> None:
        """Let a large download pass through a ring, when one is free and the disk cache's
        filesystem takes O_DIRECT."""
        if self._direct_io is False:
            return
        memory = self._rings.take()
        if memory is None:
            return
        try:
            self._direct_io = direct_io(download.fd, probe=self._direct_io is None)
        except OSError as exc:
            log.debug("no direct writes to %s: %s", download.partial, exc)
            self._direct_io = False
        if not self._direct_io:
            self._rings.give_back(memory)
            return
        try:
            download.read_fd = os.open(download.partial, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:      # out of descriptors: this one goes the plain way
            log.debug("no reader for %s: %s", download.partial, exc)
            direct_io(download.fd, on=False)
            self._rings.give_back(memory)
            return
        ring = RingDownload(memory, download.fd, download.file.bytes,
                            changed=lambda: download.advance(ring.received),
                            wait_change=download.wait_change)
        download.ring = ring
        self.stats.ring_downloads += 1

    async def _run_download(self, download: Download) -> None:
        file = download.file
        ring = download.ring
        writer = _WriteBehind(download) if ring is None else None
        if ring is not None:
            self._nursery.start_soon(ring.write_blocks)
        try:
            if ring is not None:
                async for at, chunk in self._stream(file):
                    await ring.put(at, chunk)
                ring.finish()
                await ring.settle()
                if ring.error is not None:
                    raise ring.error
                on_disk = ring.written
            else:
                assert writer is not None
                await self._write_behind(download, writer)
                on_disk = download.available
            if on_disk != file.bytes:
                raise OSError(errno.EIO, f"the server sent {on_disk} bytes of "
                                         f"{file.id}, its size is {file.bytes}")
            self.disk.add(file.id, download.partial)
        except BaseException as exc:
            download.error = exc if isinstance(exc, Exception) else OSError(
                errno.EINTR, "the download was interrupted")
            download.partial.unlink(missing_ok=True)
            if not isinstance(exc, Exception):
                raise
            log.debug("download of %s failed: %s", file.id, exc)
        finally:
            # the descriptor is closed (and the ring's memory lent again) only once no worker
            # thread writes to it any more
            if ring is not None:
                ring.finish()
                await ring.settle()
                download.ring = None
                self._rings.give_back(ring.memory)
            elif writer is not None:
                await writer.settle()
            for fd in (download.fd, download.read_fd):
                if fd >= 0:
                    os.close(fd)
            download.fd = download.read_fd = -1
            if self._downloads.get(file.id) is download:
                del self._downloads[file.id]
            download.done.set()
            download.advance(download.available)

    async def _write_behind(self, download: Download, writer: _WriteBehind) -> None:
        """Receive the body into the partial file through the page cache."""
        pending: list[bytes] = []
        pending_at = 0
        pending_size = 0
        async for at, chunk in self._stream(download.file):
            if not pending:
                pending_at = at
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= WRITE_BATCH:
                await writer.write(pending_at, pending)
                pending, pending_size = [], 0
        if pending:
            await writer.write(pending_at, pending)
        await writer.wait()

    async def _read_following(self, download: Download, offset: int,
                              end: int) -> bytes | memoryview:
        await download.wait_until(end)
        if download.ring is not None:
            piece = download.ring.get(offset, end)
            if piece is not None:
                return piece
            # gone from the ring, so already on disk
            self.stats.ring_misses += 1
            return os.pread(download.read_fd, end - offset, offset)
        if download.fd >= 0:        # still running: read what it has written
            return os.pread(download.fd, end - offset, offset)
        if download.error is not None:
            # it failed after receiving these bytes: its ring is gone and its partial file
            # deleted, so the reader gets the download's error (not ENOENT from the cache)
            raise download.error
        return self._pread_cached(download.file.id, offset, end - offset)

    def _pread_cached(self, file_id: str, offset: int, size: int) -> bytes:
        # The bytes were just downloaded or were read before: they sit in the page cache, and a
        # pread of them costs less than a hop to a worker thread would.
        fd = self._open_fds.get(file_id)
        if fd is None:
            fd = os.open(self.disk.path(file_id), os.O_RDONLY | os.O_CLOEXEC)
            self._open_fds[file_id] = fd
        self.disk.touch(file_id)
        return os.pread(fd, size, offset)

    # ------------------------------------------------------------- blocks

    async def _read_blocks(self, file: FileObject, offset: int, end: int) -> bytes:
        """Serve a read from memory blocks, fetching the missing ones with Range.

        A read that starts where the previous read of the file ended is sequential: its fetch
        also takes the next blocks, a window that doubles with each sequential read (up to
        :data:`MAX_READ_AHEAD_BLOCKS`, and a quarter of the memory cache), so a large file read
        through memory costs a few requests instead of one per block. A fetch in flight is
        shared by every reader waiting for one of its blocks.
        """
        first, last = offset // BLOCK_SIZE, (end - 1) // BLOCK_SIZE
        ahead = self._read_ahead(file.id, offset, end)
        final = (file.bytes - 1) // BLOCK_SIZE
        pieces = []
        hit = True
        for index in range(first, last + 1):
            block = self.memory.get((file.id, index))
            if block is None:
                hit = False
                fetch = self._fetches.get((file.id, index))
                if fetch is None:
                    stop = index
                    while stop < min(last + ahead, final) and \
                            (file.id, stop + 1) not in self.memory and \
                            (file.id, stop + 1) not in self._fetches:
                        stop += 1
                    block = (await self._fetch_blocks(file, index, stop))[index]
                else:
                    block = (await fetch.result())[index]
            lo = max(offset - index * BLOCK_SIZE, 0)
            hi = min(end - index * BLOCK_SIZE, len(block))
            pieces.append(block[lo:hi])
        if hit:
            self.stats.memory_hits += 1
        return b"".join(pieces)

    def _read_ahead(self, file_id: str, offset: int, end: int) -> int:
        """How many blocks beyond this read to fetch: 0 for a random read."""
        previous_end, window = self._sequence.get(file_id, (-1, 0))
        limit = max(0, min(MAX_READ_AHEAD_BLOCKS, self.memory.maxsize // BLOCK_SIZE // 4))
        if offset == previous_end:
            window = min(max(1, window * 2), limit)
        else:
            window = 0
        self._sequence[file_id] = (end, window)
        return window if self.memory_enabled else 0

    async def _fetch_blocks(self, file: FileObject, first: int, last: int) -> dict[int, bytes]:
        """Blocks ``first..last`` with one ranged request, kept in the memory cache when it is
        on; readers of any of these blocks wait for this fetch instead of starting their own."""
        fetch = _Fetch()
        keys = [(file.id, index) for index in range(first, last + 1)]
        for key in keys:
            self._fetches[key] = fetch
        self.stats.block_fetches += 1
        start = first * BLOCK_SIZE
        stop = min((last + 1) * BLOCK_SIZE, file.bytes)
        buffer = bytearray()
        try:
            async for at, chunk in self._stream(file, offset=start, length=stop - start):
                # a server that ignores Range sends from byte 0: keep only our blocks
                lo = max(0, start - at)
                hi = max(0, min(len(chunk), stop - at))
                if hi > lo:
                    buffer += chunk[lo:hi]
            blocks = {}
            for index in range(first, last + 1):
                lo = (index - first) * BLOCK_SIZE
                blocks[index] = bytes(buffer[lo:lo + BLOCK_SIZE])
                if self.memory_enabled:
                    self.memory[(file.id, index)] = blocks[index]
            fetch.blocks = blocks
            return blocks
        except Exception as exc:
            fetch.error = exc
            raise
        finally:
            for key in keys:
                if self._fetches.get(key) is fetch:
                    del self._fetches[key]
            fetch.done.set()

    # ----------------------------------------------------- writes and deletes

    def adopt(self, file: FileObject, path: Path) -> bool:
        """The bytes of a file we just uploaded, moved into the cache (no download needed)."""
        if not self.disk.enabled:
            return False
        return self.disk.add(file.id, path)

    def pin(self, file_id: str) -> None:
        self.disk.pin(file_id)

    def unpin(self, file_id: str) -> None:
        self.disk.unpin(file_id)
        if not self.disk.is_pinned(file_id):
            fd = self._open_fds.pop(file_id, None)
            if fd is not None:
                os.close(fd)

    def discard(self, file_id: str) -> None:
        """The file was deleted: it leaves the memory cache now and the disk cache as soon as
        no handle has it open."""
        for key in [key for key in self.memory if key[0] == file_id]:
            self.memory.pop(key, None)
        self._sequence.pop(file_id, None)
        self.disk.discard(file_id)

    def statistics(self) -> dict[str, object]:
        return {**self.stats.as_dict(), "memory_bytes": self.memory.currsize,
                "memory_limit": self.memory.maxsize, "disk_bytes": self.disk.used,
                "disk_limit": self.disk.capacity, "downloads_running": len(self._downloads),
                "downloading": [download.as_dict() for download in self._downloads.values()]}

    def close(self) -> None:
        for fd in self._open_fds.values():
            os.close(fd)
        self._open_fds.clear()
        self._rings.close()


class _WriteBehind:
    """A download's disk writes, one at a time in a worker thread, each overlapping the receipt
    of the next piece (a download that waited for every write before reading its socket again
    left the network idle while the disk worked). Readers following the download are let on
    only once a piece is written."""

    def __init__(self, download: Download) -> None:
        self.download = download
        self._done: trio.Event | None = None
        self._outcome: outcome.Outcome | None = None
        self._end = 0

    async def write(self, at: int, pieces: list[bytes]) -> None:
        """Start writing ``pieces`` at ``at`` once the write before has finished (raising what
        that one raised)."""
        await self.wait()
        token = trio.lowlevel.current_trio_token()
        done = self._done = trio.Event()

        def deliver(result: outcome.Outcome) -> None:       # in the worker thread
            self._outcome = result
            token.run_sync_soon(done.set)

        self._end = at + sum(len(piece) for piece in pieces)
        trio.lowlevel.start_thread_soon(
            lambda: _pwritev_all(self.download.fd, pieces, at), deliver)

    async def wait(self) -> None:
        """Wait for the write in flight, if any, and raise what it raised."""
        await self.settle()
        result, self._outcome = self._outcome, None
        if result is not None:
            result.unwrap()
            self.download.advance(max(self.download.available, self._end))

    async def settle(self) -> None:
        """Wait for the write in flight to end; not cancellable, since its thread goes on
        using the descriptor whatever happens here."""
        if self._done is not None:
            with trio.CancelScope(shield=True):
                await self._done.wait()
            self._done = None


def _pwritev_all(fd: int, pieces: list[bytes], offset: int) -> None:
    views = [memoryview(piece) for piece in pieces if piece]
    while views:
        written = os.pwritev(fd, views, offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]
