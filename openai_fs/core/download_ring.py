"""A large download's newest bytes, kept in page-aligned memory and written to disk directly.

A download written to the disk cache the ordinary way costs two extra copies of every byte: into
the page cache of the cache file (pages that must first be allocated), and back out of it for the
reader that follows the download. This module avoids both for large files:

* the bytes received go into a ring of :data:`SLOTS` blocks of :data:`BLOCK_BYTES` in anonymous,
  page-aligned memory, received there by the HTTP client itself (:meth:`RingDownload.reserve`,
  ``recv_into``): no copy in Python on the way;
* each full block is written to the disk cache file with ``O_DIRECT`` (the device reads it from
  this memory; the page cache is left to the files the user reads);
* a reader following the download is answered with a view of the ring (no copy here; pyfuse3
  copies it straight into the reply);
* a block leaves the ring only once it is on disk, so a reader that fell behind finds its bytes
  there; and while a reader keeps reading, the download runs at most a ring ahead of it, so the
  usual reader (``cat``, ``cp``) never has to read them back.

Filesystems without ``O_DIRECT`` (tmpfs before Linux 6.6, some network filesystems) keep the
ordinary path; see :func:`direct_io`.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from collections.abc import Awaitable, Callable

import trio

BLOCK_BYTES = 1024 * 1024
#: blocks a ring holds: how far the download may run ahead of the disk, and how far behind it a
#: reader may fall and still be answered from memory
SLOTS = 16
RING_BYTES = SLOTS * BLOCK_BYTES
#: while a reader follows the download, the download waits for it rather than push bytes it
#: has not read yet out of the ring (they would then have to come back from disk): a reader
#: that has not read for this long no longer holds the download back at all ...
READER_IDLE = 0.25
#: ... and one that is slower than a block in this long holds it back no longer than that per
#: block. Only a reader nearly as fast as the network is worth following; a slow one reads
#: from disk later, and the connection is not kept open at the reader's pace (a server may
#: time out a response its client does not read).
BLOCK_WAIT = 0.1
#: ``O_DIRECT`` wants offsets, lengths and memory aligned to the device's logical block size;
#: a page is a multiple of every common one
ALIGNMENT = mmap.PAGESIZE


def direct_io(fd: int, *, probe: bool = True, on: bool = True) -> bool:
    """Switch the empty file ``fd`` to ``O_DIRECT``; False (and ``fd`` unchanged) where its
    filesystem cannot. Some filesystems accept the flag and refuse the first aligned write
    instead, so unless ``probe`` is off (the filesystem was found to take them), one is tried.
    ``on=False`` switches it back."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not on:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    if not probe:
        return True
    probe_page = mmap.mmap(-1, ALIGNMENT)
    try:
        os.pwrite(fd, probe_page, 0)
        os.ftruncate(fd, 0)
    except OSError as exc:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    finally:
        probe_page.close()
    return True


