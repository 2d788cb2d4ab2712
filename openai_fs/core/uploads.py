"""Writing files: spool files, rule checks, uploads, replacing, deleting and moving.

Bytes written through the mount go to a local *spool file* (never memory), so seeks, rewrites,
truncation and sparse writes work while a file is open. When a writer closes (the first
``flush`` with unsent changes, or ``fsync``), :meth:`UploadEngine.commit` uploads the spool:
``POST /files`` below ``--multipart-threshold``, the Uploads API (parallel parts) above it.
``close()`` returns only once the server has the file. If the upload fails, the bytes are kept
in ``<cache-dir>/unsent/`` and the failure is logged with the server's message and shown by
``openai-fs status``; nothing is ever dropped silently.

The spool folder of a running mount is locked; a later mount finds the folders of mounts that
died, moves their files to ``unsent/`` and says so in its log.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import mimetypes
import os
import re
import secrets
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import trio

from openai_fs.core import names, purposes
from openai_fs.api import (
    APIError,
    APIStatusError,
    ExpiresAfter,
    FileObject,
    FilesClient,
    NotFoundError,
)
from openai_fs.api.retry import may_have_taken_effect
from openai_fs.core.cache import ContentCache
from openai_fs.core.early_upload import (
    LET_GO_SPAN,
    START_BYTES,
    Abandoned,
    EarlyUpload,
    let_go_behind,
)
from openai_fs.core.errors import FSError, RuleViolation, UploadFailed, errno_for
from openai_fs.core.namespace import FileEntry, Namespace, PurposeDir

log = logging.getLogger(__name__)

#: characters that httpx cannot carry unchanged in a multipart filename (it percent-encodes
#: them), so such files go through the Uploads API, whose filename travels in JSON
_MULTIPART_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')
#: how many failed uploads ``status`` remembers
FAILURES_KEPT = 20
#: temporary files of tools that write a copy and then rename it over the real name: rsync
#: (``.NAME.XXXXXX``) and GIO, i.e. GNOME Files, gio copy and gio save (``.goutputstream-XXXXXX``)
TEMPORARY_NAME = re.compile(r"^\.goutputstream-[A-Za-z0-9]{6}$|^\..+\.[A-Za-z0-9]{6}$")
#: a temporary file nobody renamed is uploaded under its own name this long after its last close
HOLD_SECONDS = 5.0
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
class LocalFile:
    """The bytes of one file being written, in a spool file."""

    path: Path
    fd: int
    purpose: str
    size: int = 0
    mtime: float = field(default_factory=time.time)
    #: changed since the last upload, or never uploaded
    dirty: bool = True
    #: why this file will not be uploaded (a rule it broke, a full spool disk, a failed upload)
    failure: FSError | None = None
    #: unlinked before it was uploaded: never upload it
    discarded: bool = False
    #: open handles using it
    handles: int = 0
    lock: trio.Lock = field(default_factory=trio.Lock)
    #: a server file whose bytes this spool stands for but has not fetched yet: opening a file
    #: for writing without O_TRUNC costs nothing until something reads or changes it
    base: FileObject | None = None
    #: what the spool is, for a later mount if this one dies (see _recover_dead_spools)
    sidecar: Path | None = None
    #: the upload that began while the file is written, if any
    early: EarlyUpload | None = None
    #: written from start to end so far, without leaving holes (only such files upload early)
    sequential: bool = True
    #: once the file is this large, pages behind the writer are next let go (see write())
    let_go_at: int = LET_GO_SPAN

    def check_size(self, end: int) -> None:
        limit = purposes.max_file_bytes(self.purpose)
        if end > limit:
            self.failure = RuleViolation(errno.EFBIG, purposes.size_problem(self.purpose, end)
                                         or "file too large")
            raise self.failure

    def write(self, offset: int, data: bytes) -> int:
        if self.failure is not None:
            raise self.failure
        self.check_size(offset + len(data))
        if self.early is not None and offset < self.early.sent:
            self.early.abandon("a write changed bytes already sent")
        if offset > self.size:
            self.sequential = False
        try:
            written = os.pwrite(self.fd, data, offset)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self.failure = FSError(exc.errno, f"the spool disk is full ({self.path.parent}); "
                                                  "the file will not be uploaded")
                raise self.failure from None
            raise
        self.size = max(self.size, offset + written)
        self.mtime = time.time()
        self.dirty = True
        if self.size >= self.let_go_at and (self.early is None or self.early.over):
            # Sent after close (in parts, or as one POST with --upload-on-close): keep only
            # the latest pages of the spool in memory while it is written, as an early upload
            # does behind what it sent. Fresh page cache is what costs on a VM (let_go).
            self.let_go_at = let_go_behind(self.fd, self.size)
        return written

    def truncate(self, size: int) -> None:
        if self.failure is not None:
            raise self.failure
        if size == 0:
            self.base = None        # nothing of the old bytes survives: no need to fetch them
        assert self.base is None, "load the base before truncating to a non-zero size"
        self.check_size(size)
        if self.early is not None and size < self.early.sent:
            self.early.abandon("the file was truncated")
        if size > self.size:
            self.sequential = False
        elif size == 0:
            self.sequential = True
        os.ftruncate(self.fd, size)
        self.size = size
        self.mtime = time.time()
        self.dirty = True

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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


class UploadEngine:
    """Turns local writes into server files, and deletes and moves server files."""

    def __init__(self, client: FilesClient, namespace: Namespace, cache: ContentCache,
                 settings: UploadSettings, cache_dir: Path,
                 nursery: trio.Nursery | None = None) -> None:
        self.client = client
        #: runs the deferred uploads of temporary files; without one nothing is deferred
        self._nursery = nursery
        self._held: dict[FileEntry, LocalFile] = {}
        self.namespace = namespace
        self.cache = cache
        self.settings = settings
        self.unsent_dir = cache_dir / "unsent"
        spool_root = cache_dir / "spool"
        spool_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The lock file beside the folder is taken before the folder exists, so a mount
        # starting at the same moment never mistakes this folder for a dead mount's.
        name = f"mount-{os.getpid()}-{secrets.token_hex(3)}"
        self._lock_fd = os.open(spool_root / f"{name}.lock",
                                os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        #: Uploads that dead mounts left open (their ids, from the spool sidecars)
        self.abandoned_uploads: list[str] = []
        self._recover_dead_spools(spool_root)
        self.spool_dir = spool_root / name
        self.spool_dir.mkdir(mode=0o700)
        self.transfers: set[Transfer] = set()
        #: uploads that began while their file is still written
        self._early: set[EarlyUpload] = set()
        #: the server refused a body of unknown length (411): no more early uploads
        self._early_refused = False
        self.failures: deque[dict[str, object]] = deque(maxlen=FAILURES_KEPT)
        self.completed = 0
        self._idle = trio.Event()
        self._idle.set()

    # --------------------------------------------------------------- spools

    def check_new_file(self, directory: PurposeDir, name: str) -> None:
        """Refuse a new file that could never be uploaded, before any byte is written."""
        if not directory.writable:
            raise _not_writable(directory)
        if not names.is_canonical(name):
            raise RuleViolation(errno.EINVAL, f"{directory.name}/{name}: refused, the name "
                                              "uses the escape mark \u201b in a way the name "
                                              "rule cannot keep (see docs/SEMANTICS.md)")
        filename = _server_filename(name)
        problem = purposes.filename_problem(directory.purpose or "", filename)
        if problem:
            raise RuleViolation(errno.EINVAL, f"{directory.name}/{name}: refused, {problem}")
        if _MULTIPART_UNSAFE.search(filename) and \
                directory.purpose not in purposes.UPLOADS_API_PURPOSES:
            raise RuleViolation(errno.EINVAL, f"{directory.name}/{name}: refused, a name with "
                                              "quotes, backslashes or control characters "
                                              "cannot be uploaded unchanged for this purpose")

    def new_local(self, directory: PurposeDir, name: str) -> LocalFile:
        path = self.spool_dir / secrets.token_hex(8)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        # the sidecar lets a later mount say what a dead mount's spool file was
        sidecar = path.with_suffix(".json")
        sidecar.write_text(json.dumps(
            {"purpose": directory.purpose, "name": name, "created": time.time()}))
        return LocalFile(path, fd, directory.purpose or "", sidecar=sidecar)

    def open_existing(self, entry: FileEntry) -> LocalFile:
        """A spool standing for the current content of a server file (to change it in place);
        the bytes are fetched by :meth:`ensure_loaded` when first needed."""
        assert entry.file is not None
        local = self.new_local(entry.directory, entry.name)
        local.base = entry.file
        local.size = entry.file.bytes
        local.dirty = False
        return local

    async def ensure_loaded(self, local: LocalFile) -> None:
        """Fetch the server bytes a spool stands for (from the content cache when there)."""
        if local.base is None:
            return
        async with local.lock:
            base = local.base
            if base is None:
                return
            if base.bytes == 0:
                pass                # nothing to fetch (and nothing lost if it is gone since)
            elif self.cache.disk.has(base):
                source = self.cache.disk.path(base.id)
                await trio.to_thread.run_sync(shutil.copyfile, source, local.path)
            else:
                at = 0
                async for _, chunk in self.client.stream_content(base.id):
                    await trio.to_thread.run_sync(os.pwrite, local.fd, chunk, at)
                    at += len(chunk)
            local.base = None

    async def load_existing(self, entry: FileEntry) -> LocalFile:
        """A spool file holding the current content of a server file, fetched now."""
        local = self.open_existing(entry)
        try:
            await self.ensure_loaded(local)
        except BaseException:
            self.release_local(local)
            raise
        return local

    def release_local(self, local: LocalFile, entry: FileEntry | None = None) -> None:
        """The last handle of a spool file closed: keep its bytes in the content cache when they
        are a server file's content, otherwise remove them (unsent bytes were moved away)."""
        self._drop_early(local, "the file was closed without being uploaded")
        local.close()
        kept = (entry is not None and entry.file is not None and not local.dirty
                and local.base is None and local.failure is None and not local.discarded
                and local.path.parent == self.spool_dir
                and self.cache.adopt(entry.file, local.path))
        if not kept and local.path.parent == self.spool_dir:
            local.path.unlink(missing_ok=True)
        if local.sidecar is not None:
            local.sidecar.unlink(missing_ok=True)

    # --------------------------------------------------------------- commit

    async def commit(self, entry: FileEntry, local: LocalFile) -> None:
        """Upload the spool of ``entry`` if it changed; raises FSError when that fails."""
        async with local.lock:
            if local.failure is not None:
                self._drop_early(local, "the file will not be uploaded")
                self.refused(entry, local)
                raise local.failure
            if not local.dirty or local.discarded or entry.removed and entry.local is not local:
                self._drop_early(local, "nothing to upload")
                return
            purpose = entry.purpose
            filename = entry.server_name
            where = f"{entry.directory.name}/{entry.name}"
            violation = rule_violation(purpose, filename, local.size, where)
            if violation is not None:
                local.failure = violation
                self._drop_early(local, "the file breaks a rule")
                self.refused(entry, local)
                raise violation
            try:
                uploaded, maybe_created_since = await self._finish_early(entry, local, where)
                if uploaded is None:
                    uploaded = await self._upload(where, filename, purpose, local.path,
                                                  local.size, sidecar=local.sidecar,
                                                  maybe_created_since=maybe_created_since)
            except (APIError, OSError) as exc:
                raise self._failed(entry, local, where, exc) from None
            local.dirty = False
            replaced = self.namespace.uploaded(entry, uploaded)
            superseded, entry.supersedes = entry.supersedes, []
            self.completed += 1
            log.info("uploaded %s as %s (%d bytes)", where, uploaded.id, uploaded.bytes)
        for old in ([replaced] if replaced is not None else []) + superseded:
            await self._delete_replaced(where, old)

    async def _upload(self, where: str, filename: str, purpose: str, path: Path,
                      size: int, *, sidecar: Path | None = None,
                      maybe_created_since: float | None = None) -> FileObject:
        expires = self._expires_after()
        mime = _mime_type(filename)
        in_parts = self._in_parts(purpose, filename, size)
        transfer = Transfer(where, size, "uploads-api" if in_parts else "post-files")
        self._started(transfer)
        try:
            if in_parts:
                return await self.client.upload_in_parts(
                    filename, purpose, path, part_size=self.settings.part_size,
                    concurrency=self.settings.concurrency, mime_type=mime,
                    expires_after=expires, progress=transfer.advance,
                    on_created=lambda upload: _note_upload(sidecar, upload.id))
            return await self.client.create_file(filename, purpose, path, mime_type=mime,
                                                 expires_after=expires,
                                                 progress=transfer.advance,
                                                 maybe_created_since=maybe_created_since)
        finally:
            self._finished(transfer)

    def _in_parts(self, purpose: str, filename: str, size: int) -> bool:
        """Whether a file goes through the Uploads API rather than one ``POST /files``."""
        return purpose in purposes.UPLOADS_API_PURPOSES and (
            size > self.settings.multipart_threshold or size > purposes.MAX_POST_FILE_BYTES
            or _MULTIPART_UNSAFE.search(filename) is not None)

    def _expires_after(self) -> ExpiresAfter | None:
        seconds = self.settings.expires_after
        return ExpiresAfter(seconds) if seconds else None

    # --------------------------------------------------- uploads while writing

    def wrote(self, entry: FileEntry, local: LocalFile) -> None:
        """``local`` (the spool of ``entry``) was written to: feed its early upload, give that
        up if the file can no longer be sent that way, or start one once the file is large
        enough (see :mod:`openai_fs.early_upload`)."""
        early = local.early
        if early is not None:
            if not early.over:
                problem = self._early_problem(entry, local, early)
                if problem is None:
                    early.grew()
                else:
                    early.abandon(problem)
            return
        if not self.settings.early or self._early_refused or self._nursery is None \
                or local.size < START_BYTES or not local.sequential or self.defers(entry) \
                or self._early_problem(entry, local) is not None:
            return
        self._early = {e for e in self._early if not e.over}
        if len(self._early) >= self.settings.concurrency:
            return      # each holds a connection: leave enough for everything else
        where = f"{entry.directory.name}/{entry.name}"
        early = EarlyUpload(self.client, path=local.path, filename=entry.server_name,
                            purpose=entry.purpose, mime_type=_mime_type(entry.server_name),
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
        if self._in_parts(purpose, filename, local.size) \
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

    @staticmethod
    def _drop_early(local: LocalFile, reason: str) -> None:
        if local.early is not None:
            local.early.abandon(reason)
            local.early = None

    def refused(self, entry: FileEntry, local: LocalFile | None = None) -> None:
        """A file that will not be uploaded (it broke a rule, or the spool disk is full) stops
        pretending: a new file leaves its directory, a replacement shows the old file again.
        The writer was told with the errno of its failure; the partial bytes are dropped."""
        if local is not None and entry.local is not local:
            return
        entry.local = None
        if entry.file is None:
            if not entry.removed:
                self.namespace.removed(entry)
        else:
            self.namespace.refresh_names(entry.directory)
        for hidden in entry.supersedes:
            self.namespace.restore(hidden)
        entry.supersedes = []

    def _failed(self, entry: FileEntry, local: LocalFile, where: str,
                exc: BaseException) -> UploadFailed:
        """Keep the bytes that did not reach the server, and say where they are."""
        saved = self._keep_unsent(local, entry)
        reason = str(exc)
        failure = UploadFailed(errno_for(exc), f"upload of {where} failed: {reason}; "
                                               f"the bytes are kept in {saved}",
                               level=logging.ERROR)
        local.failure = failure
        self.failures.append({"path": where, "reason": reason, "kept_in": str(saved),
                              "time": time.time()})
        if entry.local is local:
            entry.local = None
            if entry.file is None:          # a new file: it is not on the server
                self.namespace.removed(entry)
            else:                           # a replacement: the name holds the old file
                self.namespace.refresh_names(entry.directory)
        for hidden in entry.supersedes:     # files it was renamed over are shown again
            self.namespace.restore(hidden)
        entry.supersedes = []
        return failure

    def _keep_unsent(self, local: LocalFile, entry: FileEntry) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self._unsent_path(f"{stamp}-{entry.purpose}-", entry.name)
        os.replace(local.path, target)
        if local.sidecar is not None:
            local.sidecar.unlink(missing_ok=True)
            local.sidecar = None
        local.path = target
        return target

    def _unsent_path(self, prefix: str, name: str) -> Path:
        """A new path in ``unsent/``: the prefix, then as much of the name as fits."""
        self.unsent_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for counter in range(1, 10_000):
            head = prefix if counter == 1 else f"{prefix}{counter}-"
            target = self.unsent_dir / (head + names.cut(name.replace("/", "_"),
                                                         names.MAX_NAME_BYTES - len(head)))
            if not target.exists():
                return target
        raise OSError(errno.EEXIST, "no free name in the unsent folder")

    async def _delete_replaced(self, where: str, old: FileObject) -> None:
        try:
            await self.client.delete(old.id)
        except NotFoundError:
            pass
        except APIError as exc:
            log.warning("%s now holds the new upload, but the file it replaced (%s) could not "
                        "be deleted: %s", where, old.id, exc)
            self.failures.append({"path": where, "reason": f"delete of replaced {old.id}: {exc}",
                                  "time": time.time()})
        self.cache.discard(old.id)

    # ----------------------------------------------------- delete and move

    async def delete(self, entry: FileEntry) -> None:
        """``rm``: delete the server file (and drop any unsent bytes)."""
        if not entry.directory.writable:
            raise _not_writable(entry.directory)
        if entry.local is not None:
            entry.local.discarded = True
        held = self._held.pop(entry, None)
        if held is not None:
            self.release_local(held, entry)
            entry.local = None
        if entry.file is None:
            self.namespace.removed(entry)
            # it had been renamed over files that were waiting for its upload to go: they are
            # replaced, so they go now (as rename-then-rm does on any filesystem)
            superseded, entry.supersedes = entry.supersedes, []
            for old in superseded:
                await self._delete_replaced(f"{entry.directory.name}/{entry.name}", old)
            return
        file = entry.file
        if self.cache.disk.is_pinned(file.id):
            # an open handle must go on reading what it opened: keep a copy first
            await self.cache.fetch_whole(file)
        try:
            await self.client.delete(file.id)
        except NotFoundError:
            self.namespace.removed(entry)
            self.cache.discard(file.id)
            raise FSError(errno.ENOENT, f"{entry.directory.name}/{entry.name} was already "
                                        "deleted on the server", level=logging.INFO) from None
        self.namespace.removed(entry)
        self.cache.discard(file.id)
        log.info("deleted %s/%s (%s)", entry.directory.name, entry.name, file.id)

    async def move(self, entry: FileEntry, target: PurposeDir, name: str,
                   replaced: FileEntry | None) -> None:
        """``mv``: the file ends under ``target/name`` with the same bytes.

        A file not uploaded yet is only renamed. An uploaded file cannot be renamed on the
        server, so it is uploaded again under the new name (from the local copy or the content
        cache, downloading it first if needed), and the old file is deleted only after that
        upload succeeded. A file the move replaces is deleted afterwards too.
        """
        if not target.writable:
            raise _not_writable(target)
        if not entry.directory.writable:
            raise _not_writable(entry.directory)
        if not names.is_canonical(name):
            raise RuleViolation(errno.EINVAL, f"{target.name}/{name}: refused, the name uses "
                                              "the escape mark \u201b in a way the name rule "
                                              "cannot keep (see docs/SEMANTICS.md)")
        filename = _server_filename(name)
        violation = rule_violation(target.purpose or "", filename, entry.size,
                                   f"{target.name}/{name}")
        if violation is not None:
            # EXDEV, not EINVAL: mv reads EINVAL from rename as "moving a directory into
            # itself". With EXDEV it copies instead, and the copy is refused with EINVAL or
            # EFBIG and the rule named, while the source stays as it was.
            raise FSError(errno.EXDEV, f"moving {entry.directory.name}/{entry.name}: "
                                       f"{violation.message} (answered EXDEV)",
                          level=logging.INFO)
        if entry.local is not None:
            self._drop_early(entry.local, "the file was renamed")
        if entry.file is not None and entry.local is not None and entry.local.dirty:
            # changed and not uploaded yet: the bytes to move are the local ones; it moves
            # like a new file, and its old server file goes once they are uploaded
            self.namespace.detach(entry)
        if entry.file is None:
            if entry.local is not None:
                entry.local.purpose = target.purpose or ""
            if replaced is not None:
                # the file it replaces disappears from view now and from the server only once
                # this one is uploaded, so a failed upload loses nothing
                entry.supersedes.extend(self._displace(replaced))
            self.namespace.rename_unsent(entry, target, name)
            if entry in self._held and not self.defers(entry):
                await self._upload_held(entry)      # e.g. rsync's temp file, now in place
            return
        old = entry.file
        where = f"{target.name}/{name}"
        source, temporary = await self._content_path(entry)
        try:
            uploaded = await self._upload(where, filename, target.purpose or "", source,
                                          old.bytes if entry.local is None else entry.size)
        except (APIError, OSError) as exc:
            raise UploadFailed(errno_for(exc), f"moving {entry.directory.name}/{entry.name} "
                                               f"to {where} failed: {exc}; nothing changed",
                               level=logging.ERROR) from None
        finally:
            if temporary:
                source.unlink(missing_ok=True)
        if replaced is not None and replaced is not entry:
            # the file this move replaces goes (already gone on the server is fine)
            for old_file in self._displace(replaced):
                await self._delete_replaced(where, old_file)
        self.namespace.moved(entry, target, uploaded)
        if entry.local is not None:
            entry.local.purpose = target.purpose or ""
        log.info("moved %s (%s) to %s (%s)", entry.name, old.id, where, uploaded.id)
        await self._delete_replaced(where, old)

    def _displace(self, replaced: FileEntry) -> list[FileObject]:
        """A rename over ``replaced``: it leaves the view now. Returns the server files that go
        with it: its own, and those it was itself waiting to replace."""
        if replaced.local is not None:
            replaced.local.discarded = True
        self.namespace.removed(replaced)
        gone = [replaced.file] if replaced.file is not None else []
        gone += replaced.supersedes
        replaced.supersedes = []
        return gone

    async def _content_path(self, entry: FileEntry) -> tuple[Path, bool]:
        """A local file with the entry's bytes, and whether it is a temporary copy."""
        assert entry.file is not None
        if entry.local is not None and not entry.local.dirty and entry.local.base is None:
            return entry.local.path, False
        if entry.file.bytes > 0 and await self.cache.fetch_whole(entry.file):
            # a hard link keeps the bytes even if the cache evicts the file meanwhile
            copy = self.spool_dir / secrets.token_hex(8)
            os.link(self.cache.disk.path(entry.file.id), copy)
            return copy, True
        local = await self.load_existing(entry)
        local.close()
        return local.path, True

    async def cancel_abandoned_uploads(self) -> None:
        """Cancel the Uploads that mounts which died left open (they would otherwise stay
        pending on the server until they expire, an hour after they were made)."""
        while self.abandoned_uploads:
            upload_id = self.abandoned_uploads.pop()
            try:
                await self.client.cancel_upload(upload_id)
                log.info("cancelled Upload %s, left open by a mount that stopped", upload_id)
            except APIError as exc:
                # already completed, cancelled or expired: nothing is left to clean up
                log.info("Upload %s of a mount that stopped is gone already (%s)",
                         upload_id, exc.message)

    # ------------------------------------------------- deferred temporary files

    def defers(self, entry: FileEntry) -> bool:
        """Whether closing this file holds its upload back: a new file under a temporary name
        of rsync or GIO, which is renamed to its real name right after it is closed. The
        upload then happens inside that rename (which reports its failure), once, under the
        final name, instead of once under the temporary name and again after the rename."""
        return (self._nursery is not None and entry.file is None
                and TEMPORARY_NAME.match(entry.name) is not None)

    def hold(self, entry: FileEntry, local: LocalFile) -> None:
        """The last handle of a deferred file closed: keep its spool until it is renamed, or
        upload it under its own name after :data:`HOLD_SECONDS`."""
        assert self._nursery is not None
        self._held[entry] = local
        self._nursery.start_soon(self._upload_if_left, entry, local)

    def reopened(self, entry: FileEntry) -> None:
        self._held.pop(entry, None)

    async def _upload_if_left(self, entry: FileEntry, local: LocalFile) -> None:
        await trio.sleep(HOLD_SECONDS)
        if self._held.get(entry) is local:
            log.info("%s/%s was not renamed; uploading it under its own name",
                     entry.directory.name, entry.name)
            try:
                await self._upload_held(entry)
            except FSError as exc:
                log.error("%s", exc.message)

    async def _upload_held(self, entry: FileEntry) -> None:
        local = self._held.pop(entry)
        try:
            await self.commit(entry, local)
        finally:
            if entry.local is local:
                entry.local = None
            self.release_local(local, entry)

    async def upload_held(self) -> None:
        """Upload every deferred file now (the mount is being unmounted)."""
        for entry in list(self._held):
            try:
                await self._upload_held(entry)
            except FSError as exc:
                log.error("%s", exc.message)

    # --------------------------------------------------------------- status

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
                "held": [f"{e.directory.name}/{e.name}" for e in self._held],
                "completed": self.completed, "failed": list(self.failures),
                "spool_dir": str(self.spool_dir), "unsent_dir": str(self.unsent_dir)}

    def close(self) -> None:
        shutil.rmtree(self.spool_dir, ignore_errors=True)
        (self.spool_dir.parent / f"{self.spool_dir.name}.lock").unlink(missing_ok=True)
        os.close(self._lock_fd)

    # -------------------------------------------------------------- recovery

    def _recover_dead_spools(self, spool_root: Path) -> None:
        """Move what dead mounts left in their spools to ``unsent/``, and say so."""
        for folder in spool_root.iterdir():
            if not folder.is_dir():
                continue
            lock = spool_root / f"{folder.name}.lock"
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = None
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue            # a live mount owns it
                os.close(fd)
            rescued = []
            for path in folder.iterdir():
                if path.suffix == ".json":
                    upload_id = _read_sidecar(path).get("upload_id")
                    if isinstance(upload_id, str):
                        self.abandoned_uploads.append(upload_id)
                    continue
                info = _read_sidecar(path.with_suffix(".json"))
                if path.stat().st_size == 0 and not info:
                    continue
                target = self._unsent_path(
                    f"recovered-{info.get('purpose', 'unknown')}-",
                    str(info.get("name", path.name)))
                os.replace(path, target)
                rescued.append(str(target))
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)
            if rescued:
                log.warning("a previous mount stopped while %d file(s) were being written; "
                            "they were not uploaded and are kept in %s: %s", len(rescued),
                            self.unsent_dir, ", ".join(rescued))


