"""The disk cache: whole copies of files, and files held in part, by id, least recently used
first out (see :class:`DiskCache`)."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
from pathlib import Path
from typing import Callable

from openai_fs.api import FileObject, usable_id
from openai_fs.core.private import private_dirs

log = logging.getLogger(__name__)


class DiskCache:
    """Files on disk, by id, least recently used first out: whole files, and files the mount
    holds only some ranges of.

    Files of one server live in their own folder (``content/<hash of base URL>/``), so a mount of
    the emulator and one of the real API never mix. A whole file is named by its id alone, which
    the API client has checked (letters, digits, ``-``, ``_``) and :meth:`path` checks again: no
    server string can choose another path. A file held in part is a sparse
    ``<id>.partial-<random>`` file whose ranges only the mount that fetched them knows (they are
    kept in memory): it is renamed to ``<id>`` once every byte is there, and a later mount, which
    could not tell its holes from its bytes, removes it at start like a dead mount's other
    leftovers. A partial file counts by the bytes it holds and is evicted like a whole one.
    """

    def __init__(self, root: Path, capacity: int, *, server: str) -> None:
        self.capacity = capacity
        self._root = root
        self._server_folder = hashlib.sha256(server.encode()).hexdigest()[:16]
        self.folder = root / "content" / self._server_folder
        self._sizes: dict[str, int] = {}      # insertion order = least recently used first
        #: file id -> the sparse file holding part of it
        self._partial: dict[str, Path] = {}
        self._pinned: dict[str, int] = {}
        self._doomed: set[str] = set()
        self.used = 0
        #: told the id of a partial file that was removed (evicted, or its file deleted)
        self.on_partial_removed: Callable[[str], None] = lambda file_id: None

    def scan(self) -> None:
        """Build the index from the folder (blocking; run in a thread at start)."""
        if self.capacity <= 0:
            return
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_dirs(self._root, "content", self._server_folder)
        found = []
        for path in self.folder.iterdir():
            if ".partial" in path.name:
                if not _in_use(path):       # a dead mount's: its ranges died with it
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
        if file.id in self._partial:
            return False
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
        return file.id not in self._partial and self._sizes.get(file.id) == file.bytes

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
        self.remove(file_id)
        os.replace(source, self.path(file_id))
        self._sizes[file_id] = size
        self.used += size
        return True

    # -------------------------------------------------------------- partial files

    def add_partial(self, file_id: str, path: Path) -> None:
        """``path`` (a new, empty file) holds from now on what is fetched of ``file_id``."""
        self.remove(file_id)
        self._partial[file_id] = path
        self._sizes[file_id] = 0

    def grow(self, file_id: str, count: int) -> None:
        """``count`` more bytes of the partial file of ``file_id`` are on disk: room is made for
        them (by evicting others) as it would be for a whole file."""
        if file_id not in self._partial:
            return
        self._sizes[file_id] = self._sizes.pop(file_id) + count
        self.used += count
        self._evict(0)

    def complete(self, file_id: str) -> None:
        """The partial file of ``file_id`` holds every byte: it becomes the whole file (or,
        when the partial file is gone from the folder, is forgotten: the next read fetches)."""
        path = self._partial.pop(file_id)
        try:
            os.replace(path, self.path(file_id))
        except OSError as exc:
            log.warning("could not keep %s in the disk cache (%s); it will be fetched again "
                        "when read", file_id, exc.strerror or exc)
            self.remove_index(file_id)
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ pins

    def pin(self, file_id: str) -> None:
        self._pinned[file_id] = self._pinned.get(file_id, 0) + 1
        if file_id in self._sizes:
            self.touch(file_id)
            if file_id not in self._partial:
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
        partial = self._partial.pop(file_id, None)
        if self.remove_index(file_id):
            (partial or self.path(file_id)).unlink(missing_ok=True)
        if partial is not None:
            self.on_partial_removed(file_id)

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


def hold_partial(fd: int) -> None:
    """Mark the partial file open as ``fd`` as in use by this mount for as long as ``fd`` is
    open, so that another mount sharing the cache folder does not take it for a dead mount's
    (see :meth:`DiskCache.scan`). Not LOCK_NB: a scan that opened the new file in the moment
    before holds its lock only while it looks, and must not fail the read that made it."""
    fcntl.flock(fd, fcntl.LOCK_SH)


def _in_use(path: Path) -> bool:
    """Whether a running mount holds the partial file ``path`` (:func:`hold_partial`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _cache_name(file_id: str) -> str:
    """The name of a file's copy: its id, which must be one (see :func:`usable_id`)."""
    if not usable_id(file_id):
        raise ValueError(f"not a file id: {file_id[:40]!r}")
    return file_id
