"""Changes to files already on the server: replacing, deleting and moving.

Files are immutable in the API and have no rename, so every change is made of uploads and
deletes, ordered so that a failure loses nothing: a replacement is uploaded before the file it
replaces is deleted, and a move uploads the file under its new name and purpose before the old
file goes (docs/SEMANTICS.md, "Replacing and changing files", "Deleting", "Moving").
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import trio

from openai_fs.api import APIError, FileObject, FilesClient, NotFoundError
from openai_fs.core.cache import ContentCache
from openai_fs.core.content_access import ContentRefused
from openai_fs.core.errors import FSError, UploadFailed, errno_for
from openai_fs.core.namespace import FileEntry, Namespace, PurposeDir
from openai_fs.core.rules import server_filename
from openai_fs.core.spool import Spool
from openai_fs.core.uploader import Uploader

log = logging.getLogger(__name__)


class ServerChanges:
    """Deletes server files, moves them by uploading them again, and deletes what an upload
    replaced."""

    def __init__(self, client: FilesClient, namespace: Namespace, cache: ContentCache,
                 uploader: Uploader, spool: Spool) -> None:
        self.client = client
        self.namespace = namespace
        self.cache = cache
        self.uploader = uploader
        self.spool = spool

    # -------------------------------------------------------------- replace

    def record_upload(self, entry: FileEntry, uploaded: FileObject) -> list[FileObject]:
        """``entry`` is now the server file ``uploaded``; returns the server files this
        replaces (its previous file, and those it was renamed over), to be deleted next with
        :meth:`delete_replaced`."""
        replaced = self.namespace.uploaded(entry, uploaded)
        superseded, entry.supersedes = entry.supersedes, []
        return ([replaced] if replaced is not None else []) + superseded

    async def delete_replaced(self, where: str, replaced: list[FileObject]) -> None:
        """Delete the files a new upload at ``where`` replaced; one already gone is fine, one
        that cannot be deleted is logged and shown by ``status`` (the new file stays)."""
        for old in replaced:
            try:
                await self.client.delete(old.id)
            except NotFoundError:
                pass
            except APIError as exc:
                log.warning("%s now holds the new upload, but the file it replaced (%s) could "
                            "not be deleted: %s", where, old.id, exc)
                self.uploader.record_failure(where, f"delete of replaced {old.id}: {exc}")
            self.cache.discard(old.id)

    # --------------------------------------------------------------- delete

    async def delete(self, entry: FileEntry) -> None:
        """``rm``: the file leaves the namespace and, when it is on the server, the server."""
        if entry.file is None:
            self.namespace.removed(entry)
            # it had been renamed over files that were waiting for its upload to go: they are
            # replaced, so they go now (as rename-then-rm does on any filesystem)
            superseded, entry.supersedes = entry.supersedes, []
            await self.delete_replaced(f"{entry.directory.name}/{entry.name}", superseded)
            return
        file = entry.file
        try:
            await self.delete_file(file)
        except NotFoundError:
            self.namespace.removed(entry)
            self.cache.discard(file.id)
            raise FSError(errno.ENOENT, f"{entry.directory.name}/{entry.name} was already "
                                        "deleted on the server", level=logging.INFO) from None
        self.namespace.removed(entry)
        self.cache.discard(file.id)
        log.info("deleted %s/%s (%s)", entry.directory.name, entry.name, file.id)

    async def delete_file(self, file: FileObject) -> None:
        """``DELETE /files/{id}``, after keeping a copy of the bytes for the handles that have
        the file open (they must go on reading what they opened). Raises NotFoundError when
        the file is gone already."""
        if self.cache.disk.is_pinned(file.id):
            # (unless the server does not hand out the content: then those handles could not
            # read it anyway)
            try:
                await self.cache.fetch_whole(file)
            except ContentRefused:
                pass
        await self.client.delete(file.id)

    # ----------------------------------------------------------------- move

    async def upload_copy(self, entry: FileEntry, target: PurposeDir, name: str) -> FileObject:
        """The bytes of the uploaded file ``entry`` uploaded again as ``target/name`` (from the
        local copy or the content cache, downloading them first if needed), and kept in the
        content cache as the new file's (so a file the server will not hand out stays
        readable). Nothing else changes; a failure is an :class:`UploadFailed` that says so."""
        assert entry.file is not None
        where = f"{target.name}/{name}"
        source = await self._copy_of(entry)
        size = entry.file.bytes if entry.local is None else entry.size
        try:
            uploaded = await self.uploader.upload(where, server_filename(name),
                                                  target.purpose or "", source, size)
        except (APIError, OSError) as exc:
            source.unlink(missing_ok=True)
            raise UploadFailed(errno_for(exc), f"moving {entry.directory.name}/{entry.name} "
                                               f"to {where} failed: {exc}; nothing changed",
                               level=logging.ERROR) from None
        except BaseException:
            source.unlink(missing_ok=True)
            raise
        self.cache.adopt(uploaded, source)      # moves it, or removes it when it does not fit
        source.unlink(missing_ok=True)
        return uploaded

    async def finish_move(self, entry: FileEntry, target: PurposeDir, name: str,
                          uploaded: FileObject, replaced: list[FileObject]) -> None:
        """The copy ``uploaded`` of ``entry`` is on the server: the files the move replaces go,
        the entry becomes the copy (same inode, so open handles keep working), and its old
        file is deleted."""
        old = entry.file
        assert old is not None
        where = f"{target.name}/{name}"
        await self.delete_replaced(where, replaced)
        self.namespace.moved(entry, target, uploaded)
        log.info("moved %s (%s) to %s (%s)", entry.name, old.id, where, uploaded.id)
        await self.delete_replaced(where, [old])

    async def _copy_of(self, entry: FileEntry) -> Path:
        """A temporary copy of the entry's bytes in the spool folder."""
        assert entry.file is not None
        copy = self.spool.temporary_path()
        local = entry.local
        if local is not None and not local.dirty and local.base is None:
            # a copy, not a link: the spool may be written again later
            await trio.to_thread.run_sync(shutil.copyfile, local.path, copy)
            return copy
        if entry.file.bytes > 0 and await self.cache.fetch_whole(entry.file):
            # a hard link keeps the bytes even if the cache evicts the file meanwhile; cached
            # content never changes
            os.link(self.cache.disk.path(entry.file.id), copy)
            return copy
        fd = os.open(copy, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            await self.cache.copy_into(entry.file, copy, fd)
        except BaseException:
            copy.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        return copy