class RingPool:
    """At most ``count`` rings, made when first needed and reused by later downloads."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._idle: list[mmap.mmap] = []
        self._lent = 0

    def take(self) -> mmap.mmap | None:
        if self._idle:
            memory = self._idle.pop()
        elif self._lent < self.count:
            memory = mmap.mmap(-1, RING_BYTES)
        else:
            return None
        self._lent += 1
        return memory

    def give_back(self, memory: mmap.mmap) -> None:
        self._lent -= 1
        self._idle.append(memory)

    @property
    def lent(self) -> int:
        """Rings a download is passing through now."""
        return self._lent

    @property
    def mapped(self) -> int:
        """Rings that exist (lent, or kept for the next download): memory they hold."""
        return self._lent + len(self._idle)

    def close(self) -> None:
        for memory in self._idle:
            try:
                memory.close()
            except BufferError:     # a reply still holds a view; the memory goes with it
                pass
        self._idle.clear()


class RingDownload:
    """One stream's bytes on their way from the network to the disk cache file.

    The stream's bytes start at ``base`` (a multiple of :data:`BLOCK_BYTES`; 0 for a download of
    the whole file) and are kept at their own offsets in the file of ``size`` bytes. The
    receiving task receives the body in order where :meth:`reserve` says and then calls
    :meth:`commit` (or hands pieces over with :meth:`put`), and calls :meth:`finish` at the end;
    :meth:`write_blocks` runs beside it (in the cache's nursery) and writes each full block with
    ``O_DIRECT``. ``changed`` is called whenever ``received`` or ``written`` moves or the writer
    fails, so readers and the receiver can wait on one event.
    """

    def __init__(self, memory: mmap.mmap, fd: int, size: int, changed: Callable[[], None],
                 wait_change: Callable[[], Awaitable[None]], *, base: int = 0) -> None:
        if base % BLOCK_BYTES:
            raise ValueError(f"a ring starts at a block boundary, not at {base}")
        self.memory = memory
        self.fd = fd
        self.size = size
        self.base = base
        #: end of the bytes received so far: readers may have ``[base, received)``
        self.received = base
        #: end of the bytes on disk so far (from ``base``; whole blocks until the last)
        self.written = base
        self.error: Exception | None = None
        self._view = memoryview(memory)
        self._holds = [-1] * SLOTS      # the block of the file each slot holds
        self._changed = changed
        self._wait_change = wait_change
        self._receiving = True
        self._writer_done = trio.Event()
        #: where the furthest read from the ring ended, and when it was
        self._read_end = base
        self._read_at = -READER_IDLE
        self._reader_moved = trio.Event()

    # ------------------------------------------------------------ receiving

    async def reserve(self, at: int) -> memoryview:
        """Where the body's next bytes go (``at`` must be where the last ones ended): the rest
        of their block's slot, once that slot is free (its previous block on disk, and the
        reader given its chance: see _wait_for_reader). The receiver fills some of it (with
        ``recv_into``: no copy here) and calls :meth:`commit`."""
        if self.error is not None:
            raise self.error
        if at != self.received:
            raise OSError(errno.EIO, f"expected bytes from {self.received}, got {at}")
        if at >= self.size:
            raise OSError(errno.EIO, f"the server sent more than the file's {self.size} bytes")
        block, within = divmod(at, BLOCK_BYTES)
        slot = block % SLOTS
        if self._holds[slot] != block:
            # the slot still holds block - SLOTS until that block is on disk
            while self.written < (block - SLOTS + 1) * BLOCK_BYTES and self.error is None:
                await self._wait_change()
            if self.error is not None:
                raise self.error
            await self._wait_for_reader((block - SLOTS + 1) * BLOCK_BYTES)
            self._holds[slot] = block
        start = slot * BLOCK_BYTES + within
        return self._view[start:start + min(BLOCK_BYTES - within, self.size - at)]

    def commit(self, count: int) -> None:
        """``count`` bytes were put where :meth:`reserve` said."""
        within = self.received % BLOCK_BYTES
        self.received += count
        # waking readers and the writer for every piece received cost more than the piece:
        # they hear of whole blocks (and of the end)
        if within + count == BLOCK_BYTES or self.received == self.size:
            self._changed()

    async def put(self, at: int, chunk: bytes) -> None:
        """Take the next piece of the body (``at`` must be where the last one ended), copied
        in (see :meth:`reserve` for the way without a copy)."""
        if at + len(chunk) > self.size:
            raise OSError(errno.EIO, f"the server sent more than the file's {self.size} bytes")
        data = memoryview(chunk)
        while data:
            room = await self.reserve(at)
            count = min(len(room), len(data))
            room[:count] = data[:count]
            self.commit(count)
            at += count
            data = data[count:]

    async def _wait_for_reader(self, end: int) -> None:
        """Wait until the reader has read up to ``end``, unless it is idle or slow."""
        with trio.move_on_after(BLOCK_WAIT):
            while self._read_end < end:
                idle = trio.current_time() - self._read_at
                if idle >= READER_IDLE:
                    return
                with trio.move_on_after(READER_IDLE - idle):
                    await self._reader_moved.wait()

    def finish(self) -> None:
        """The body has ended (or failed): the writer stops once what can be written is."""
        self._receiving = False
        self._changed()

    async def settle(self) -> None:
        """Wait until the writer has stopped: only then may the descriptor close and the memory
        go to another download."""
        with trio.CancelScope(shield=True):
            await self._writer_done.wait()

    # -------------------------------------------------------------- writing

    async def write_blocks(self) -> None:
        """Write each block once it is complete (the last one once the body has ended); never
        raises: a failure is kept in ``error`` for the receiver and the readers."""
        try:
            while self.written < self.size:
                end = min(self.written + BLOCK_BYTES, self.size)
                if self.received < end:
                    if not self._receiving:
                        return
                    await self._wait_change()
                    continue
                slot = (self.written // BLOCK_BYTES) % SLOTS
                # every complete block up to the end of the ring goes in one write
                whole = min(self.received, self.size) // BLOCK_BYTES * BLOCK_BYTES
                end = max(end, min(whole, self.written + (SLOTS - slot) * BLOCK_BYTES))
                padded = -(-(end - self.written) // ALIGNMENT) * ALIGNMENT
                piece = self._view[slot * BLOCK_BYTES:slot * BLOCK_BYTES + padded]
                cut = self.size if padded != end - self.written else None
                await trio.to_thread.run_sync(_write_direct, self.fd, piece, self.written, cut)
                self.written = end
                self._changed()
        except Exception as exc:    # noqa: BLE001 - handed to the receiver and the readers
            self.error = exc
            self._changed()
        finally:
            self._writer_done.set()

    # -------------------------------------------------------------- reading

    def held_end(self, at: int) -> int:
        """The end of the bytes from ``at`` on that the ring can answer (``at``: none)."""
        if not self.base <= at < self.received:
            return at
        block = at // BLOCK_BYTES
        end = at
        while block * BLOCK_BYTES < self.received and self._holds[block % SLOTS] == block:
            end = min((block + 1) * BLOCK_BYTES, self.received)
            block += 1
        return end

    def get(self, offset: int, end: int) -> memoryview | bytes | None:
        """Bytes ``[offset, end)`` (all received) from the ring; None when some have left it,
        which means they are on disk. A view is valid until the caller next awaits."""
        first, last = offset // BLOCK_BYTES, (end - 1) // BLOCK_BYTES
        if any(self._holds[block % SLOTS] != block for block in range(first, last + 1)):
            return None
        if end > self._read_end:
            self._read_end = end
            self._read_at = trio.current_time()
            self._reader_moved.set()
            self._reader_moved = trio.Event()
        pieces = []
        for block in range(first, last + 1):
            base = (block % SLOTS) * BLOCK_BYTES
            lo = max(offset - block * BLOCK_BYTES, 0)
            hi = min(end - block * BLOCK_BYTES, BLOCK_BYTES)
            pieces.append(self._view[base + lo:base + hi])
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _write_direct(fd: int, piece: memoryview, offset: int, truncate_to: int | None) -> None:
    """Write an aligned piece with ``O_DIRECT`` (in a worker thread); the last block, padded to
    the alignment, is cut back to the file's size."""
    while piece:
        count = os.pwrite(fd, piece, offset)
        if count % ALIGNMENT:
            raise OSError(errno.EIO, f"a direct write stopped after {count} bytes")
        piece, offset = piece[count:], offset + count
    if truncate_to is not None:
        os.ftruncate(fd, truncate_to)
