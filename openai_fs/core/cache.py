"""File content, fetched as it is read and kept: on disk by range, and in a memory cache of blocks.

A file id's bytes never change, so nothing here is ever revalidated; content leaves only when
space is needed or the file is deleted.

* **Streams.** Bytes come from the server in *streams*: sequential transfers into the disk
  cache that start where a read needs bytes the mount does not hold. A stream fetches a
  *window* at a time: the first covers the read that started it; each later read that reaches
  into the newest window asks for the next one, twice as large (up to :data:`MAX_WINDOW`), so
  a sequential reader is served by a few growing requests while a reader that looks at a few
  kilobytes costs a block or so. Readers wait only until the bytes they asked for are in.
* **With Range** (the server answered a ranged request with a 206 and a matching
  ``Content-Range``; learned per server), each window is one ranged request. A read far from
  every stream starts a stream of its own there; streams stop where bytes are already held or
  where another stream begins, so no byte is fetched twice, and a later read of the whole file
  fetches only what is missing.
* **Without Range** (the real service's default) a download cannot start mid-file, so a file
  has one stream, one ``GET`` from byte 0, which is *paused* (not read further, the connection
  kept) once it is a window ahead of its readers, and goes on when they do: a paused ``less``
  does not cost a new download. Once the last handle of the file closes, the stream stops at
  the end of its window, or if a handle reopens within :data:`LINGER_SECONDS` goes on. A read
  far ahead waits for the stream to pass it (every byte before it is needed anyway) and keeps
  them all. What a stream fetched stays, as a prefix, for later readers; a stream started
  later (a new ``GET`` from 0) keeps only the bytes after it.
* **Partial files.** A file the mount holds only in part is a sparse file in the disk cache
  whose ranges are kept in memory (:class:`~openai_fs.core.ranges.RangeSet`); once all its
  bytes are there it becomes a whole file, reused by later mounts (see
  :class:`~openai_fs.core.disk_cache.DiskCache`).
* **Large streams** keep their newest 16 MiB in memory, where the readers following them are
  answered, and write to the disk cache with ``O_DIRECT`` (see :mod:`openai_fs.core.download_ring`):
  the page cache is not filled twice with one file, and no byte is copied back out of it.
* **Blocks.** A file that does not fit the disk cache is read through a memory LRU of 1 MiB
  blocks bounded in bytes (``--cache-size``), fetched with ``Range`` in windows that double
  for a sequential reader.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import time
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import cachetools
import trio

from openai_fs.api import DownloadRefusedError, FileObject, FilesClient
from openai_fs.api.content import ContentStream
from openai_fs.core.content_access import ContentAccess, ContentRefused
from openai_fs.core.disk_cache import DiskCache, hold_partial
from openai_fs.core.download_ring import RING_BYTES, RingDownload, RingPool, direct_io
from openai_fs.core.errors import FSError
from openai_fs.core.stream_sinks import PlainSink, RingSink, Sink
from openai_fs.core.streams import BLOCK_SIZE, Partial, Stream, align_down, align_up

log = logging.getLogger(__name__)

#: a stream whose last handle closed goes this far at most beyond its furthest reader ...
EXTRA_AFTER_CLOSE = 8 * BLOCK_SIZE
#: ... and then waits this long for a handle to come back before it stops
LINGER_SECONDS = 10.0
#: streams a file may have at once (with Range); a new one ends the one idle longest
MAX_STREAMS = 8
#: sequential reads served in blocks fetch ahead by a window that doubles up to this many
#: blocks (and to a quarter of the memory cache)
MAX_READ_AHEAD_BLOCKS = 16


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
    #: streams started (each one or more requests)
    downloads: int = 0
    #: streams that went through a ring and O_DIRECT writes
    ring_downloads: int = 0
    #: reads of such a stream that had fallen so far behind it that they were read from disk
    ring_misses: int = 0
    block_fetches: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


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
        #: --cache-size: blocks and rings together stay within it
        self.memory_budget = memory_bytes
        # Rings for large streams come out of the memory budget: up to two, while they take
        # no more than half of it.
        self._rings = RingPool(min(2, memory_bytes // (2 * RING_BYTES)))
        self.memory: cachetools.LRUCache[tuple[str, int], bytes] = cachetools.LRUCache(
            maxsize=max(memory_bytes - self._rings.count * RING_BYTES, 1), getsizeof=len)
        #: whether the disk cache's filesystem takes O_DIRECT writes (None: not tried yet)
        self._direct_io: bool | None = None
        self.memory_enabled = memory_bytes >= BLOCK_SIZE
        self._nursery = nursery
        #: files held in part on disk (and being fetched), by id
        self._partials: dict[str, Partial] = {}
        #: open handles by file id (a stream without Range waits for them, see Stream)
        self._handles: dict[str, int] = {}
        #: (file id, block) -> the fetch in flight that brings that block
        self._fetches: dict[tuple[str, int], _Fetch] = {}
        #: file id -> (where its last block read ended, the read-ahead window in blocks)
        self._sequence: cachetools.LRUCache[str, tuple[int, int]] = cachetools.LRUCache(4096)
        self._open_fds: dict[str, int] = {}
        self.stats = CacheStatistics()
        disk.on_partial_removed = self._forget_partial

    # ----------------------------------------------------------------- reads

    async def read(self, file: FileObject, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset+size)`` of ``file`` (fewer at its end)."""
        piece = await self.read_for_reply(file, offset, size)
        return bytes(piece) if isinstance(piece, memoryview) else piece

    async def read_for_reply(self, file: FileObject, offset: int,
                             size: int) -> bytes | memoryview:
        """As :meth:`read`, but possibly a view of a stream's ring, which stays valid only
        until the caller next awaits: made for a FUSE reply, which pyfuse3 copies to the
        kernel before anything else runs, and saves copying every byte once more."""
        _refuse_untrusted(file)
        if offset >= file.bytes or size <= 0:
            return b""
        end = min(offset + size, file.bytes)
        while True:
            if self.disk.has(file):
                piece = self._pread_cached(file.id, offset, end - offset)
                if piece is not None:
                    self.stats.disk_hits += 1
                    return piece
                continue        # the copy was gone: fetched again below
            if not self.disk.fits(file.bytes):
                return await self._read_blocks(file, offset, end)
            partial = self._partials.get(file.id) or self._new_partial(file)
            piece = await self._read_partial(partial, offset, end)
            if piece is not None:
                return piece
            # the partial file became whole, or was evicted, while this read waited: again

    async def fetch_whole(self, file: FileObject) -> bool:
        """Make sure the whole file is in the disk cache (used before deleting a file that is
        still open). False when it cannot be kept there, or when the server's entry for it
        cannot be trusted (its content is never read)."""
        if file.problem is not None:
            return False
        while not self.disk.has(file):
            if not self.disk.fits(file.bytes):
                return False
            partial = self._partials.get(file.id) or self._new_partial(file)
            if await self._read_partial(partial, 0, file.bytes, keep=False) is not None:
                while self._partials.get(file.id) is partial and (
                        partial.streams or partial.error is not None):
                    if partial.error is not None:
                        raise partial.error
                    await partial.wait_changed()
                self._settle(partial)
        return True

    async def copy_into(self, file: FileObject, path: Path, fd: int) -> None:
        """Write the whole content of ``file`` into the local file ``path`` (open as ``fd``):
        copied from the disk cache when it is there, else streamed from the server. An empty
        file needs nothing (and nothing is lost if it is gone from the server since)."""
        _refuse_untrusted(file)
        if file.bytes == 0:
            return
        if self.disk.has(file):
            try:
                await trio.to_thread.run_sync(shutil.copyfile, self.disk.path(file.id), path)
                return
            except FileNotFoundError:   # gone from the folder (see _pread_cached): fetched
                self.disk.remove_index(file.id)
        at = 0
        async for _, chunk in self._stream(file):
            await trio.to_thread.run_sync(os.pwrite, fd, chunk, at)
            at += len(chunk)

    def holds(self, file: FileObject) -> bool:
        """Whether the mount has all of ``file``'s bytes without asking the server."""
        return self.disk.holds(file)

    async def _stream(self, file: FileObject, *, offset: int = 0, length: int | None = None,
                      ask_end: int | None = None) -> AsyncIterator[tuple[int, bytes]]:
        """The client's content stream of ``file``, minding which purposes the server refuses:
        none is asked for once its purpose is known refused, and a refusal teaches that."""
        if self.access.state(file.purpose) is False:
            raise ContentRefused(f"{file.purpose}/{file.filename}", file.purpose)
        served = False
        try:
            async with aclosing(self.client.stream_content(
                    file.id, offset=offset, length=length, ask_end=ask_end)) as chunks:
                async for at, chunk in chunks:
                    if not served:
                        self.access.served(file.purpose)
                        served = True
                    yield at, chunk
        except DownloadRefusedError as exc:
            self.access.refused(file.purpose, exc.message)
            raise ContentRefused(f"{file.purpose}/{file.filename}", file.purpose) from None

    @asynccontextmanager
    async def _content(self, file: FileObject, *, offset: int = 0, ask_end: int | None = None
                       ) -> AsyncIterator[ContentStream]:
        """As :meth:`_stream`, but the body is received into memory the caller hands over
        (:meth:`ContentStream.readinto`); the first request is answered before this yields."""
        if self.access.state(file.purpose) is False:
            raise ContentRefused(f"{file.purpose}/{file.filename}", file.purpose)
        try:
            async with self.client.open_content(file.id, offset=offset,
                                                ask_end=ask_end) as body:
                await body.begin()
                self.access.served(file.purpose)
                yield body
        except DownloadRefusedError as exc:
            self.access.refused(file.purpose, exc.message)
            raise ContentRefused(f"{file.purpose}/{file.filename}", file.purpose) from None

    def _pread_cached(self, file_id: str, offset: int, size: int) -> bytes | None:
        """Bytes of a whole copy in the disk cache; None when the copy is gone from the folder
        (another mount sharing it evicted it, or somebody removed it): it is forgotten."""
        # The bytes were just downloaded or were read before: they sit in the page cache, and a
        # pread of them costs less than a hop to a worker thread would.
        fd = self._open_fds.get(file_id)
        if fd is None:
            try:
                fd = os.open(self.disk.path(file_id), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                log.info("the cached copy of %s is gone from %s; fetching it again", file_id,
                         self.disk.folder)
                self.disk.remove_index(file_id)
                return None
            self._open_fds[file_id] = fd
        self.disk.touch(file_id)
        return os.pread(fd, size, offset)

    # ------------------------------------------------------- partial files

    def _new_partial(self, file: FileObject) -> Partial:
        path = self.disk.partial_path(file.id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        hold_partial(fd)
        partial = Partial(file, path, fd)
        self.disk.add_partial(file.id, path)
        self._partials[file.id] = partial
        return partial

    async def _read_partial(self, partial: Partial, offset: int, end: int, *,
                            keep: bool = True) -> bytes | memoryview | None:
        """Bytes ``[offset, end)`` of a partly held file, once they are there (``keep=False``:
        only wait for that, and answer ``b""``); None when the partial file became whole or
        went away meanwhile."""
        waited_on: Stream | None = None
        while True:
            if waited_on is not None and waited_on.done and not partial.present.covers(offset, end):
                if waited_on.error is not None:
                    raise waited_on.error
                if waited_on.pos == waited_on.start and not waited_on.stopping:
                    # it ended without bringing a byte: asking again would only spin
                    raise OSError(errno.EIO, f"no bytes of {partial.file.id} from "
                                             f"{waited_on.start} could be fetched")
            if partial.error is not None:
                raise partial.error
            if self._partials.get(partial.file.id) is not partial:
                return None
            piece = self._gather(partial, offset, end) if keep else (
                b"" if partial.present.covers(offset, end) else None)
            gap = None if piece is not None else partial.missing(offset, end)
            stream = self._stream_for(partial, offset, end, gap)
            if piece is not None:
                return piece
            waited_on = stream or waited_on
            await partial.wait_changed()

    def _gather(self, partial: Partial, offset: int, end: int) -> bytes | memoryview | None:
        """``[offset, end)`` from the partial file and the rings of its streams; None unless
        all of it is there. A ring's bytes come as a view (see :meth:`read_for_reply`)."""
        pieces: list[bytes | memoryview] = []
        at = offset
        while at < end:
            for stream in partial.streams:
                ring = stream.ring
                if ring is not None and ring.held_end(at) > at:
                    take = min(ring.held_end(at), end)
                    piece = ring.get(at, take)
                    assert piece is not None
                    pieces.append(piece)
                    at = take
                    break
            else:
                held = partial.present.run_end(at)
                if held == at:
                    return None
                take = min(held, end)
                if any(stream.ring is not None and stream.ring.base <= at
                       for stream in partial.streams):
                    self.stats.ring_misses += 1     # a reader the ring left behind
                pieces.append(os.pread(partial.read_fd, take - at, at))
                at = take
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _stream_for(self, partial: Partial, offset: int, end: int,
                    gap: int | None) -> Stream | None:
        """The stream that serves a read of ``[offset, end)`` whose first missing byte is
        ``gap`` (None: nothing is missing), told how far the reader wants; a new one when a
        missing byte is out of every stream's reach."""
        at = offset if gap is None else gap
        best = None
        for stream in partial.streams:
            if stream.done or stream.start > at:
                continue
            reach = stream.serves(at) if gap is not None else (
                not stream.stopping and (not stream.ranged or at < stream.limit + stream.window))
            if reach and (best is None or stream.start > best.start):
                best = stream
        if best is not None:
            best.want(end)
            return best
        if gap is None:
            return None
        return self._start_stream(partial, gap, end)

    def _start_stream(self, partial: Partial, gap: int, end: int) -> Stream:
        file = partial.file
        ranged = self.client.range_supported is not False
        # without Range every byte before the gap comes too: keep them all, from the first one
        # not held (a stream starts at a block, where the ring's O_DIRECT writes can start)
        first = gap if ranged else partial.present.first_missing(0, gap)
        start = align_down(gap if first is None else first)
        if ranged:
            # not into bytes held (a stream that broke mid-block left some): from where they end
            start = partial.present.run_end(start)
        limit = min(file.bytes, align_up(end))
        stream = Stream(partial, start=start, limit=limit,
                        window=max(BLOCK_SIZE, limit - start), ranged=ranged)
        stream.wanted = end
        live = [other for other in partial.streams if not other.stopping]
        if len(live) >= MAX_STREAMS:
            min(live, key=lambda other: other.idle_since).stop()
        partial.streams.append(stream)
        self.disk.pin(file.id)
        self.stats.downloads += 1
        self._nursery.start_soon(self._run_stream, stream)
        return stream

    async def _run_stream(self, stream: Stream) -> None:
        partial = stream.partial
        file = partial.file
        try:
            with stream.scope:
                stream.fd = os.open(partial.path, os.O_WRONLY | os.O_CLOEXEC)
                while stream.pos < stream.size:
                    if stream.pos >= stream.limit or stream.stopping:
                        if not await self._wait_for_readers(stream):
                            break
                        continue
                    if stream.ranged:
                        end = self._window_end(stream)
                        if end <= stream.pos:
                            break       # it ran into bytes held, or into another stream
                        if not await self._transfer(stream, end):
                            break
                        if stream.ranged and end == stream.size and stream.pos < end:
                            raise OSError(errno.EIO, f"the server sent {stream.pos} bytes of "
                                                     f"{file.id}, its size is {file.bytes}")
                    elif not await self._transfer(stream, None):
                        break
                    elif stream.pos < stream.size:
                        raise OSError(errno.EIO, f"the server sent {stream.pos} bytes of "
                                                 f"{file.id}, its size is {file.bytes}")
        except Exception as exc:
            stream.error = exc
        except BaseException:
            stream.error = OSError(errno.EINTR, "the download was interrupted")
            raise
        finally:
            with trio.CancelScope(shield=True):
                if stream.sink is not None:
                    try:
                        await stream.sink.close()
                    except Exception as exc:    # noqa: BLE001 - a disk failure, kept below
                        stream.error = stream.error or exc
                    if stream.ring is not None:
                        self._rings.give_back(stream.ring.memory)
                        stream.ring = None
            if stream.fd >= 0:
                os.close(stream.fd)
                stream.fd = -1
            stream.done = True
            partial.streams.remove(stream)
            if stream.error is not None:
                log.debug("stream of %s from %d failed: %s", file.id, stream.start,
                          stream.error)
                # the server failed (after its retries), the disk did, or the server sent what
                # the file cannot be: readers waiting on this file get the error, no partial
                # copy is kept, and the next read starts afresh
                partial.error = stream.error
            self._settle(partial)
            self.disk.unpin(file.id)

    def _settle(self, partial: Partial) -> None:
        """After a stream ended: a partial file that holds every byte becomes whole; one that
        failed, or holds nothing and is not being filled, goes."""
        file = partial.file
        if self._partials.get(file.id) is not partial:
            partial.changed()
            return
        if partial.error is not None:
            for stream in partial.streams:
                stream.stop()
                stream.scope.cancel()
            if not partial.streams:
                self.disk.remove(file.id)
        elif partial.present.covers(0, file.bytes):
            for stream in partial.streams:
                stream.stop()   # idle ones; none can be fetching what is all there
            if not partial.streams:
                self._close_partial(partial)
                self.disk.complete(file.id)
                log.debug("%s is whole in the disk cache", file.id)
        elif partial.present.total == 0 and not partial.streams:
            self.disk.remove(file.id)
        partial.changed()

    def _forget_partial(self, file_id: str) -> None:
        """The disk cache removed a partial file (evicted, or its file deleted)."""
        partial = self._partials.pop(file_id, None)
        if partial is not None:
            for stream in partial.streams:
                stream.stop()
                stream.scope.cancel()
            self._close_partial(partial)
            partial.changed()

    def _close_partial(self, partial: Partial) -> None:
        self._partials.pop(partial.file.id, None)
        if partial.read_fd >= 0:
            os.close(partial.read_fd)
            partial.read_fd = -1

    def _window_end(self, stream: Stream) -> int:
        """Where the next request of a stream with Range ends: at its limit, or where bytes
        already held or another stream's begin."""
        partial = stream.partial
        if partial.present.run_end(stream.pos) > stream.pos:
            return stream.pos
        end = stream.limit
        held = partial.present.next_start(stream.pos)
        if held is not None:
            end = min(end, held)
        for other in partial.streams:
            if other is not stream and not other.done and other.start > stream.pos:
                end = min(end, other.start)
        return end

    async def _transfer(self, stream: Stream, end: int | None) -> bool:
        """One request of ``stream``: with Range, its window up to ``end``; without, the whole
        file from 0, read only as far as the stream's limit (bytes before the stream's start
        are dropped). The body is received straight into the stream's sink (its ring, or the
        buffer of its next disk write). False when the stream stopped before the body ended."""
        file = stream.partial.file
        if stream.ranged:
            assert end is not None
            # the last window is asked open-ended, so a server whose file is longer than the
            # listing says cannot go unnoticed
            offset, ask_end = stream.pos, (None if end >= file.bytes else end)
        else:
            offset, ask_end = 0, None
        async with self._content(file, offset=offset, ask_end=ask_end) as body:
            if stream.ranged and self.client.range_supported is False:
                # the server ignored Range and sends the whole file: the stream goes on with
                # this body as a download from 0, keeping every byte it lacks
                stream.ranged = False
                if stream.sink is None:
                    first = stream.partial.present.first_missing(0, stream.pos)
                    if first is not None:
                        stream.start = stream.pos = align_down(first)
            assert body.position is not None
            if body.position > stream.pos:
                raise OSError(errno.EIO, f"expected bytes from {stream.pos}, "
                                         f"got {body.position}")
            if body.position < stream.pos and not await _skip(body, stream.pos):
                return True
            while stream.pos < file.bytes:
                if not stream.ranged and (stream.pos >= stream.limit or stream.stopping):
                    if not await self._wait_for_readers(stream):
                        return False
                    continue
                if stream.sink is None:
                    stream.sink = self._sink_for(stream)
                room = await stream.sink.reserve(stream.pos)
                until = file.bytes if stream.ranged else min(file.bytes, stream.limit)
                count = await body.readinto(room[:until - stream.pos])
                if not count:
                    return True
                if stream.pos + count == file.bytes and \
                        await body.readinto(memoryview(bytearray(1))):
                    # the file's last bytes count only once the body is seen to end there
                    raise OSError(errno.EIO, f"the server sent more than the {file.bytes} "
                                             f"bytes of {file.id}")
                stream.sink.commit(count)
                stream.pos += count
        return True

    async def _wait_for_readers(self, stream: Stream) -> bool:
        """A stream at its limit waits for a reader to move it on; False when it should stop
        instead. Without Range it waits as long as the file is open (its connection cannot be
        had back without fetching from 0 again), and :data:`LINGER_SECONDS` after that; with
        Range, which costs only a request to go on later, never longer than that."""
        if stream.sink is not None:
            await stream.sink.flush()   # readers get what arrived before the stream waits
        stream.idle_since = time.monotonic()
        while stream.pos >= stream.limit or stream.stopping:
            if stream.stopping:
                return False
            if not stream.ranged and self._handles.get(stream.partial.file.id, 0) > 0:
                await stream.wait_moved()
                continue
            with trio.move_on_after(LINGER_SECONDS) as waiting:
                await stream.wait_moved()
            if waiting.cancelled_caught:
                return False
        return True

    def _sink_for(self, stream: Stream) -> Sink:
        """Where a stream's bytes go: through a ring and O_DIRECT writes for a large file, when
        a ring is free and the disk cache's filesystem takes O_DIRECT; else the page cache."""
        partial = stream.partial
        file = partial.file
        if file.bytes > RING_BYTES and self._direct_io is not False and \
                stream.pos % BLOCK_SIZE == 0:
            memory = self._rings.take()
            if memory is not None:
                if self._direct_io is None:
                    self._direct_io = self._probe_direct_io()
                try:
                    if self._direct_io and direct_io(stream.fd, probe=False):
                        on_disk = [stream.pos]

                        def changed() -> None:
                            if ring.written > on_disk[0]:
                                self._add_present(partial, on_disk[0], ring.written)
                                on_disk[0] = ring.written
                            partial.changed()

                        ring = RingDownload(memory, stream.fd, file.bytes, changed=changed,
                                            wait_change=partial.wait_changed, base=stream.pos)
                        stream.ring = ring
                        self.stats.ring_downloads += 1
                        return RingSink(ring, self._nursery)
                except OSError as exc:
                    log.debug("no direct writes to %s: %s", partial.path, exc)
                self._rings.give_back(memory)
        return PlainSink(stream.fd, lambda at, end: self._add_present(partial, at, end),
                          size=file.bytes - stream.pos)

    def _probe_direct_io(self) -> bool:
        """Whether the disk cache's filesystem takes O_DIRECT writes (tried on a scratch file,
        since the probe writes and truncates)."""
        probe = self.disk.folder / f".probe-{secrets.token_hex(4)}.partial"
        try:
            fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError:
            return False
        try:
            return direct_io(fd)
        except OSError as exc:
            log.debug("no direct writes to %s: %s", self.disk.folder, exc)
            return False
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)

    def _add_present(self, partial: Partial, start: int, end: int) -> None:
        before = partial.present.total
        partial.present.add(start, end)
        if self._partials.get(partial.file.id) is partial:
            self.disk.grow(partial.file.id, partial.present.total - before)
        partial.changed()

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
        """A handle of the file opened."""
        self.disk.pin(file_id)
        self._handles[file_id] = self._handles.get(file_id, 0) + 1

    def unpin(self, file_id: str) -> None:
        """A handle of the file closed. Once the last has, a stream without Range goes on at
        most :data:`EXTRA_AFTER_CLOSE` beyond its furthest reader, then waits for a new
        handle a while (see _wait_for_readers)."""
        count = self._handles.get(file_id, 0) - 1
        if count > 0:
            self._handles[file_id] = count
        else:
            self._handles.pop(file_id, None)
            partial = self._partials.get(file_id)
            for stream in partial.streams if partial is not None else ():
                if not stream.ranged:
                    reader = max(stream.pos, align_up(stream.wanted))
                    stream.limit = min(stream.limit, reader + EXTRA_AFTER_CLOSE)
                stream.moved()
        self.disk.unpin(file_id)
        if not self.disk.is_pinned(file_id):
            fd = self._open_fds.pop(file_id, None)
            if fd is not None:
                os.close(fd)

    def discard(self, file_id: str) -> None:
        """The file was deleted: it leaves the memory cache now and the disk cache as soon as
        no handle has it open (or stream fills it)."""
        for key in [key for key in self.memory if key[0] == file_id]:
            self.memory.pop(key, None)
        self._sequence.pop(file_id, None)
        self.disk.discard(file_id)

    def statistics(self) -> dict[str, object]:
        """What the caches hold. Memory is counted one way everywhere: ``memory_bytes`` is
        the blocks plus the rings that exist, ``memory_limit`` is ``--cache-size``, and the
        parts say what is in it."""
        rings = self._rings.mapped * RING_BYTES
        streams = [stream for partial in self._partials.values() for stream in partial.streams]
        return {**self.stats.as_dict(), "memory_bytes": self.memory.currsize + rings,
                "memory_limit": self.memory_budget,
                "memory_blocks_bytes": self.memory.currsize,
                "memory_blocks_limit": self.memory.maxsize,
                "memory_blocks": len(self.memory),
                "memory_block_files": len({file_id for file_id, _ in self.memory}),
                "memory_rings_bytes": rings, "memory_rings_in_use": self._rings.lent,
                "memory_rings_max": self._rings.count, "memory_ring_size": RING_BYTES,
                "disk_bytes": self.disk.used,
                "disk_limit": self.disk.capacity, "downloads_running": len(streams),
                "downloading": [stream.as_dict() for stream in streams]}

    def close(self) -> None:
        for fd in self._open_fds.values():
            os.close(fd)
        self._open_fds.clear()
        for partial in list(self._partials.values()):
            self._close_partial(partial)
        self._rings.close()


async def _skip(body: ContentStream, position: int) -> bool:
    """Read and drop a body's bytes up to ``position``; False when it ended before."""
    scratch = memoryview(bytearray(min(BLOCK_SIZE, max(1, position - (body.position or 0)))))
    while (body.position or 0) < position:
        if not await body.readinto(scratch[:position - (body.position or 0)]):
            return False
    return True
