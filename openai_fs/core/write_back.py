"""Write-back: uploads and deletes that run in the background, journaled so that no crash loses
or repeats them (``--write-back``; docs/SEMANTICS.md, "Write-back").

With ``--write-back``, ``close()`` returns once the written bytes are durable in the spool and a
journal record says what is to be done with them; ``rm`` returns once its record is written,
and the name is gone at once. A pool of workers (``--upload-concurrency``) then uploads and
deletes, in the order of the records. The records live beside the spool files (their sidecars,
:mod:`openai_fs.core.spool`) and are tied to the account (base URL, organization, project):
the next mount of that account with the same cache folder finishes what a dead mount left,
exactly once. Before each upload the record notes when the send began (and the Upload, for
parts), after it the file id, so a resumed record can tell a finished upload from a lost one
(:meth:`FilesClient.find_uploaded_copy`); where it truly cannot, it uploads again and logs the
possible duplicate.

A failure the server will answer the same way again (a refused rule, quota, a bad request) ends
the job: logged with the file's name, kept in ``openai-fs status``, the bytes moved to
``unsent/`` as for any failed upload. Any other failure (no connection, 5xx, rate limits) is
tried again later, with a growing wait; ``fsync``, ``sync DIR``, ``openai-fs sync`` and
``openai-fs unmount`` report it rather than wait for ever.

Without ``--write-back`` the queue still runs: it finishes what an earlier write-back mount of
the account left, and nothing else.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import trio

from openai_fs.api import APIError, FileObject, NotFoundError
from openai_fs.core.errors import FSError, as_fs_error
from openai_fs.core.namespace import FileEntry, PurposeDir
from openai_fs.core.spool import Journal, LocalFile, Record

if TYPE_CHECKING:
    from openai_fs.core.open_files import OpenFiles

log = logging.getLogger(__name__)

#: waits before a job that met a passing failure is tried again (the last one repeats)
RETRY_WAITS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0)
#: how far back the rate shown by ``status`` looks
RATE_WINDOW = 30.0


class TryLater(Exception):
    """A job met a failure that may pass: it is tried again later."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(eq=False)
class Job:
    """One journaled change: the upload of a spool, or the delete of a server file."""

    kind: str                      # "upload" or "delete"
    record: Record
    entry: FileEntry | None = None
    local: LocalFile | None = None
    file: FileObject | None = None
    #: where the change is shown (the entry's directory may change by renames)
    directory: PurposeDir | None = None
    state: str = "waiting"         # waiting, sending, retrying, failed, done
    #: the last failure (a passing one while retrying, the final one once failed)
    failure: FSError | None = None
    attempts: int = 0
    #: trio clock time of the next attempt while retrying
    retry_at: float | None = None
    #: written again while it was sent: send once more
    again: bool = False
    #: taken over from a mount that stopped: it may have reached the server already
    resumed: bool = False

    @property
    def size(self) -> int:
        if self.local is not None:
            return self.local.size
        return 0

    @property
    def where(self) -> str:
        if self.entry is not None:
            return f"{self.entry.directory.name}/{self.entry.name}"
        assert self.file is not None
        return f"{self.file.purpose}/{self.file.filename}"

    def in_directory(self, directory: PurposeDir) -> bool:
        if self.entry is not None and self.entry.directory is directory:
            return True
        return self.directory is directory

    def as_dict(self) -> dict[str, object]:
        found: dict[str, object] = {"path": self.where, "kind": self.kind, "state": self.state,
                                    "bytes": self.size, "attempts": self.attempts}
        if self.failure is not None:
            found["error"] = self.failure.message
        if self.retry_at is not None and self.state == "retrying":
            found["retry_in"] = round(max(0.0, self.retry_at - trio.current_time()), 1)
        return found


