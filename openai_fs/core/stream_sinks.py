"""Where a stream's bytes go on their way into the disk cache: through a download ring and
``O_DIRECT`` writes (:class:`RingSink`), or through the page cache in writes that overlap the
receipt of the next piece (:class:`PlainSink`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

import trio

from openai_fs.core.download_ring import RingDownload

if TYPE_CHECKING:
    import outcome       # trio's own dependency: what a worker thread hands back

#: downloaded bytes are written to disk in pieces of about this size: each piece is one hop to
#: a worker thread, and readers following a download wait for a whole piece (measured on a
#: cold read of 1 GiB: 4 MiB pieces cost more CPU and time than 1 MiB, with readers waiting
#: longer and more of pyfuse3's worker tasks piling up)
WRITE_BATCH = 1024 * 1024


class Sink:
    """Where a stream puts its bytes, in order: the partial file (see the two kinds below).
    The receiver asks where the bytes from ``at`` go (:meth:`reserve`), receives some there and
    says how many (:meth:`commit`)."""

    async def reserve(self, at: int) -> memoryview:
        raise NotImplementedError

    def commit(self, count: int) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        """Make what was put readable (the stream is about to wait)."""

    async def close(self) -> None:
        """Flush, and wait until nothing uses the descriptor any more; raises a disk failure."""


class RingSink(Sink):
    """Through a ring: readers are answered from its memory, full blocks go to disk with
    O_DIRECT (by the ring's writer task, started here)."""

    def __init__(self, ring: RingDownload, nursery: trio.Nursery) -> None:
        self.ring = ring
        nursery.start_soon(ring.write_blocks)

    async def reserve(self, at: int) -> memoryview:
        return await self.ring.reserve(at)

    def commit(self, count: int) -> None:
        self.ring.commit(count)

    async def close(self) -> None:
        self.ring.finish()
        await self.ring.settle()
        if self.ring.error is not None:
            raise self.ring.error


class PlainSink(Sink):
    """Through the page cache, in writes of about :data:`WRITE_BATCH` (see WriteBehind): the
    bytes are received into one of two buffers while the other is written."""

    def __init__(self, fd: int, on_written: Callable[[int, int], None], *, size: int) -> None:
        self.writer = WriteBehind(fd, on_written)
        capacity = max(1, min(WRITE_BATCH, size))
        self._buffers = [memoryview(bytearray(capacity)) for _ in range(2)]
        self._current = 0
        self._filled = 0
        self._at = 0

    async def reserve(self, at: int) -> memoryview:
        if self._filled == len(self._buffers[self._current]):
            await self._send()
        if not self._filled:
            self._at = at
        return self._buffers[self._current][self._filled:]

    def commit(self, count: int) -> None:
        self._filled += count

    async def _send(self) -> None:
        """Start writing the current buffer (once the write before, from the other buffer, is
        done) and receive into the other one."""
        if self._filled:
            piece = self._buffers[self._current][:self._filled]
            await self.writer.write(self._at, [piece])
            self._current ^= 1
            self._filled = 0

    async def flush(self) -> None:
        await self._send()
        await self.writer.wait()

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            await self.writer.settle()


class WriteBehind:
    """A stream's disk writes, one at a time in a worker thread, each overlapping the receipt
    of the next piece (a download that waited for every write before reading its socket again
    left the network idle while the disk worked). Readers following the stream are let on
    only once a piece is written (``on_written(start, end)``)."""

    def __init__(self, fd: int, on_written: Callable[[int, int], None]) -> None:
        self.fd = fd
        self.on_written = on_written
        self._done: trio.Event | None = None
        self._outcome: outcome.Outcome | None = None
        self._span = (0, 0)

    async def write(self, at: int, pieces: list[memoryview]) -> None:
        """Start writing ``pieces`` at ``at`` once the write before has finished (raising what
        that one raised)."""
        await self.wait()
        token = trio.lowlevel.current_trio_token()
        done = self._done = trio.Event()

        def deliver(result: outcome.Outcome) -> None:       # in the worker thread
            self._outcome = result
            token.run_sync_soon(done.set)

        self._span = (at, at + sum(len(piece) for piece in pieces))
        trio.lowlevel.start_thread_soon(lambda: _pwritev_all(self.fd, pieces, at), deliver)

    async def wait(self) -> None:
        """Wait for the write in flight, if any, and raise what it raised."""
        await self.settle()
        result, self._outcome = self._outcome, None
        if result is not None:
            result.unwrap()
            self.on_written(*self._span)

    async def settle(self) -> None:
        """Wait for the write in flight to end; not cancellable, since its thread goes on
        using the descriptor whatever happens here."""
        if self._done is not None:
            with trio.CancelScope(shield=True):
                await self._done.wait()
            self._done = None


def _pwritev_all(fd: int, pieces: list[memoryview], offset: int) -> None:
    views = [piece for piece in pieces if len(piece)]
    while views:
        written = os.pwritev(fd, views, offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]
