"""Files opened through the mount: every state change of a file being written, from ``open`` or
``create`` to the last ``release``, and the decision when to upload it.

The FUSE adapter translates each request into one call here and each failure into its errno;
it holds no write state. Bytes written go to a spool file (:mod:`openai_fs.core.spool`); the
first ``flush`` with unsent changes (every ``close()`` sends one), or ``fsync``, uploads them
(:meth:`OpenFiles.commit`, with :mod:`openai_fs.core.uploader`), so ``close()`` returns only
once the server has the file. If the upload fails, the bytes are kept in ``unsent/``, the
failure is logged with the server's message and shown by ``openai-fs status``, and the entry
stops pretending to be on the server. Replacing, deleting and moving server files is
:mod:`openai_fs.core.changes`.

Concurrency: everything runs on the trio loop. A spool's ``lock`` is held while an upload reads
it (see :class:`~openai_fs.core.spool.LocalFile`); state is re-read after every ``await``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import trio

from openai_fs.api import APIError, FileObject
from openai_fs.core import names, rules
from openai_fs.core.cache import ContentCache
from openai_fs.core.changes import ServerChanges
from openai_fs.core.content_access import ContentRefused
from openai_fs.core.errors import AlreadyExists, FSError, UploadFailed, errno_for
from openai_fs.core.handles import ContentReader, FileHandle, LocalReader, LocalWriter
from openai_fs.core.local_only import LocalOnly
from openai_fs.core.namespace import FileEntry, Namespace, Node, PurposeDir
from openai_fs.core.spool import LocalFile, Record, Spool
from openai_fs.core.uploader import Uploader

if TYPE_CHECKING:
    from openai_fs.core.write_back import WriteBack

log = logging.getLogger(__name__)

#: temporary files of tools that write a copy and then rename it over the real name: rsync
#: (``.NAME.XXXXXX``), GIO, i.e. GNOME Files, gio copy and gio save (``.goutputstream-XXXXXX``),
#: and LibreOffice (``luXXXX.tmp``)
TEMPORARY_NAME = re.compile(r"^\.goutputstream-[A-Za-z0-9]{6}$|^\..+\.[A-Za-z0-9]{6}$"
                            r"|^lu[A-Za-z0-9]{3,}\.tmp$")
#: a temporary file nobody renamed is uploaded under its own name this long after its last close
HOLD_SECONDS = 5.0


@dataclass(eq=False)
class OpenFiles:
    """Opens, reads, writes, truncates, flushes and releases files, and renames and removes
    them; owns every change of ``FileEntry.local`` and of the spool files' handle counts."""

    namespace: Namespace
    cache: ContentCache
    spool: Spool
    uploader: Uploader
    changes: ServerChanges
    #: runs the deferred uploads of temporary files; without one nothing is deferred
    nursery: trio.Nursery | None = None
    #: closed temporary files waiting for their rename (see defers)
    _held: dict[FileEntry, LocalFile] = field(default_factory=dict)
    #: the background queue of journaled uploads and deletes (wired by FileSystem)
    write_back: WriteBack | None = None
    #: names of files kept local (editor and desktop temporaries; core/local_only.py)
    local_only: LocalOnly = field(default_factory=LocalOnly)

    @property
    def writes_back(self) -> bool:
        """``--write-back``: close() and rm return once journaled (core/write_back.py)."""
        return self.write_back is not None and self.write_back.enabled

    # ------------------------------------------------------------------ open

    async def open(self, entry: FileEntry, flags: int, opener: int | None) -> FileHandle:
        """``open``: a reader of the server file or of the local bytes, or a writer."""
        if entry.file is None and entry.local is None:
            raise FSError(errno.ENOENT, f"{entry.directory.name}/{entry.name} is gone",
                          level=logging.DEBUG)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            return await self._open_for_writing(entry, flags, opener)
        self._check_readable(entry)
        if entry.local is not None:
            self._held.pop(entry, None)
            entry.local.handles += 1
            return LocalReader(entry, entry.local)
        assert entry.file is not None
        self.cache.pin(entry.file.id)
        return ContentReader(entry, entry.file)

    async def create(self, directory: Node, name: str, flags: int,
                     opener: int | None) -> tuple[LocalWriter, FileEntry]:
        """``create``: a new file (not on the server until its writer closes it), or, for a
        name that exists, that file opened for writing."""
        if not isinstance(directory, PurposeDir):
            raise FSError(errno.EACCES, "files can only be created in a purpose directory",
                          level=logging.INFO)
        existing = directory.by_name.get(name)
        if existing is not None:
            if flags & os.O_EXCL:
                raise AlreadyExists(f"{directory.name}/{name}")
            return await self._open_for_writing(existing, flags, opener), existing
        if not names.fits(name):
            raise FSError(errno.ENAMETOOLONG, f"{name[:40]}...: name too long",
                          level=logging.INFO)
        kept_local = self.local_only.matches(name) or self.local_only.is_vim_probe(name, flags)
        if kept_local:
            if not directory.writable:      # never uploaded, but the folder takes no files
                raise rules.not_writable(directory)
        else:
            rules.check_new_file(directory, name)
        local = self.spool.new_file(directory.purpose or "", name)
        entry = self.namespace.add_unsent(directory, name, local)
        entry.local_only = kept_local
        local.handles += 1
        return LocalWriter(entry, local, opener), entry

    def readable(self, entry: FileEntry) -> bool:
        """Whether the bytes of ``entry`` can be read: it has local bytes, the mount holds a
        copy, or the server is not known to refuse its purpose's content."""
        return (entry.local is not None or entry.file is None
                or self.cache.access.state(entry.purpose) is not False
                or self.cache.holds(entry.file))

    def _check_readable(self, entry: FileEntry) -> None:
        """Refuse (EACCES) what needs the bytes of a file the server will not hand out; root and
        --allow-other users are not stopped by the mode bits alone."""
        if not self.readable(entry):
            raise ContentRefused(f"{entry.directory.name}/{entry.name}", entry.purpose)

    async def _open_for_writing(self, entry: FileEntry, flags: int,
                                opener: int | None) -> LocalWriter:
        if not entry.writable:
            raise rules.not_writable(entry.directory)
        if not flags & os.O_TRUNC and (flags & os.O_ACCMODE != os.O_WRONLY
                                       or flags & os.O_APPEND):
            # read back or appended to: the old bytes are needed. A plain O_WRONLY open needs
            # them only once it writes or truncates to a non-zero size, which then fail with
            # EACCES (the bytes are fetched lazily: LocalFile.ensure_loaded); GIO opens the file
            # it replaces that way, then renames a temporary file over it
            self._check_readable(entry)
        while True:
            local = entry.local
            if local is None or local.failure is not None:
                if flags & os.O_TRUNC or entry.file is None:
                    local = self.spool.new_file(entry.purpose, entry.name)
                else:   # changing a server file in place: its bytes are fetched when needed
                    local = self._standing_for(entry)
                entry.local = local
                break
            if not flags & os.O_TRUNC:
                break
            async with local.lock:      # not under an upload that is reading the spool
                if entry.local is local and local.fd >= 0:
                    local.truncate(0)
                    break
            # that upload ended meanwhile and its writer let the spool go: start again
        self._held.pop(entry, None)
        local.handles += 1
        return LocalWriter(entry, local, opener)

    def _standing_for(self, entry: FileEntry) -> LocalFile:
        """A spool standing for the current content of a server file (to change it in place);
        the bytes are fetched by ``LocalFile.ensure_loaded`` when first needed."""
        assert entry.file is not None
        local = self.spool.new_file(entry.purpose, entry.name)
        local.base = entry.file
        local.size = entry.file.bytes
        local.dirty = False
        return local

    # ---------------------------------------------------------- read, write

    async def read(self, handle: FileHandle, offset: int, size: int) -> bytes | memoryview:
        """May return a view that is valid only until the next await (see
        ``ContentCache.read_for_reply``)."""
        if isinstance(handle, ContentReader):
            entry, file = handle.entry, handle.file
            if not entry.removed:
                # As on a local disk, a descriptor reads what the file holds now: after another
                # one replaced it (the kernel already shows the new size), the new bytes. Only
                # a file removed from the namespace (rm) keeps serving what it was opened with.
                if entry.local is not None:
                    return await self._read_local(entry.local, offset, size)
                file = entry.file or file
            return await self.cache.read_for_reply(file, offset, size)
        return await self._read_local(handle.local, offset, size)

    async def _read_local(self, local: LocalFile, offset: int, size: int) -> bytes:
        await local.ensure_loaded(self.cache)
        return local.read(offset, size)

    async def write(self, handle: FileHandle, offset: int, data: bytes) -> int:
        if not isinstance(handle, LocalWriter):
            raise FSError(errno.EBADF, "not open for writing", level=logging.DEBUG)
        local = handle.local
        await local.ensure_loaded(self.cache)
        if local.lock.locked():     # an upload of this file is running: wait for it
            async with local.lock:
                pass
        written = local.write(offset, data)
        entry = handle.entry
        self.uploader.wrote(entry, local,
                            may_start=not self.defers(entry) and not entry.local_only)
        return written

    async def truncate(self, entry: FileEntry, size: int, handle: FileHandle | None) -> None:
        """``truncate``/``ftruncate``: of a file being written, its spool; of a closed,
        uploaded file, a replacement, uploaded at once."""
        if not entry.writable:
            raise rules.not_writable(entry.directory)
        local = handle.local if isinstance(handle, (LocalReader, LocalWriter)) else entry.local
        if local is not None:
            if size:
                await local.ensure_loaded(self.cache)
            local.truncate(size)
            return
        if entry.file is not None and size == entry.file.bytes:
            return
        if size:
            self._check_readable(entry)     # what stays of the old bytes must be fetched
        local = self._standing_for(entry) if size else self.spool.new_file(entry.purpose,
                                                                            entry.name)
        entry.local = local
        local.handles += 1
        try:
            await local.ensure_loaded(self.cache)
            local.truncate(size)
            await self.commit(entry, local)
        finally:
            local.handles -= 1
            if entry.local is local:
                entry.local = None
            self._let_go(local, entry)

    # ------------------------------------------------------- close and sync

    async def flush(self, handle: FileHandle, closed_by_a_copy: Callable[[], bool]) -> None:
        """A ``close()``: uploads the writer's changes, unless this close came from a copy of
        the descriptor while the writer still holds the file (``closed_by_a_copy``: a program
        it started, a forked child, a ``dup``), or the file is a deferred temporary."""
        if not isinstance(handle, LocalWriter):
            return
        entry, local = handle.entry, handle.local
        if self.defers(entry) or entry.local_only:
            return      # a temporary file: uploaded when renamed (see defers), or never
        if local.dirty and closed_by_a_copy():
            # The writer itself still has the file open and is not done; its own close
            # uploads. This also spares a shell's "echo text > file" the upload of an empty
            # file first.
            log.debug("flush of %s from a copy of the descriptor: upload deferred", entry.name)
            return
        if self.writes_back:
            await self._queue(entry, local)
            return
        await self.commit(entry, local)

    async def fsync(self, handle: FileHandle) -> None:
        """``fsync``: the file is on the server when it returns (with --write-back too)."""
        if isinstance(handle, LocalReader) and self.write_back is not None:
            await self.write_back.wait_file(handle.local)   # sync FILE opens it read-only
            return
        if not isinstance(handle, LocalWriter):
            return
        if self.defers(handle.entry) or handle.entry.local_only:
            # rsync --fsync and GIO sync their temporary file just before renaming it: make its
            # spool durable (a later mount recovers it after a crash); the upload follows at
            # the rename (a file kept local is only made durable)
            await trio.to_thread.run_sync(os.fsync, handle.local.fd)
            return
        if self.writes_back:
            assert self.write_back is not None
            await self._queue(handle.entry, handle.local)
            await self.write_back.wait_file(handle.local)
            return
        await self.commit(handle.entry, handle.local)

    async def _queue(self, entry: FileEntry, local: LocalFile) -> None:
        """--write-back's close(): the spool made durable and journaled, its upload queued.
        What commit() would refuse at once is refused here too."""
        assert self.write_back is not None
        if not self._sendable(entry, local):
            return
        local.drop_early("the file is uploaded in the background")
        await self.write_back.enqueue_upload(entry, local)

    async def release(self, handle: FileHandle) -> None:
        """The last close of a descriptor."""
        if isinstance(handle, ContentReader):
            self.cache.unpin(handle.file.id)
            return
        entry, local = handle.entry, handle.local
        local.handles -= 1
        if local.handles > 0 or local.queued:
            return      # a queued spool is let go by the queue, once uploaded
        if entry.local_only and not local.discarded and entry.local is local:
            return      # a file kept local lives in its spool while the mount lives
        pending = local.dirty and local.failure is None and not local.discarded
        if pending and self.defers(entry):
            self._hold(entry, local)
            return
        if pending and self.writes_back:
            try:
                await self._queue(entry, local)     # written without a flush (mmap)
            except FSError as exc:
                log.error("%s", exc.message)
            if local.queued:
                return
        elif pending:
            # written without a flush (e.g. through mmap): the last chance to upload
            try:
                await self.commit(entry, local)
            except FSError as exc:
                log.error("%s", exc.message)
        if entry.local is local:
            entry.local = None
            if local.failure is not None:
                self._give_up(entry, local)
        self._let_go(local, entry)

    def _let_go(self, local: LocalFile, entry: FileEntry) -> None:
        """The last handle of a spool file closed: keep its bytes in the content cache when they
        are the server file's content, otherwise remove them (unsent bytes were moved away)."""
        local.drop_early("the file was closed without being uploaded")
        local.close()
        kept = (entry.file is not None and not local.dirty and local.base is None
                and local.failure is None and not local.discarded and self.spool.holds(local)
                and self.cache.adopt(entry.file, local.path))
        self.spool.remove(local, keep_bytes=kept)

    # ----------------------------------------------------------------- upload

    async def commit(self, entry: FileEntry, local: LocalFile, *,
                     try_later: Callable[[BaseException], Exception] | None = None) -> None:
        """Upload the spool of ``entry`` if it changed; raises FSError when that fails, or, for
        a failure that may pass (no connection, 5xx, a rate limit), ``try_later(exc)`` when
        given (the write-back queue tries again; the bytes stay where they are).

        A rename or ``rm`` does not wait for an upload in flight (the kernel holds the
        directories locked meanwhile); the upload, once back, makes the server match them: a
        file removed while it was sent is deleted again, and one renamed while it was sent is
        uploaded again under its new name before the copy under the old name is deleted.
        """
        async with local.lock:
            if not self._sendable(entry, local):
                return
            where = f"{entry.directory.name}/{entry.name}"
            if local.record is not None:
                await trio.to_thread.run_sync(self.spool.journal.sending, local.record)
            try:
                uploaded = await self.uploader.send(entry, local, where)
            except (APIError, OSError) as exc:
                if try_later is not None and isinstance(exc, APIError) \
                        and self.uploader.client.retry.is_retryable(exc):
                    raise try_later(exc) from None
                raise self._failed(entry, local, where, exc) from None
            if local.record is not None:
                await trio.to_thread.run_sync(self.spool.journal.uploaded, local.record,
                                              uploaded.id)
            local.dirty = False
            if local.discarded:     # rm, or renamed over, while it was sent
                log.info("%s was removed while it was uploaded; deleting the upload (%s)",
                         where, uploaded.id)
                replaced = [uploaded]
            else:
                uploaded, strays = await self._follow_renames(entry, local, uploaded)
                where = f"{entry.directory.name}/{entry.name}"
                replaced = self.changes.record_upload(entry, uploaded) + strays
                self.uploader.completed += 1
                log.info("uploaded %s as %s (%d bytes)", where, uploaded.id, uploaded.bytes)
        await self.changes.delete_replaced(where, replaced)

    def _sendable(self, entry: FileEntry, local: LocalFile) -> bool:
        """Whether the spool of ``entry`` has changes to send. Raises what keeps it from the
        server (an earlier failure, a rule it breaks), the entry then giving up."""
        if local.failure is not None:
            local.drop_early("the file will not be uploaded")
            self._give_up(entry, local)
            raise local.failure
        if not local.dirty or local.discarded or entry.removed and entry.local is not local:
            local.drop_early("nothing to upload")
            return False
        where = f"{entry.directory.name}/{entry.name}"
        violation = rules.rule_violation(entry.purpose, entry.server_name, local.size, where)
        if violation is not None:
            local.failure = violation
            local.drop_early("the file breaks a rule")
            self._give_up(entry, local)
            raise violation
        return True

    async def _follow_renames(self, entry: FileEntry, local: LocalFile,
                              uploaded: FileObject) -> tuple[FileObject, list[FileObject]]:
        """``uploaded`` under the name and purpose the entry has now: uploaded again (from the
        spool, still locked) while the entry was renamed during the upload. Returns the file
        and the copies under earlier names, to be deleted once this one stands."""
        strays: list[FileObject] = []
        while (uploaded.filename, uploaded.purpose) != (entry.server_name, entry.purpose):
            where = f"{entry.directory.name}/{entry.name}"
            log.info("%s/%s was renamed to %s while it was uploaded; uploading it again under "
                     "its new name", uploaded.purpose, uploaded.filename, where)
            strays.append(uploaded)
            try:
                uploaded = await self.uploader.upload(where, entry.server_name, entry.purpose,
                                                      local.path, local.size, local=local)
            except (APIError, OSError) as exc:
                for stray in strays:        # nothing is lost: the server keeps those copies
                    self.namespace.restore(stray)
                kept = ", ".join(f"{stray.purpose}/{stray.filename} ({stray.id})"
                                 for stray in strays)
                raise self._failed(entry, local, where, exc,
                                   note=f"it is on the server under its old name as {kept}") \
                    from None
        return uploaded, strays

    def _failed(self, entry: FileEntry, local: LocalFile, where: str,
                exc: BaseException, *, note: str = "") -> UploadFailed:
        """Keep the bytes that did not reach the server, and say where they are."""
        saved = self.spool.keep_unsent(local, entry.purpose, entry.name)
        reason = str(exc)
        failure = UploadFailed(errno_for(exc), f"upload of {where} failed: {reason}; "
                                               f"the bytes are kept in {saved}"
                                               + (f"; {note}" if note else ""),
                               level=logging.ERROR)
        local.failure = failure
        self.uploader.record_failure(where, reason, saved)
        self._give_up(entry, local)
        return failure

    def _give_up(self, entry: FileEntry, local: LocalFile) -> None:
        """A file that will not be uploaded (it broke a rule, the spool disk is full, its
        upload failed) stops pretending: a new file leaves its directory, a replacement shows
        the old file again, and files it was renamed over come back. The writer was told
        with the errno of its failure."""
        if entry.local is not None and entry.local is not local:
            return      # another spool took the name over meanwhile
        entry.local = None
        if entry.file is None:
            if not entry.removed:
                self.namespace.removed(entry)
        else:
            self.namespace.refresh_names(entry.directory)
        for hidden in entry.supersedes:
            self.namespace.restore(hidden)
        entry.supersedes = []

    # -------------------------------------------------------- remove, rename

    async def unlink(self, entry: FileEntry) -> None:
        """``rm``: the server file is deleted and any unsent bytes dropped (with --write-back
        once journaled, the delete sent in the background)."""
        if not entry.directory.writable:
            raise rules.not_writable(entry.directory)
        local = entry.local
        if local is not None:
            local.discarded = True
        held = self._held.pop(entry, None)
        if held is not None:
            self._let_go(held, entry)
            entry.local = None
        if local is not None and local.queued:
            self._unqueue(entry, local)
        if entry.local_only:
            self.namespace.removed(entry)
            if local is not None and local.handles == 0:
                entry.local = None
                self._let_go(local, entry)
            return
        if not self.writes_back:
            await self.changes.delete(entry)
            return
        assert self.write_back is not None
        gone = ([entry.file] if entry.file is not None else []) + entry.supersedes
        entry.supersedes = []
        for file in gone:
            await self.write_back.enqueue_delete(file, entry.directory)
        self.namespace.removed(entry, until_gone=True)

    def _unqueue(self, entry: FileEntry, local: LocalFile) -> None:
        """A queued spool removed before its upload began: its record goes, and it is let go
        once nothing has it open (an upload already under way deletes what it made)."""
        assert self.write_back is not None
        if self.write_back.cancel(local) and local.handles == 0:
            local.queued = False
            if entry.local is local:
                entry.local = None
            self._let_go(local, entry)

    async def rename(self, source: Node, target: Node, name: str, *,
                     replace: bool = True) -> None:
        """``mv``: the file ends under ``target/name`` with the same bytes.

        A file not uploaded yet is only renamed. An uploaded file cannot be renamed on the
        server, so it is uploaded again under the new name, and the old file is deleted only
        after that upload succeeded. A file the move replaces is deleted afterwards too.
        Without ``replace`` (``RENAME_NOREPLACE``) an existing target is EEXIST.
        """
        if not isinstance(source, FileEntry) or not isinstance(target, PurposeDir):
            raise FSError(errno.EPERM, "only files can be moved, and only into a purpose "
                                       "directory", level=logging.INFO)
        if not names.fits(name):
            raise FSError(errno.ENAMETOOLONG, "name too long", level=logging.INFO)
        replaced = target.by_name.get(name)
        if replaced is source:
            return
        if replaced is not None and not replace:
            raise AlreadyExists(f"{target.name}/{name}")
        if self.local_only.matches(name):
            await self._keep_local(source, target, name, replaced)
            return
        if source.local_only or source.kept_name is not None:
            await self._stop_keeping_local(source, target, name, replaced)
            return
        await self._move(source, target, name, replaced)

    async def _keep_local(self, entry: FileEntry, target: PurposeDir, name: str,
                          replaced: FileEntry | None) -> None:
        """A rename onto a name kept local: nothing goes to the server. A file being written
        (or kept local already) is renamed in the mount; a server file is shown under the local
        name while its server file stays as it is (vim renames ``report.txt`` to
        ``report.txt~`` before it writes the new one), and goes when that name is removed."""
        if not target.writable or not entry.directory.writable:
            raise rules.not_writable(target if not target.writable else entry.directory)
        gone = self._displace(replaced) if replaced is not None else []
        if entry.file is not None and entry.local is not None and entry.local.dirty:
            self.namespace.detach(entry)        # its unsaved bytes are what is kept local
        if entry.file is None:
            for hidden in entry.supersedes:     # it will never replace them: back they come
                self.namespace.restore(hidden)
            entry.supersedes = []
            entry.local_only = True
            if entry.local is not None:
                entry.local.drop_early("the file is kept local")
                entry.local.purpose = target.purpose or ""
            self._held.pop(entry, None)
            self.namespace.rename_unsent(entry, target, name)
        elif target is entry.directory:
            self.namespace.keep_under(entry, name)
        else:
            raise FSError(errno.EXDEV, f"{entry.directory.name}/{entry.name}: a file on the "
                                       f"server kept local under {target.name}/{name} stays in "
                                       "its own folder (answered EXDEV)", level=logging.INFO)
        await self.changes.delete_replaced(f"{target.name}/{name}", gone)

    async def _stop_keeping_local(self, entry: FileEntry, target: PurposeDir, name: str,
                                  replaced: FileEntry | None) -> None:
        """A file kept local renamed to an ordinary name: from now on it goes to the server
        like any file (at once, if nothing has it open). A server file shown under a local name
        takes its own name back without a request when that is the name it is given."""
        if entry.kept_name is not None:
            assert entry.file is not None
            if target is entry.directory and names.encode(entry.file.filename) == name:
                gone = self._displace(replaced) if replaced is not None else []
                self.namespace.keep_under(entry, None)
                await self.changes.delete_replaced(f"{target.name}/{name}", gone)
                return
            self.namespace.keep_under(entry, None)
            await self._move(entry, target, name, target.by_name.get(name))
            return
        self._refuse_rule_breaking_move(entry, target, name)
        entry.local_only = False
        local = entry.local
        await self._move(entry, target, name, replaced)
        if local is not None and local.handles == 0 and entry.local is local \
                and not local.discarded:
            # closed already: nobody's close will upload it, so the rename does, and reports
            # its failure (as for rsync's and GIO's temporary files)
            try:
                if self.writes_back:
                    await self._queue(entry, local)
                    return
                await self.commit(entry, local)
            finally:
                if not local.queued and entry.local is local:
                    entry.local = None
                    self._let_go(local, entry)

    @staticmethod
    def _refuse_rule_breaking_move(entry: FileEntry, target: PurposeDir, name: str) -> None:
        violation = rules.rule_violation(target.purpose or "", rules.server_filename(name),
                                         entry.size, f"{target.name}/{name}")
        if violation is not None:
            # EXDEV, not EINVAL: mv reads EINVAL from rename as "moving a directory into
            # itself". With EXDEV it copies instead, and the copy is refused with EINVAL or
            # EFBIG and the rule named, while the source stays as it was.
            raise FSError(errno.EXDEV, f"moving {entry.directory.name}/{entry.name}: "
                                       f"{violation.message} (answered EXDEV)",
                          level=logging.INFO)

    async def _move(self, entry: FileEntry, target: PurposeDir, name: str,
                    replaced: FileEntry | None) -> None:
        if not target.writable:
            raise rules.not_writable(target)
        if not entry.directory.writable:
            raise rules.not_writable(entry.directory)
        rules.check_name(target, name)
        self._refuse_rule_breaking_move(entry, target, name)
        if entry.local is not None:
            entry.local.drop_early("the file was renamed")
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
            if entry.local is not None and entry.local.record is not None:
                # a crash now must not upload it under its old name
                await trio.to_thread.run_sync(self.spool.journal.renamed, entry.local.record,
                                              target.purpose or "", name, entry.supersedes)
            if entry in self._held and not self.defers(entry):
                await self._upload_held(entry)      # e.g. rsync's temp file, now in place
            return
        if not self.readable(entry):
            # the API cannot rename: a move uploads the bytes again, and there are none
            raise FSError(errno.EACCES, f"cannot move {entry.directory.name}/{entry.name}: the "
                                        "API cannot rename a file, so a move uploads its bytes "
                                        f"again, and the server does not hand out {entry.purpose} "
                                        "content; nothing changed", level=logging.WARNING)
        uploaded = await self.changes.upload_copy(entry, target, name)
        gone = self._displace(replaced) if replaced is not None and replaced is not entry \
            else []
        if entry.local is not None:
            entry.local.purpose = target.purpose or ""
        await self.changes.finish_move(entry, target, name, uploaded, gone)

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

    # --------------------------------------------------------- background

    async def sync_directory(self, directory: Node) -> None:
        """``sync DIR``: every queued upload and delete of the directory (of every directory,
        for the root) is on the server; raises the first failure among them."""
        if self.write_back is None:
            return
        if isinstance(directory, PurposeDir):
            await self.write_back.wait_directory(directory)
        elif directory is self.namespace.root:
            await self.write_back.wait_all()

    async def sync_all(self) -> None:
        """``openai-fs sync`` and unmount: everything queued is on the server."""
        if self.write_back is not None:
            await self.write_back.wait_all()

    def uploaded_in_background(self, entry: FileEntry, local: LocalFile) -> None:
        """The queue uploaded ``local`` (or found it removed): its record goes, and the spool
        is let go if nothing has it open."""
        if local.record is not None:
            self.spool.journal.remove(local.record)
            local.record = None
        local.queued = False
        if local.handles == 0:
            if entry.local is local:
                entry.local = None
            self._let_go(local, entry)

    async def adopt_upload(self, entry: FileEntry, local: LocalFile,
                           uploaded: FileObject) -> None:
        """A resumed upload turned out to have reached the server as ``uploaded`` before the
        mount that sent it stopped: recorded as if this mount had just made it."""
        async with local.lock:
            where = f"{entry.directory.name}/{entry.name}"
            local.dirty = False
            replaced = self.changes.record_upload(entry, uploaded)
            self.uploader.completed += 1
            log.info("%s had reached the server as %s before the mount that sent it stopped",
                     where, uploaded.id)
        await self.changes.delete_replaced(where, replaced)

    def resume(self, record: Record) -> None:
        """Queue again what a dead mount of this account journaled: its spool file shows
        under its name (readable) until uploaded; a file it deletes is hidden at once."""
        assert self.write_back is not None
        if record.op == "delete":
            file = FileObject.from_entry(record.journal["file"])
            self.namespace.hide(file)
            self.write_back.resume_delete(record, file, self.namespace.purpose_dir(file.purpose))
            return
        purpose, name = str(record.data.get("purpose")), str(record.data.get("name"))
        directory = self.namespace.purpose_dir(purpose)
        path = record.data_path
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        local = LocalFile(path, fd, purpose, size=os.fstat(fd).st_size, sidecar=record.path,
                          record=record, queued=True)
        try:
            entry = self.namespace.add_unsent(directory, name, local)
        except FSError:
            local.close()
            target = self.spool.keep_unsent(local, purpose, name)
            self.spool.journal.remove(record)
            log.warning("%s/%s was left to upload by a mount that stopped, but that name is "
                        "taken here; its bytes are kept in %s", purpose, name, target)
            return
        replaces = [FileObject.from_entry(item) for item in record.journal.get("replaces", [])]
        for file in replaces:
            self.namespace.hide(file)
        entry.supersedes = replaces
        self.write_back.resume_upload(record, entry, local)

    # ------------------------------------------------ deferred temporary files

    def defers(self, entry: FileEntry) -> bool:
        """Whether closing this file holds its upload back: a new file under a temporary name
        of rsync or GIO, which is renamed to its real name right after it is closed. The
        upload then happens inside that rename (which reports its failure), once, under the
        final name, instead of once under the temporary name and again after the rename."""
        return (self.nursery is not None and entry.file is None and not entry.local_only
                and TEMPORARY_NAME.match(entry.name) is not None)

    def _hold(self, entry: FileEntry, local: LocalFile) -> None:
        """The last handle of a deferred file closed: keep its spool until it is renamed, or
        upload it under its own name after :data:`HOLD_SECONDS`."""
        assert self.nursery is not None
        self._held[entry] = local
        self.nursery.start_soon(self._upload_if_left, entry, local)

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
            self._let_go(local, entry)

    async def upload_held(self) -> None:
        """Upload every deferred file now (the mount is being unmounted)."""
        for entry in list(self._held):
            try:
                await self._upload_held(entry)
            except FSError as exc:
                log.error("%s", exc.message)

    # ----------------------------------------------------------------- status

    def statistics(self) -> dict[str, object]:
        queue = self.write_back.statistics() if self.write_back is not None else None
        kept = [entry for entry in self.namespace.entries()
                if (entry.local_only or entry.kept_name is not None) and not entry.removed]
        return {**self.uploader.statistics(), "queue": queue,
                "kept_local": {"files": len(kept), "bytes": sum(e.size for e in kept)},
                "held": [f"{e.directory.name}/{e.name}" for e in self._held],
                "spool_dir": str(self.spool.folder), "unsent_dir": str(self.spool.unsent_dir)}