def rule_violation(purpose: str, filename: str, size: int, where: str) -> RuleViolation | None:
    """The rule of the purpose this file breaks (EINVAL for its type, EFBIG for its size)."""
    problem = purposes.filename_problem(purpose, filename)
    if problem:
        return RuleViolation(errno.EINVAL, f"{where}: refused, {problem}")
    problem = purposes.size_problem(purpose, size)
    if problem:
        return RuleViolation(errno.EFBIG, f"{where}: refused, {problem}")
    return None


def _note_upload(sidecar: Path | None, upload_id: str) -> None:
    """Write the Upload's id into the spool's sidecar, for a later mount if this one dies."""
    if sidecar is None:
        return
    info = _read_sidecar(sidecar)
    info["upload_id"] = upload_id
    try:
        sidecar.write_text(json.dumps(info))
    except OSError as exc:
        log.debug("could not note Upload %s in %s: %s", upload_id, sidecar, exc)


def _read_sidecar(path: Path) -> dict[str, object]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _server_filename(name: str) -> str:
    return names.decode(name)


def _not_writable(directory: PurposeDir) -> FSError:
    if directory.purpose in purposes.OUTPUT_PURPOSES or not purposes.is_uploadable(
            directory.purpose or ""):
        return FSError(errno.EACCES, f"{directory.name}: files of this purpose are made by the "
                                     "platform and cannot be uploaded", level=logging.INFO)
    return FSError(errno.EROFS, "the mount is read-only", level=logging.INFO)


def _mime_type(filename: str) -> str:
    if filename.lower().endswith(".jsonl"):
        return "text/jsonl"
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or "application/octet-stream"
