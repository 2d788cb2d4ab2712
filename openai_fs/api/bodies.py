"""Request bodies read from a region of a local file, for multipart uploads.

httpx streams a multipart file field by calling ``read`` on a file-like object (and measures
it with ``seek``/``tell``); :class:`FileRegion` gives it a window onto part of a spool file
without copying it into memory, and reports the bytes handed out so progress can be shown.
"""

from __future__ import annotations

import io
import os
from typing import Callable


class FileRegion(io.RawIOBase):
    """A read-only, seekable view of ``length`` bytes of a file starting at ``offset``."""

    def __init__(self, path: str | os.PathLike[str], offset: int = 0, length: int | None = None,
                 *, progress: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        size = os.fstat(self._fd).st_size
        self._start = offset
        self._length = max(0, size - offset) if length is None else length
        self._pos = 0
        self._progress = progress
        #: bytes reported to ``progress`` so far (taken back by :meth:`retract_progress`)
        self.reported = 0

    @property
    def length(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = min(max(0, base + pos), self._length)
        if self._pos == 0:
            # httpx rewinds before (re)sending the body: what was read before does not count
            self.retract_progress()
        return self._pos

    def read(self, size: int = -1) -> bytes:
        remaining = self._length - self._pos
        if size is None or size < 0 or size > remaining:
            size = remaining
        if size <= 0:
            return b""
        data = os.pread(self._fd, size, self._start + self._pos)
        if len(data) < size:
            raise OSError(f"the spool file shrank while it was being sent "
                          f"({self._start + self._pos + len(data)} bytes left)")
        self._pos += len(data)
        if self._progress is not None:
            self._progress(len(data))
            self.reported += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def retract_progress(self) -> None:
        """Take back the progress this region reported (its attempt failed and will be redone)."""
        if self._progress is not None and self.reported:
            self._progress(-self.reported)
        self.reported = 0

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