class WriteBack:
    """The queue of journaled uploads and deletes, and its workers."""

    def __init__(self, files: OpenFiles, journal: Journal, *, enabled: bool,
                 concurrency: int) -> None:
        self.files = files
        self.journal = journal
        #: whether close() and rm go through the queue (--write-back)
        self.enabled = enabled
        self.concurrency = max(1, concurrency)
        self.jobs: list[Job] = []
        self._send, self._receive = trio.open_memory_channel[Job](math.inf)
        #: (trio time, bytes) of finished uploads, for the rate status shows
        self._finished: deque[tuple[float, int]] = deque()
        self.completed = 0
        #: set (and replaced) whenever a job changes state: what waiters wait for
        self._changed = trio.Event()

    # ------------------------------------------------------------- running

    async def run(self) -> None:
        """The workers; runs until cancelled (what is left stays journaled)."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.concurrency):
                nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        async for job in self._receive:
            if job.state in ("done", "failed"):
                continue        # cancelled while it waited
            if job.retry_at is not None:
                await trio.sleep_until(job.retry_at)
                if job.state in ("done", "failed"):
                    continue
            await self._run(job)

    async def _run(self, job: Job) -> None:
        job.attempts += 1
        self._settle(job, "sending", job.failure)
        try:
            if job.kind == "upload":
                await self._upload(job)
            else:
                await self._delete(job)
        except TryLater as later:
            failure = as_fs_error(later.cause)
            wait = RETRY_WAITS[min(job.attempts, len(RETRY_WAITS)) - 1]
            job.retry_at = trio.current_time() + wait
            log.warning("%s: %s; trying again in %.0f s", job.where, failure.message, wait)
            self._settle(job, "retrying", failure)
            self._send.send_nowait(job)
            return
        except FSError as exc:
            self._ended(job, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not end the workers
            log.exception("%s: the background %s failed unexpectedly", job.where, job.kind)
            self._ended(job, as_fs_error(exc))
            return
        self._settle(job, "done")
        if job in self.jobs:
            self.jobs.remove(job)

    def _ended(self, job: Job, failure: FSError) -> None:
        """A failure that trying again cannot fix: the job ends. The bytes of an upload were
        moved to unsent/ by the upload itself; the failure stays in status and is reported
        to the next fsync, sync or unmount."""
        if not getattr(failure, "logged", False):
            log.error("%s", failure.message)
            failure.logged = True  # type: ignore[attr-defined]
        self.journal.remove(job.record)
        if job.kind == "upload":
            assert job.entry is not None and job.local is not None
            self.files.uploaded_in_background(job.entry, job.local)
        else:
            self.files.uploader.record_failure(job.where, failure.message)
        self._settle(job, "failed", failure)

    def _settle(self, job: Job, state: str, failure: FSError | None = None) -> None:
        job.state = state
        job.failure = failure
        self._changed.set()
        self._changed = trio.Event()

    # ------------------------------------------------------------- uploads

    async def enqueue_upload(self, entry: FileEntry, local: LocalFile) -> Job:
        """Journal the spool of ``entry`` for upload (its bytes made durable first) and queue
        it. A spool queued already is not queued twice; one being sent is sent once more."""
        job = self.job_of(local)
        if job is not None:
            if job.state == "sending":
                job.again = True
            return job
        replaces = entry.supersedes + ([entry.file] if entry.file is not None else [])

        def journal() -> Record:
            local.sync()
            return self.journal.upload(local, entry.purpose, entry.name, replaces)

        record = await trio.to_thread.run_sync(journal)
        local.queued = True
        return self._add(Job("upload", record, entry=entry, local=local,
                             directory=entry.directory))

    def resume_upload(self, record: Record, entry: FileEntry, local: LocalFile) -> Job:
        return self._add(Job("upload", record, entry=entry, local=local,
                             directory=entry.directory, resumed=True))

    async def _upload(self, job: Job) -> None:
        entry, local = job.entry, job.local
        assert entry is not None and local is not None
        if job.resumed and await self._finished_before(job):
            self._done_uploading(job)
            return
        while True:
            job.again = False
            await self.files.commit(entry, local, try_later=TryLater)
            if not (job.again and local.dirty and not local.discarded):
                break
        self._done_uploading(job)

    def _done_uploading(self, job: Job) -> None:
        assert job.entry is not None and job.local is not None
        self._finished.append((trio.current_time(), job.local.size))
        self.completed += 1
        self.files.uploaded_in_background(job.entry, job.local)

    async def _finished_before(self, job: Job) -> bool:
        """A record taken over from a dead mount: whether its upload had reached the server
        (recorded then as this mount's); False when it must be sent (again)."""
        assert job.entry is not None and job.local is not None
        journal = job.record.journal
        client = self.files.uploader.client
        try:
            if journal.get("state") == "uploaded" and isinstance(journal.get("file_id"), str):
                try:
                    made = await client.retrieve(journal["file_id"])
                except NotFoundError:
                    made = None
                if made is not None:
                    await self.files.adopt_upload(job.entry, job.local, made)
                    return True
                return False
            if journal.get("state") != "sending":
                return False                # never begun
            upload_id = journal.get("upload_id")
            if isinstance(upload_id, str):
                try:                        # a pending Upload must not complete later
                    await client.cancel_upload(upload_id)
                except APIError:
                    pass                    # completed, cancelled or expired already
            path = job.local.path
            found = await client.find_uploaded_copy(
                purpose=job.entry.purpose, filename=job.entry.server_name,
                size=job.local.size, since=float(journal.get("since") or 0),
                local_md5=lambda: trio.to_thread.run_sync(md5_of, path))
        except APIError as exc:
            if client.retry.is_retryable(exc):
                raise TryLater(exc) from None
            raise
        if found is None:
            log.info("%s: the upload a mount that stopped had begun did not reach the server; "
                     "sending it again", job.where)
            return False
        await self.files.adopt_upload(job.entry, job.local, found)
        return True

    def cancel(self, local: LocalFile) -> bool:
        """Drop the queued upload of ``local`` if it has not begun (True); one under way goes
        on, and deletes what it makes (False)."""
        job = self.job_of(local)
        if job is None:
            return True
        if job.state == "sending":
            return False
        self.journal.remove(job.record)
        local.record = None
        self._settle(job, "done")
        self.jobs.remove(job)
        return True

    # ------------------------------------------------------------- deletes

    async def enqueue_delete(self, file: FileObject, directory: PurposeDir) -> Job:
        """Journal the delete of ``file`` and queue it."""
        record = await trio.to_thread.run_sync(self.journal.delete, file)
        return self._add(Job("delete", record, file=file, directory=directory))

    def resume_delete(self, record: Record, file: FileObject, directory: PurposeDir) -> Job:
        return self._add(Job("delete", record, file=file, directory=directory, resumed=True))

    async def _delete(self, job: Job) -> None:
        file = job.file
        assert file is not None
        try:
            await self.files.changes.delete_file(file)
        except NotFoundError:
            pass                    # gone already: what the delete was for
        except APIError as exc:
            if self.files.uploader.client.retry.is_retryable(exc):
                raise TryLater(exc) from None
            raise as_fs_error(exc) from None
        self.files.cache.discard(file.id)
        self.journal.remove(job.record)
        log.info("deleted %s (%s)", job.where, file.id)

    # --------------------------------------------------------------- queue

    def _add(self, job: Job) -> Job:
        self.jobs.append(job)
        self._send.send_nowait(job)
        return job

    def job_of(self, local: LocalFile) -> Job | None:
        for job in self.jobs:
            if job.local is local and job.state not in ("done", "failed"):
                return job
        return None

    def pending(self, directory: PurposeDir | None = None) -> list[Job]:
        return [job for job in self.jobs if job.state not in ("done", "failed")
                and (directory is None or job.in_directory(directory))]

    async def wait(self, jobs: Callable[[], list[Job]]) -> None:
        """Wait until every job of ``jobs()`` is done or met a failure, and raise the first
        failure (a job retrying reports its passing failure rather than make the caller wait
        for ever). Failures reported this way leave the queue (status keeps them)."""
        while True:
            current = jobs()
            for job in current:
                if job.failure is not None and job.state in ("failed", "retrying"):
                    failure = job.failure
                    if job.state == "failed" and job in self.jobs:
                        self.jobs.remove(job)
                    raise FSError(failure.errno, f"{job.where}: {failure.message}",
                                  level=logging.INFO)
            if all(job.state in ("done", "failed") for job in current):
                return
            await self._changed.wait()

    async def wait_file(self, local: LocalFile) -> None:
        job = self.job_of(local) or next((job for job in self.jobs if job.local is local),
                                         None)
        if job is not None:
            await self.wait(lambda: [job])

    async def wait_directory(self, directory: PurposeDir) -> None:
        """``sync DIR``: every upload and delete of the directory is on the server."""
        await self.wait(lambda: [job for job in self.jobs
                                 if job.in_directory(directory)])

    async def wait_all(self) -> None:
        """``openai-fs sync`` and unmount: everything queued is on the server."""
        await self.wait(lambda: list(self.jobs))

    # -------------------------------------------------------------- status

    def statistics(self) -> dict[str, object]:
        now = trio.current_time()
        while self._finished and now - self._finished[0][0] > RATE_WINDOW:
            self._finished.popleft()
        pending = self.pending()
        waiting = [job for job in pending if job.state != "sending"]
        sending = [job for job in pending if job.state == "sending"]
        rate = sum(size for _, size in self._finished) / RATE_WINDOW if self._finished \
            else 0.0
        left = sum(job.size for job in pending)
        return {"enabled": self.enabled,
                "waiting": len(waiting), "waiting_bytes": sum(job.size for job in waiting),
                "sending": len(sending), "sending_bytes": sum(job.size for job in sending),
                "retrying": sum(1 for job in pending if job.state == "retrying"),
                "failed": [job.as_dict() for job in self.jobs if job.state == "failed"],
                "jobs": [job.as_dict() for job in pending[:50]],
                "completed": self.completed, "bytes_per_second": int(rate),
                "eta_seconds": round(left / rate, 1) if rate and left else None}


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
