"""A file the mount holds only in part (:class:`Partial`), and the sequential transfers that
fill it (:class:`Stream`), with the windows they move by: the state the content cache
(:mod:`openai_fs.core.cache`) keeps for each file it is fetching."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from openai_fs.api import FileObject
from openai_fs.core.download_ring import RingDownload
from openai_fs.core.ranges import RangeSet

if TYPE_CHECKING:
    from openai_fs.core.stream_sinks import Sink

BLOCK_SIZE = 1024 * 1024
#: the largest window a stream asks for at once: a sequential reader is at most two windows
#: behind its stream (which waits for it to reach the newest one before asking for the next)
MAX_WINDOW = 64 * BLOCK_SIZE


def align_down(offset: int) -> int:
    return offset - offset % BLOCK_SIZE


def align_up(offset: int) -> int:
    return -(-offset // BLOCK_SIZE) * BLOCK_SIZE


@dataclass(eq=False)
class Partial:
    """What the mount holds of one file that is not whole in the disk cache: a sparse file,
    the ranges of it that hold real bytes, and the streams filling it."""

    file: FileObject
    path: Path
    #: a plain descriptor for readers (stream writes go through their own)
    read_fd: int
    #: the bytes on disk
    present: RangeSet = field(default_factory=RangeSet)
    streams: list[Stream] = field(default_factory=list)
    #: a disk failure: the partial file is given up and every reader waiting on it fails
    error: BaseException | None = None
    _changed: trio.Event = field(default_factory=trio.Event)

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def missing(self, start: int, end: int) -> int | None:
        """The first byte of ``[start, end)`` neither on disk nor received by a stream."""
        at = start
        while at < end:
            held = self.present.run_end(at)
            for stream in self.streams:
                if stream.start <= at < stream.pos:
                    held = max(held, stream.pos)
            if held == at:
                return at
            at = held
        return None


@dataclass(eq=False)
class Stream:
    """One sequential transfer of a file's bytes into its partial file, from ``start`` on.

    ``[start, pos)`` has been received. The stream may go on up to ``limit``: the end of its
    newest *window*, which began at ``window_start`` and is ``window`` bytes long; readers
    move it on with :meth:`want`. With Range each window is fetched by a ranged request;
    without, the stream is one whole-file request read only as far as ``limit``.
    """

    partial: Partial
    start: int
    limit: int
    window: int
    ranged: bool
    pos: int = -1
    window_start: int = 0
    #: the furthest end a reader asked of this stream
    wanted: int = 0
    ring: RingDownload | None = None
    #: where its bytes go (made at the first byte: see _sink_for) and through which descriptor
    sink: Sink | None = None
    fd: int = -1
    done: bool = False
    error: BaseException | None = None
    #: set when nobody needs the stream any more (it ends as soon as it can)
    stopping: bool = False
    started: float = field(default_factory=time.time)
    idle_since: float = field(default_factory=time.monotonic)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    _moved: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        if self.pos < 0:
            self.pos = self.start
        self.window_start = self.limit

    @property
    def size(self) -> int:
        return self.partial.file.bytes

    def as_dict(self) -> dict[str, object]:
        """For ``openai-fs status``."""
        file = self.partial.file
        elapsed = max(time.time() - self.started, 1e-6)
        received = self.pos - self.start
        return {"path": f"{file.purpose}/{file.filename} ({file.id})",
                "bytes_received": received, "bytes_total": file.bytes,
                "from": self.start, "seconds": round(elapsed, 1),
                "bytes_per_second": int(received / elapsed)}

    def serves(self, at: int) -> bool:
        """Whether a read that needs byte ``at`` should wait for this stream rather than start
        one of its own: ``at`` is ahead of it and within its reach (without Range, everything
        ahead is)."""
        if self.done or self.stopping or at < self.pos:
            return False
        return not self.ranged or at < self.limit + self.window

    def want(self, end: int) -> None:
        """A reader asks for bytes up to ``end``: the stream goes on to ``end``, and, when the
        reader has reached its newest window, one window further, twice as large as the last
        (up to :data:`MAX_WINDOW`)."""
        if end <= self.wanted:
            return
        self.wanted = end
        if end > self.limit:
            self.limit = min(self.size, align_up(end))
        while self.wanted > self.window_start and self.limit < self.size:
            self.window = min(self.window * 2, MAX_WINDOW)
            self.window_start = self.limit
            self.limit = min(self.size, self.limit + self.window)
        self.moved()

    def moved(self) -> None:
        self._moved.set()
        self._moved = trio.Event()

    async def wait_moved(self) -> None:
        await self._moved.wait()

    def stop(self) -> None:
        self.stopping = True
        self.moved()
