"""The pyfuse3 adapter: translates FUSE requests to the core, and failures to errno.

Every handler goes through :func:`_handler`, so no exception can reach pyfuse3's loop (which
would end the mount): refusals and API errors become their errno with one log line (status,
server message, request id), anything unexpected is logged with its traceback and becomes EIO.
"""

from __future__ import annotations

import bisect
import errno
import functools
import json
import logging
import os
import stat
from dataclasses import dataclass
from typing import Any, Callable

import pyfuse3
import trio

from openai_fs.core import names
from openai_fs.fuse import openers
from openai_fs.api import APIError, FileObject
from openai_fs.core.cache import ContentCache
from openai_fs.core.errors import FSError, errno_for, log_level_for
from openai_fs.core.namespace import (
    CONTROL_INODE,
    CONTROL_NAME,
    ROOT_INODE,
    Directory,
    FileEntry,
    Namespace,
    NoSuchEntry,
    PurposeDir,
)
from openai_fs.core.uploads import LocalFile, UploadEngine, _not_writable

log = logging.getLogger(__name__)

XATTR_PREFIX = b"user.openai."
#: attribute namespaces the kernel and tools probe that this filesystem does not support
UNSUPPORTED_XATTRS = (b"security.", b"system.", b"trusted.")
#: st_blksize: the I/O size programs use for their buffers
BLOCK_HINT = 1024 * 1024
#: directories never change identity; their names can be cached long
DIR_ENTRY_TIMEOUT = 300.0


@dataclass(frozen=True)
class Ownership:
    uid: int
    gid: int


@dataclass(eq=False)
class Handle:
    """An open file: reading a server file, or reading/writing local (spool) bytes."""

    entry: FileEntry | None
    #: the server file opened for reading (its bytes never change)
    file: FileObject | None = None
    #: the spool, when the file was opened for writing or is still being written
    local: LocalFile | None = None
    writable: bool = False
    #: a snapshot served by the control file
    snapshot: bytes | None = None
    #: the process that opened it (see ``flush``)
    opener: int | None = None


def _handler(method: Callable[..., Any]) -> Callable[..., Any]:
    """Map every failure of a handler to a FUSEError (see the module docstring)."""

    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Operations, *args: Any) -> Any:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s%s", name, _shown(args))
        try:
            return await method(self, *args)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one place that must catch all
            raise self._fuse_error(method.__name__, exc) from None

    return wrapper


