"""How a file's bytes reach the server: one ``POST /files``, or the Uploads API in parallel
parts, or a ``POST /files`` that began while the file was still written
(:mod:`openai_fs.core.early_upload`); and what is in flight, for ``openai-fs status``.

``POST /files`` carries files up to ``--multipart-threshold``; above it, and always above
512 MB, the Uploads API does (create, parts with up to ``--upload-concurrency`` in flight,
complete with the ordered part ids and the MD5; cancelled on any failure). Purposes the
Uploads API does not take always go with ``POST /files``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import trio

from openai_fs.api import APIError, APIStatusError, ExpiresAfter, FileObject, FilesClient
from openai_fs.api.retry import may_have_taken_effect
from openai_fs.core import purposes
from openai_fs.core.early_upload import START_BYTES, Abandoned, EarlyUpload
from openai_fs.core.namespace import FileEntry
from openai_fs.core.rules import MULTIPART_UNSAFE, mime_type, rule_violation
from openai_fs.core.spool import LocalFile

log = logging.getLogger(__name__)

#: how many failed uploads ``status`` remembers
FAILURES_KEPT = 20
#: the answer of a server that wants every request body's length up front
LENGTH_REQUIRED = 411


@dataclass
class UploadSettings:
    multipart_threshold: int = 64 * purposes.MiB
    part_size: int = 16 * purposes.MiB
    concurrency: int = 4
    expires_after: int | None = None
    #: start uploading a large file while it is written (see openai_fs.core.early_upload)
    early: bool = True


@dataclass(eq=False)
class Transfer:
    """An upload in flight, for ``openai-fs status`` and ``openai-fs unmount``."""

    path: str
    total: int
    method: str
    sent: int = 0
    started: float = field(default_factory=time.time)

    def advance(self, count: int) -> None:
        self.sent = max(0, self.sent + count)

    def as_dict(self) -> dict[str, object]:
        elapsed = max(time.time() - self.started, 1e-6)
        return {"path": self.path, "bytes_sent": self.sent, "bytes_total": self.total,
                "method": self.method, "seconds": round(elapsed, 1),
                "bytes_per_second": int(self.sent / elapsed)}


class Uploader:
    """Sends files to the server and keeps the record of what is in flight and what failed."""

    def __init__(self, client: FilesClient, settings: UploadSettings,
                 nursery: trio.Nursery | None = None) -> None:
        self.client = client
        self.settings = settings
        #: runs early uploads; without one, files are only sent once closed
        self._nursery = nursery
        self.transfers: set[Transfer] = set()
        #: uploads that began while their file is still written
        self._early: set[EarlyUpload] = set()
        #: the server refused a body of unknown length (411): no more early uploads
        self._early_refused = False
        self.failures: deque[dict[str, object]] = deque(maxlen=FAILURES_KEPT)
        #: purposes for which the log said that --multipart-threshold does not apply
        self._said_one_post: set[str] = set()
        self.completed = 0
        self._idle = trio.Event()
        self._idle.set()

    # ---------------------------------------------------------------- sending

    async def send(self, entry: FileEntry, local: LocalFile, where: str) -> FileObject:
        """Upload the spool of ``entry`` under its name and purpose: finish the upload that
        began while it was written when that one still fits, else send the spool."""
        uploaded, maybe_created_since = await self._finish_early(entry, local, where)
        if uploaded is not None:
            return uploaded
        return await self.upload(where, entry.server_name, entry.purpose, local.path,
                                 local.size, local=local,
                                 maybe_created_since=maybe_created_since)

    async def upload(self, where: str, filename: str, purpose: str, path: Path, size: int, *,
                     local: LocalFile | None = None,
                     maybe_created_since: float | None = None) -> FileObject:
        """Upload the local file ``path`` as ``filename`` of ``purpose``. ``local``, when the
        path is a spool file, learns the id of an Upload made for it (see its sidecar)."""
        expires = self._expires_after()
        mime = mime_type(filename)
        in_parts = self.in_parts(purpose, filename, size)
        transfer = Transfer(where, size, "uploads-api" if in_parts else "post-files")
        self._started(transfer)
        try:
            if in_parts:
                return await self.client.upload_in_parts(
                    filename, purpose, path, part_size=self.settings.part_size,
                    concurrency=self.settings.concurrency, mime_type=mime,
                    expires_after=expires, progress=transfer.advance,
                    on_created=None if local is None
                    else lambda upload: local.note_upload(upload.id))
            return await self.client.create_file(filename, purpose, path, mime_type=mime,
                                                 expires_after=expires,
                                                 progress=transfer.advance,
                                                 maybe_created_since=maybe_created_since)
        finally:
            self._finished(transfer)

    def in_parts(self, purpose: str, filename: str, size: int) -> bool:
        """Whether a file goes through the Uploads API rather than one ``POST /files``."""
        if purpose not in purposes.UPLOADS_API_PURPOSES:
            if size > self.settings.multipart_threshold and purpose not in self._said_one_post:
                self._said_one_post.add(purpose)
                log.info("%s files go with one POST /files whatever their size "
                         "(--multipart-threshold does not apply): the Uploads API does not "
                         "take this purpose", purpose)
            return False
        return (size > self.settings.multipart_threshold or size > purposes.MAX_POST_FILE_BYTES
                or MULTIPART_UNSAFE.search(filename) is not None)

    def _expires_after(self) -> ExpiresAfter | None:
        seconds = self.settings.expires_after
        return ExpiresAfter(seconds) if seconds else None

    async def cancel_abandoned_uploads(self, upload_ids: list[str]) -> None:
        """Cancel the Uploads that mounts which died left open (they would otherwise stay
        pending on the server until they expire, an hour after they were made)."""
        while upload_ids:
            upload_id = upload_ids.pop()
            try:
                await self.client.cancel_upload(upload_id)
                log.info("cancelled Upload %s, left open by a mount that stopped", upload_id)
            except APIError as exc:
                # already completed, cancelled or expired: nothing is left to clean up
                log.info("Upload %s of a mount that stopped is gone already (%s)",
                         upload_id, exc.message)

    # --------------------------------------------------- uploads while writing

    def wrote(self, entry: FileEntry, local: LocalFile, *, may_start: bool) -> None:
        """``local`` (the spool of ``entry``) was written to: feed its early upload, give that
        up if the file can no longer be sent that way, or start one once the file is large
        enough, if ``may_start`` (see :mod:`openai_fs.core.early_upload`)."""
        early = local.early
        if early is not None:
            if not early.over:
                problem = self._early_problem(entry, local, early)
                if problem is None:
                    early.grew()
                else:
                    early.abandon(problem)
            return
        if not may_start or not self.settings.early or self._early_refused \
                or self._nursery is None or local.size < START_BYTES or not local.sequential \
                or self._early_problem(entry, local) is not None:
            return
        self._early = {e for e in self._early if not e.over}
        if len(self._early) >= self.settings.concurrency:
            return      # each holds a connection: leave enough for everything else
        where = f"{entry.directory.name}/{entry.name}"
        early = EarlyUpload(self.client, path=local.path, filename=entry.server_name,
                            purpose=entry.purpose, mime_type=mime_type(entry.server_name),
                            expires_after=self._expires_after(), size=lambda: local.size,
                            where=where)
        local.early = early
        self._early.add(early)
        early.start(self._nursery)
        log.debug("%s: uploading while it is written", where)

    def _early_problem(self, entry: FileEntry, local: LocalFile,
                       early: EarlyUpload | None = None) -> str | None:
        """Why the spool of ``entry`` cannot be (or no longer be) sent by the early upload
        ``early`` (or by a new one), or None."""
        purpose, filename = entry.purpose, entry.server_name
        if local.failure is not None or local.discarded or local.base is not None \
                or entry.local is not local:
            return "the file will not be uploaded from this spool"
        if early is not None and (early.purpose != purpose or early.filename != filename):
            return "the file was renamed"
        if self.in_parts(purpose, filename, local.size) \
                or local.size > purposes.MAX_POST_FILE_BYTES:
            return "the file is sent with the Uploads API"
        if rule_violation(purpose, filename, local.size, "") is not None:
            return "the file breaks a rule"
        return None

    async def _finish_early(self, entry: FileEntry, local: LocalFile,
                            where: str) -> tuple[FileObject | None, float | None]:
        """Finish the early upload of ``local``, if it has one that still fits. Returns the
        uploaded file, or None and (when the early request may have made the file anyway)
        since when such a file would exist."""
        early, local.early = local.early, None
        if early is None:
            return None, None
        problem = self._early_problem(entry, local, early)
        if problem is not None:
            early.abandon(problem)
            return None, None
        transfer = Transfer(where, local.size, "post-files", sent=early.sent)
        early.progress = transfer.advance
        self._started(transfer)
        try:
            return await early.finish(local.size), None
        except Abandoned:
            return None, None
        except Exception as exc:  # noqa: BLE001 - whatever it was, the spool is sent again
            log.info("%s: the upload sent while it was written failed (%s); sending it again",
                     where, exc)
            if isinstance(exc, APIStatusError) and exc.status == LENGTH_REQUIRED \
                    and not self._early_refused:
                self._early_refused = True
                log.warning("the server does not take an upload whose length is not known "
                            "in advance (%s): from now on files are uploaded once closed, as "
                            "with --upload-on-close", exc)
            maybe = not isinstance(exc, APIError) or may_have_taken_effect(exc)
            return None, early.began if maybe else None
        finally:
            early.progress = None
            self._finished(transfer)

    # ----------------------------------------------------------------- status

    def record_failure(self, where: str, reason: str, kept_in: Path | None = None) -> None:
        """Remember a failure for ``openai-fs status``."""
        failure: dict[str, object] = {"path": where, "reason": reason, "time": time.time()}
        if kept_in is not None:
            failure["kept_in"] = str(kept_in)
        self.failures.append(failure)

    def _started(self, transfer: Transfer) -> None:
        self.transfers.add(transfer)
        self._idle = trio.Event()

    def _finished(self, transfer: Transfer) -> None:
        self.transfers.discard(transfer)
        if not self.transfers:
            self._idle.set()

    async def wait_idle(self) -> None:
        while self.transfers:
            await self._idle.wait()

    def statistics(self) -> dict[str, object]:
        return {"in_flight": [t.as_dict() for t in sorted(self.transfers,
                                                          key=lambda t: t.started)],
                "while_written": [{"path": e.where, "bytes_sent": e.sent}
                                  for e in sorted(self._early, key=lambda e: e.began)
                                  if not e.over and e.progress is None],
                "completed": self.completed, "failed": list(self.failures)}
