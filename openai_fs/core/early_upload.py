"""Uploading a file while it is still being written.

``cp big.bin MNT/user_data/`` writes the whole spool file first and only then, at ``close()``,
sends it: the two phases add up. An :class:`EarlyUpload` overlaps them. Once a file open for
writing holds :data:`START_BYTES`, a ``POST /files`` begins whose body is the spool file itself,
read as it grows (chunked transfer encoding, since the final size is not known yet). At
``close()`` the request is only finished: the rest of the spool is sent and the server's answer
awaited, and the commit goes on exactly as for an upload made at ``close()``.

The spool stays the truth. The request is *abandoned* (cancelled midway, so the server makes no
file) whenever what it would upload could differ from what the file holds at ``close()``: a
write to bytes already sent, a truncation, a rename, a file grown past what one ``POST /files``
may carry, a writer idle for :data:`IDLE_SECONDS`. The commit then uploads the spool as usual.
If the finished request fails, the commit sends the spool again (looking first for the file the
failed request may have made). So nothing here can change what ends on the server; it can only
make it get there sooner.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import AsyncIterator, Callable

import trio

from openai_fs.api import APIError, ExpiresAfter, FileObject, FilesClient

log = logging.getLogger(__name__)

#: a file open for writing starts uploading once it holds this much (smaller files gain little)
START_BYTES = 8 * 1024 * 1024
#: bytes read from the spool per chunk of the request body (sent once that much is written)
CHUNK_BYTES = 1024 * 1024
#: a writer that adds nothing for this long has the request abandoned (a server would time an
#: idle request out anyway); the file is then uploaded at close()
IDLE_SECONDS = 10.0
#: every so many bytes sent, the spool's pages up to this far back are let go from the page
#: cache (see :func:`let_go`)
LET_GO_EVERY = 8 * CHUNK_BYTES
LET_GO_SPAN = 32 * CHUNK_BYTES


class Abandoned(Exception):
    """The early upload was given up; the commit uploads the spool instead."""


class EarlyUpload:
    """One ``POST /files`` fed from a spool file while that file is written."""

    def __init__(self, client: FilesClient, *, path: os.PathLike[str] | str, filename: str,
                 purpose: str, mime_type: str, expires_after: ExpiresAfter | None,
                 size: Callable[[], int], where: str) -> None:
        self.filename = filename
        self.purpose = purpose
        self.where = where
        #: when the request began: a file it may have made was created after this
        self.began = time.time()
        #: bytes of the spool handed to the request so far (they must not change any more)
        self.sent = 0
        #: counts bytes sent once the commit watches (openai-fs status)
        self.progress: Callable[[int], None] | None = None
        self._client = client
        self._path = path
        self._size = size
        self._mime_type = mime_type
        self._expires_after = expires_after
        self._end: int | None = None
        self._more = trio.Event()
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self._result: FileObject | None = None
        self._error: BaseException | None = None
        self._reason: str | None = None

    @property
    def over(self) -> bool:
        """Finished, failed or abandoned: it will not upload anything more."""
        return self._done.is_set() or self._reason is not None

    def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._run)

    def grew(self) -> None:
        """The spool has new bytes to send."""
        self._more.set()

    def abandon(self, reason: str) -> None:
        """Give up: cancel the request (the server makes no file of an unfinished body)."""
        if self.over:
            return
        self._reason = reason
        self._scope.cancel()
        log.debug("%s: early upload abandoned (%s); it is uploaded at close", self.where, reason)

    async def finish(self, size: int) -> FileObject:
        """Send the spool up to ``size`` bytes, end the body and return the server's file.
        Raises :class:`Abandoned` if it was given up, or the request's own error."""
        if self._reason is not None:
            raise Abandoned(self._reason)
        self._end = size
        self._more.set()
        try:
            await self._done.wait()
        except BaseException:
            self.abandon("the close was interrupted")
            raise
        if self._reason is not None:
            raise Abandoned(self._reason)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    async def _run(self) -> None:
        try:
            with self._scope:
                fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    async with contextlib.aclosing(self._chunks(fd)) as chunks:
                        self._result = await self._client.create_file_streamed(
                            self.filename, self.purpose, chunks, mime_type=self._mime_type,
                            expires_after=self._expires_after)
                finally:
                    os.close(fd)
        except (APIError, OSError, Abandoned) as exc:
            self._error = exc
            log.debug("%s: early upload failed: %s", self.where, exc)
        except Exception as exc:  # noqa: BLE001 - a bug here must not end the mount
            self._error = exc
            log.exception("%s: early upload failed unexpectedly", self.where)
        finally:
            if self._result is None and self._error is None and self._reason is None:
                self._reason = "stopped"
            self._done.set()

    async def _chunks(self, fd: int) -> AsyncIterator[bytes]:
        while True:
            end = self._end if self._end is not None else self._size()
            # whole chunks while the file grows (fewer, larger sends), the rest at the end
            if end - self.sent >= CHUNK_BYTES or self._end is not None and self.sent < end:
                count = min(CHUNK_BYTES, end - self.sent)
                # from the page cache, where the write just put it: cheaper than a thread
                data = os.pread(fd, count, self.sent)
                if len(data) < count:
                    raise Abandoned("the spool file shrank")
                self.sent += count
                if self.sent % LET_GO_EVERY == 0:
                    let_go_behind(fd, self.sent)
                if self.progress is not None:
                    self.progress(count)
                yield data
            elif self._end is not None:
                return
            else:
                with trio.move_on_after(IDLE_SECONDS):
                    await self._more.wait()
                if not self._more.is_set():
                    self.abandon(f"nothing was written for {IDLE_SECONDS:g} s")
                    await trio.lowlevel.checkpoint()    # the cancellation lands here
                self._more = trio.Event()


def let_go_behind(fd: int, end: int) -> int:
    """:func:`let_go` the :data:`LET_GO_SPAN` bytes of the spool before ``end`` (how far it is
    written or sent); returns where to do it next."""
    let_go(fd, max(0, end - LET_GO_SPAN), end)
    return end + LET_GO_EVERY


def let_go(fd: int, start: int, end: int) -> None:
    """Advise the kernel that bytes ``[start, end)`` of the spool, already sent (or, for a file
    sent after close, already written), will not be read soon (in a worker thread, not waited
    for).

    Written pages fill the page cache, and on a machine whose free memory is handed back to a
    hypervisor every fresh page costs a fault on first touch: writing 400 MiB took 0.3 to
    1.6 s of the mount's system time. ``POSIX_FADV_DONTNEED`` starts writing dirty pages back
    and drops those already clean; the spans of successive calls overlap, so each page is
    dropped by a later call once it is on disk, and its memory is reused for the bytes still
    to be written. Nothing is lost: the bytes stay in the spool file (which becomes the disk
    cache's copy after the upload, so it was to be written anyway), and a retry reads them
    from there. Advice only, so a failure is ignored.
    """
    try:
        copy = os.dup(fd)       # ``fd`` may be closed before the thread runs
    except OSError:
        return

    def advise() -> None:
        try:
            os.posix_fadvise(copy, start, end - start, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        finally:
            os.close(copy)

    trio.lowlevel.start_thread_soon(advise, lambda result: None)