class Operations(pyfuse3.Operations):
    """The OpenAI Files API as a filesystem (see docs/SEMANTICS.md)."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, namespace: Namespace, cache: ContentCache, uploads: UploadEngine, *,
                 owner: Ownership, status: Callable[[], dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.namespace = namespace
        self.cache = cache
        self.uploads = uploads
        self.owner = owner
        self._status = status or (lambda: {})
        self._handles: dict[int, Handle] = {}
        self._dir_listings: dict[int, tuple[list[int], list[tuple[str, Any]]]] = {}
        self._next_fh = 1
        #: the file id whose pages the kernel may hold for an inode (see ``open``)
        self._kernel_cached: dict[int, str] = {}
        #: the kernel's id of this mount, to recognise its descriptors in /proc (see flush)
        self.mount_id: int | None = None
        #: set once the kernel's INIT is answered, the handshake that fixes some of its settings
        self.initialized = trio.Event()

    def init(self) -> None:
        """pyfuse3 calls this while it answers the kernel's INIT; the answer is sent as soon as
        it returns, so a task woken by ``initialized`` runs after it."""
        self.initialized.set()

    # ------------------------------------------------------------ attributes

    def attributes(self, node: Directory | FileEntry) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = node.inode
        attr.st_uid = self.owner.uid
        attr.st_gid = self.owner.gid
        attr.st_blksize = BLOCK_HINT
        if isinstance(node, FileEntry):
            attr.st_mode = stat.S_IFREG | (0o644 if node.writable else 0o444)
            attr.st_nlink = 1
            attr.st_size = node.size
            when = node.mtime
            ttl = 0.0 if node.local is not None else self.namespace.dir_ttl
        else:
            attr.st_mode = stat.S_IFDIR | (0o755 if node.writable else 0o555)
            attr.st_nlink = 2
            when = node.created
            ttl = 1.0
        attr.st_blocks = (attr.st_size + 511) // 512
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = int(when * 1e9)
        attr.entry_timeout = DIR_ENTRY_TIMEOUT if isinstance(node, Directory) else ttl
        attr.attr_timeout = ttl
        return attr

    def _control_attributes(self) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = CONTROL_INODE
        attr.st_mode = stat.S_IFREG | 0o444
        attr.st_uid, attr.st_gid = self.owner.uid, self.owner.gid
        attr.entry_timeout = attr.attr_timeout = 0
        return attr

    # ---------------------------------------------------------------- lookup

    @_handler
    async def lookup(self, parent_inode: int, name: bytes, ctx=None) -> pyfuse3.EntryAttributes:
        text = _text(name)
        if parent_inode == ROOT_INODE and text == CONTROL_NAME:
            return self._control_attributes()
        if text == ".":
            node = self.namespace.node(parent_inode)
        elif text == "..":
            node = self.namespace.root
        else:
            node = await self.namespace.lookup(parent_inode, text)
        self.namespace.remember(node)
        return self.attributes(node)

    @_handler
    async def getattr(self, inode: int, ctx=None) -> pyfuse3.EntryAttributes:
        if inode == CONTROL_INODE:
            return self._control_attributes()
        return self.attributes(self.namespace.node(inode))

    @_handler
    async def forget(self, inode_list) -> None:
        for inode, count in inode_list:
            self.namespace.forget(inode, count)

    # ------------------------------------------------------------ directories

    @_handler
    async def opendir(self, inode: int, ctx=None) -> int:
        children = await self.namespace.list_directory(inode)
        fh = self._new_fh()
        self._dir_listings[fh] = ([node.inode for _, node in children], children)
        return fh

    @_handler
    async def readdir(self, fh: int, start_id: int, token) -> None:
        # Entries are in inode order and ``next_id`` is the inode, so an offset stays valid
        # however the directory changes between two calls.
        inodes, children = self._dir_listings[fh]
        for index in range(bisect.bisect_right(inodes, start_id), len(children)):
            name, node = children[index]
            if not pyfuse3.readdir_reply(token, names.name_bytes(name), self.attributes(node),
                                         node.inode):
                return
            self.namespace.remember(node)

    @_handler
    async def releasedir(self, fh: int) -> None:
        self._dir_listings.pop(fh, None)

    @_handler
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx=None):
        raise FSError(errno.EPERM, "the directories are the API's purposes; new directories "
                                   "cannot be made", level=logging.INFO)

    @_handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx=None) -> None:
        node = await self.namespace.lookup(parent_inode, _text(name))
        if not isinstance(node, Directory):
            raise FSError(errno.ENOTDIR, f"{_text(name)} is not a directory", level=logging.DEBUG)
        raise FSError(errno.EPERM, "the purpose directories cannot be removed",
                      level=logging.INFO)

    @_handler
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx=None):
        raise FSError(errno.EPERM, "symbolic links cannot be stored in the Files API",
                      level=logging.INFO)

    @_handler
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx=None):
        raise FSError(errno.EPERM, "hard links cannot be stored in the Files API",
                      level=logging.INFO)

    @_handler
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx=None):
        raise FSError(errno.EPERM, "only regular files can be stored", level=logging.INFO)

    # ------------------------------------------------------------------ files

    @_handler
    async def open(self, inode: int, flags: int, ctx=None) -> pyfuse3.FileInfo:
        if inode == CONTROL_INODE:
            snapshot = (json.dumps(self._status(), indent=2, default=str) + "\n").encode()
            return pyfuse3.FileInfo(fh=self._add_handle(Handle(None, snapshot=snapshot)),
                                    direct_io=True, keep_cache=False)
        entry = self._file(inode)
        if entry.file is None and entry.local is None:
            raise FSError(errno.ENOENT, f"{entry.directory.name}/{entry.name} is gone",
                          level=logging.DEBUG)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            return await self._open_for_writing(entry, flags, _pid(ctx))
        if entry.local is not None:
            self.uploads.reopened(entry)
            entry.local.handles += 1
            fh = self._add_handle(Handle(entry, entry.file, entry.local))
            return pyfuse3.FileInfo(fh=fh, keep_cache=False)
        assert entry.file is not None
        self.cache.pin(entry.file.id)
        fh = self._add_handle(Handle(entry, entry.file))
        # The kernel may keep pages of an inode between opens only while its content is the
        # same file id; after a replacement the stale pages must go.
        keep = self._kernel_cached.get(inode) == entry.file.id
        self._kernel_cached[inode] = entry.file.id
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    async def _open_for_writing(self, entry: FileEntry, flags: int,
                                opener: int | None) -> pyfuse3.FileInfo:
        if not entry.writable:
            raise _not_writable(entry.directory)
        while True:
            local = entry.local
            if local is None or local.failure is not None:
                if flags & os.O_TRUNC or entry.file is None:
                    local = self.uploads.new_local(entry.directory, entry.name)
                else:   # changing a server file in place: its bytes are fetched when needed
                    local = self.uploads.open_existing(entry)
                entry.local = local
                break
            if not flags & os.O_TRUNC:
                break
            async with local.lock:      # not under an upload that is reading the spool
                if entry.local is local and local.fd >= 0:
                    local.truncate(0)
                    break
            # that upload ended meanwhile and its writer let the spool go: start again
        self.uploads.reopened(entry)
        local.handles += 1
        self._kernel_cached.pop(entry.inode, None)
        fh = self._add_handle(Handle(entry, entry.file, local, writable=True, opener=opener))
        return pyfuse3.FileInfo(fh=fh, keep_cache=False)

    @_handler
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx=None):
        directory = self.namespace.node(parent_inode)
        text = _text(name)
        if not isinstance(directory, PurposeDir):
            raise FSError(errno.EACCES, "files can only be created in a purpose directory",
                          level=logging.INFO)
        _check_new_name(name)
        existing = directory.by_name.get(text)
        if existing is not None:
            if flags & os.O_EXCL:
                raise FSError(errno.EEXIST, f"{directory.name}/{text} exists",
                              level=logging.DEBUG)
            info = await self._open_for_writing(existing, flags, _pid(ctx))
            self.namespace.remember(existing)
            return info, self.attributes(existing)
        if not names.fits(text):
            raise FSError(errno.ENAMETOOLONG, f"{text[:40]}...: name too long",
                          level=logging.INFO)
        self.uploads.check_new_file(directory, text)
        local = self.uploads.new_local(directory, text)
        entry = self.namespace.add_unsent(directory, text, local)
        local.handles += 1
        self.namespace.remember(entry)
        fh = self._add_handle(Handle(entry, None, local, writable=True, opener=_pid(ctx)))
        return pyfuse3.FileInfo(fh=fh, keep_cache=False), self.attributes(entry)

    @_handler
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        handle = self._handles[fh]
        if handle.snapshot is not None:
            return handle.snapshot[off:off + size]
        local, file = handle.local, handle.file
        entry = handle.entry
        if local is None and entry is not None and not entry.removed:
            # As on a local disk, a descriptor reads what the file holds now: after another
            # one replaced it (the kernel already shows the new size), the new bytes. Only a
            # file removed from the namespace (rm) keeps serving the bytes it was opened with.
            local, file = entry.local, entry.file or file
        if local is not None:
            if local.base is not None:
                await self.uploads.ensure_loaded(local)
            return local.read(off, size)
        assert file is not None
        # may be a view that is valid only until the next await: pyfuse3 replies with it first
        return await self.cache.read_for_reply(file, off, size)

    @_handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handles[fh]
        if not handle.writable or handle.local is None:
            raise FSError(errno.EBADF, "not open for writing", level=logging.DEBUG)
        local = handle.local
        if local.base is not None:
            await self.uploads.ensure_loaded(local)
        if local.lock.locked():     # an upload of this file is running: wait for it
            async with local.lock:
                pass
        written = local.write(off, buf)
        if handle.entry is not None:
            self.uploads.wrote(handle.entry, local)
        return written

    @_handler
    async def flush(self, fh: int) -> None:
        handle = self._handles[fh]
        if handle.writable and handle.entry is not None and handle.local is not None:
            if self.uploads.defers(handle.entry):
                return      # a temporary file: uploaded when renamed (see UploadEngine.defers)
            if handle.local.dirty and self._closed_by_a_copy(handle):
                # A program started by the writer (its copy of the descriptor closes at
                # exec), a forked child or a dup closed: the writer itself still has the
                # file open and is not done; its own close uploads. This also spares a
                # shell's "echo text > file" the upload of an empty file first.
                log.debug("flush of %s from a copy of the descriptor: upload deferred",
                          handle.entry.name)
                return
            await self.uploads.commit(handle.entry, handle.local)

    def _closed_by_a_copy(self, handle: Handle) -> bool:
        if handle.opener is None or self.mount_id is None or handle.entry is None:
            return False
        return openers.holds_open(handle.opener, self.mount_id, handle.entry.inode) is True

    @_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._handles[fh]
        if handle.writable and handle.entry is not None and handle.local is not None:
            if self.uploads.defers(handle.entry):
                # rsync --fsync and GIO sync their temporary file just before renaming it:
                # make its spool durable (a later mount recovers it after a crash); the
                # upload follows at the rename
                await trio.to_thread.run_sync(os.fsync, handle.local.fd)
                return
            await self.uploads.commit(handle.entry, handle.local)

    @_handler
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh)
        entry = handle.entry
        if handle.local is not None and entry is not None:
            local = handle.local
            local.handles -= 1
            if local.handles > 0:
                return
            if local.dirty and local.failure is None and not local.discarded and \
                    self.uploads.defers(entry):
                self.uploads.hold(entry, local)
                return
            if local.dirty and local.failure is None and not local.discarded:
                # written without a flush (e.g. through mmap): the last chance to upload
                try:
                    await self.uploads.commit(entry, local)
                except FSError as exc:
                    log.error("%s", exc.message)
            if entry.local is local:
                entry.local = None
                if local.failure is not None:
                    self.uploads.refused(entry)
            self.uploads.release_local(local, entry)
        elif handle.file is not None:
            self.cache.unpin(handle.file.id)

    @_handler
    async def setattr(self, inode: int, attr, fields, fh, ctx=None) -> pyfuse3.EntryAttributes:
        node = self.namespace.node(inode)
        if fields.update_size:
            if not isinstance(node, FileEntry):
                raise FSError(errno.EISDIR, "cannot truncate a directory", level=logging.DEBUG)
            await self._truncate(node, attr.st_size, self._handles.get(fh) if fh else None)
        # chmod, chown and utimens succeed and change nothing: modes and times come from the
        # server (see docs/SEMANTICS.md), and failing them breaks cp -p, rsync -a and friends
        return self.attributes(node)

    async def _truncate(self, entry: FileEntry, size: int, handle: Handle | None) -> None:
        if not entry.writable:
            raise _not_writable(entry.directory)
        local = handle.local if handle is not None and handle.local else entry.local
        if local is not None:
            if size and local.base is not None:
                await self.uploads.ensure_loaded(local)
            local.truncate(size)
            return
        if entry.file is not None and size == entry.file.bytes:
            return
        # a closed, uploaded file: truncating it is a replacement, done now
        local = (self.uploads.new_local(entry.directory, entry.name) if size == 0
                 else await self.uploads.load_existing(entry))
        entry.local = local
        local.handles += 1
        try:
            local.truncate(size)
            await self.uploads.commit(entry, local)
        finally:
            local.handles -= 1
            if entry.local is local:
                entry.local = None
            self.uploads.release_local(local, entry)

    @_handler
    async def unlink(self, parent_inode: int, name: bytes, ctx=None) -> None:
        node = await self.namespace.lookup(parent_inode, _text(name))
        if not isinstance(node, FileEntry):
            raise FSError(errno.EISDIR, f"{_text(name)} is a directory", level=logging.DEBUG)
        await self.uploads.delete(node)
        self._kernel_cached.pop(node.inode, None)

    @_handler
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx=None) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise FSError(errno.EINVAL, "exchanging two files is not supported",
                          level=logging.INFO)
        source = await self.namespace.lookup(parent_inode_old, _text(name_old))
        target_dir = self.namespace.node(parent_inode_new)
        if not isinstance(source, FileEntry) or not isinstance(target_dir, PurposeDir):
            raise FSError(errno.EPERM, "only files can be moved, and only into a purpose "
                                       "directory", level=logging.INFO)
        _check_new_name(name_new)
        new_name = _text(name_new)
        if not names.fits(new_name):
            raise FSError(errno.ENAMETOOLONG, "name too long", level=logging.INFO)
        replaced = target_dir.by_name.get(new_name)
        if replaced is source:
            return
        if replaced is not None and flags & pyfuse3.RENAME_NOREPLACE:
            raise FSError(errno.EEXIST, f"{target_dir.name}/{new_name} exists",
                          level=logging.DEBUG)
        await self.uploads.move(source, target_dir, new_name, replaced)

    # ------------------------------------------------------- xattrs and statfs

    @_handler
    async def getxattr(self, inode: int, name: bytes, ctx=None) -> bytes:
        # Probes of namespaces this filesystem does not have (SELinux labels, POSIX ACLs,
        # capabilities) are answered here, from memory, with ENOTSUP: "not supported" rather
        # than "not set" (ENODATA), because that is the truth, and because GNU ls remembers
        # a device that answered ENOTSUP and stops asking for every other file on it (ls -l
        # of 10,000 files: 2 requests instead of 20,000).
        if name.startswith(UNSUPPORTED_XATTRS):
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        if not name.startswith(XATTR_PREFIX):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        value = self._xattrs(inode).get(name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @_handler
    async def listxattr(self, inode: int, ctx=None) -> list[bytes]:
        return list(self._xattrs(inode))

    @_handler
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx=None) -> None:
        raise FSError(errno.ENOTSUP, "extended attributes are read-only here",
                      level=logging.DEBUG)

    @_handler
    async def removexattr(self, inode: int, name: bytes, ctx=None) -> None:
        raise FSError(errno.ENOTSUP, "extended attributes are read-only here",
                      level=logging.DEBUG)

    def _xattrs(self, inode: int) -> dict[bytes, bytes]:
        if inode == CONTROL_INODE:
            return {}
        node = self.namespace.node(inode)
        values: dict[str, str] = {}
        if isinstance(node, PurposeDir):
            values["purpose"] = node.purpose or ""
        elif isinstance(node, FileEntry):
            values["purpose"] = node.purpose
            values["filename"] = node.server_name
            if node.file is not None:
                values["id"] = node.file.id
                values["created_at"] = str(node.file.created_at)
                if node.file.expires_at is not None:
                    values["expires_at"] = str(node.file.expires_at)
                changed = node.local is not None and node.local.dirty
                values["status"] = "modified" if changed else node.file.status
            else:
                values["status"] = "not uploaded"
        return {XATTR_PREFIX + key.encode(): names.name_bytes(value)
                for key, value in sorted(values.items())}

    @_handler
    async def statfs(self, ctx=None) -> pyfuse3.StatvfsData:
        await self.namespace.refresh_all(only_if_stale=True)
        quota = self.namespace.quota
        used = self.namespace.total_listed_bytes
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_blocks = quota // 4096
        data.f_bfree = data.f_bavail = max(0, quota - used) // 4096
        data.f_files = sum(1 for _ in self.namespace.entries())
        data.f_ffree = data.f_favail = 2 ** 32
        data.f_namemax = names.MAX_NAME_BYTES
        return data

    # ------------------------------------------------------------- helpers

    def _file(self, inode: int) -> FileEntry:
        node = self.namespace.node(inode)
        if not isinstance(node, FileEntry):
            raise FSError(errno.EISDIR, "is a directory", level=logging.DEBUG)
        return node

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _add_handle(self, handle: Handle) -> int:
        fh = self._new_fh()
        self._handles[fh] = handle
        return fh

    def open_handles(self) -> int:
        return len(self._handles)

    def _fuse_error(self, operation: str, exc: Exception) -> pyfuse3.FUSEError:
        if isinstance(exc, NoSuchEntry):
            return pyfuse3.FUSEError(errno.ENOENT)
        if isinstance(exc, FileExistsError):
            return pyfuse3.FUSEError(errno.EEXIST)
        if isinstance(exc, (FSError, APIError)):
            if not getattr(exc, "logged", False):
                message = exc.message if isinstance(exc, FSError) else str(exc)
                log.log(log_level_for(exc), "%s: %s", operation, message)
                exc.logged = True  # type: ignore[attr-defined]
            return pyfuse3.FUSEError(errno_for(exc))
        if isinstance(exc, OSError) and exc.errno:
            log.warning("%s: %s", operation, exc)
            return pyfuse3.FUSEError(exc.errno)
        log.exception("%s failed unexpectedly", operation, exc_info=exc)
        return pyfuse3.FUSEError(errno.EIO)


def _shown(args: tuple[Any, ...]) -> str:
    """A handler's arguments for the debug log: bytes shortened, no request context."""
    shown = []
    for arg in args:
        if isinstance(arg, (bytes, bytearray)) and len(arg) > 64:
            shown.append(f"<{len(arg)} bytes>")
        elif isinstance(arg, (int, bytes, str, float)) or arg is None:
            shown.append(repr(arg))
    return "(" + ", ".join(shown) + ")"


def _pid(ctx) -> int | None:
    """The process behind a request (for ``flush``'s check of who still holds the file)."""
    thread = getattr(ctx, "pid", None)
    return openers.process_of(thread) if thread else None


def _check_new_name(name: bytes) -> None:
    """A name for a new file must be valid UTF-8: the API stores names as text."""
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        raise FSError(errno.EINVAL, f"{name!r}: refused, a filename must be valid UTF-8",
                      level=logging.INFO) from None


def _text(name: bytes) -> str:
    """A path component from the kernel as the str the namespace uses."""
    try:
        return name.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return name.decode("utf-8", "surrogateescape")


def invalidate_entry(parent_inode: int, name: str) -> None:
    """Drop a name from the kernel's cache without waiting (from a background thread)."""
    try:
        pyfuse3.invalidate_entry_async(parent_inode, names.name_bytes(name), ignore_enoent=True)
    except Exception as exc:  # noqa: BLE001 - only a cache hint; never fatal
        log.debug("could not invalidate %s in %d: %s", name, parent_inode, exc)
