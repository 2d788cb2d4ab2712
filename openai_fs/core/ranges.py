"""Which bytes of a file the mount holds: a set of disjoint, sorted ``[start, end)`` ranges.

The content cache keeps a file it has only partly fetched as a sparse file on disk; a
:class:`RangeSet` says which of its bytes are real. Adjacent or overlapping ranges merge, so a
file read from start to end is one range however many pieces it came in.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Iterator


class RangeSet:
    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        #: bytes covered
        self.total = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends))

    def __repr__(self) -> str:
        return f"RangeSet({list(self)})"

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        # every range that overlaps or touches [start, end) merges with it
        first = bisect_right(self._ends, start - 1)      # first range ending at or after start
        last = bisect_right(self._starts, end)          # ranges from here on begin after end
        if first < last:
            start = min(start, self._starts[first])
            end = max(end, self._ends[last - 1])
            self.total -= sum(self._ends[i] - self._starts[i] for i in range(first, last))
        self._starts[first:last] = [start]
        self._ends[first:last] = [end]
        self.total += end - start

    def run_end(self, at: int) -> int:
        """The end of the range holding byte ``at``; ``at`` itself when none does."""
        index = bisect_right(self._starts, at) - 1
        if index >= 0 and self._ends[index] > at:
            return self._ends[index]
        return at

    def covers(self, start: int, end: int) -> bool:
        return end <= start or self.run_end(start) >= end

    def next_start(self, at: int) -> int | None:
        """The start of the first range that begins after byte ``at``."""
        index = bisect_right(self._starts, at)
        return self._starts[index] if index < len(self._starts) else None

    def first_missing(self, start: int, end: int) -> int | None:
        """The first byte of ``[start, end)`` not held; None when all are."""
        held = self.run_end(start)
        return held if held < end else None
