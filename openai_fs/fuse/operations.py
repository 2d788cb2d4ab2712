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
from openai_fs.core.errors import FSError, Unexpected, as_fs_error
from openai_fs.core.filesystem import FileSystem
from openai_fs.core.usage import AccountUsage
from openai_fs.core.handles import (
    ContentReader,
    DirectoryHandle,
    FileHandle,
    Handle,
    LocalWriter,
    SnapshotHandle,
)
from openai_fs.core.namespace import (
    CONTROL_INODE,
    CONTROL_NAME,
    ROOT_INODE,
    Directory,
    FileEntry,
    PurposeDir,
)
from openai_fs.fuse import openers
from openai_fs.fuse.mountinfo import MountEntry

log = logging.getLogger(__name__)

XATTR_PREFIX = b"user.openai."
#: attribute namespaces the kernel and tools probe that this filesystem does not support
UNSUPPORTED_XATTRS = (b"security.", b"system.", b"trusted.")
#: st_blksize: the I/O size programs use for their buffers
BLOCK_HINT = 1024 * 1024
#: directories never change identity; their names can be cached long
DIR_ENTRY_TIMEOUT = 300.0
#: statfs: the block size it counts in, and the inode space it shows
STATFS_BLOCK = 4096
INODE_SPACE = 2 ** 32
#: the largest extended attribute value the kernel passes (XATTR_SIZE_MAX)
XATTR_SIZE_MAX = 64 * 1024
#: handlers whose argument at this index is file content, never to be logged
CONTENT_ARGUMENT = {"write": 2, "setxattr": 2}


@dataclass(frozen=True)
class Ownership:
    uid: int
    gid: int


@dataclass(frozen=True)
class Modes:
    """Permission bits (``--file-mode``, ``--dir-mode``, ``--umask``): writable purposes show
    them, read-only ones without the write bits, and the umask is taken from both."""

    file: int = 0o644
    directory: int = 0o755
    umask: int = 0

    def of_file(self, writable: bool) -> int:
        return self.file & ~(0 if writable else 0o222) & ~self.umask

    def of_directory(self, writable: bool) -> int:
        return self.directory & ~(0 if writable else 0o222) & ~self.umask


def _handler(method: Callable[..., Any]) -> Callable[..., Any]:
    """Map every failure of a handler to a FUSEError (see the module docstring)."""

    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Operations, *args: Any) -> Any:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s%s", name, _shown(name, args))
        try:
            return await method(self, *args)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one place that must catch all
            raise _fuse_error(name, exc) from None

    return wrapper


class Operations(pyfuse3.Operations):
    """The OpenAI Files API as a filesystem (see docs/SEMANTICS.md)."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, core: FileSystem, *, owner: Ownership, modes: Modes = Modes(),
                 status: Callable[[], dict[str, Any]] | None = None,
                 background: trio.Nursery | None = None) -> None:
        """``background`` runs what no request should wait for (statfs's count of the
        account's files); without it, statfs counts before it answers."""
        super().__init__()
        self.core = core
        self.namespace = core.namespace
        self.files = core.files
        self.owner = owner
        self.modes = modes
        self._status = status or (lambda: {})
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1
        #: the file id whose pages the kernel may hold for an inode (see ``open``)
        self._kernel_cached: dict[int, str] = {}
        #: the kernel's entry of this mount (its id recognises its descriptors in /proc, see
        #: flush), once mounted
        self.mounted: MountEntry | None = None
        #: set once the kernel's INIT is answered, the handshake that fixes some of its settings
        self.initialized = trio.Event()
        #: what the account uses, for statfs (recounted in ``background``)
        self.usage = AccountUsage(core.namespace, background)

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
            mode = self.modes.of_file(node.writable)
            if not self.files.readable(node):
                mode &= ~0o444      # content the server keeps to itself (docs/SEMANTICS.md)
            attr.st_mode = stat.S_IFREG | mode
            attr.st_nlink = 1
            attr.st_size = node.size
            when = node.mtime
            ttl = 0.0 if node.local is not None else self.namespace.dir_ttl
        else:
            attr.st_mode = stat.S_IFDIR | self.modes.of_directory(node.writable)
            attr.st_nlink = 2
            when = node.mtime       # moves when a name is added or leaves
            ttl = 1.0
        attr.st_blocks = (attr.st_size + 511) // 512
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = int(when * 1e9)
        attr.entry_timeout = DIR_ENTRY_TIMEOUT if isinstance(node, Directory) else ttl
        attr.attr_timeout = ttl
        return attr

    def _control_attributes(self) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = CONTROL_INODE
        attr.st_mode = stat.S_IFREG | (0o444 & ~self.modes.umask)
        attr.st_uid, attr.st_gid = self.owner.uid, self.owner.gid
        attr.entry_timeout = attr.attr_timeout = 0
        return attr

    # ---------------------------------------------------------------- lookup

    @_handler
    async def lookup(self, parent_inode: int, name: bytes, ctx=None) -> pyfuse3.EntryAttributes:
        if len(name) > names.MAX_NAME_BYTES:
            # the kernel passes FUSE names up to 1024 bytes; none of ours is that long
            raise FSError(errno.ENAMETOOLONG, f"{name[:40]!r}...: name too long",
                          level=logging.DEBUG)
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
        return self._add_handle(DirectoryHandle(inode, [node.inode for _, node in children],
                                                children, gap=self.namespace.gap_of(inode)))

    @_handler
    async def readdir(self, fh: int, start_id: int, token) -> None:
        # Entries are in inode order and ``next_id`` is the inode, so an offset stays valid
        # however the directory changes between two calls.
        listing = self._handles[fh]
        assert isinstance(listing, DirectoryHandle)
        children = listing.children
        start = bisect.bisect_right(listing.inodes, start_id)
        if start >= len(children) and listing.gap is not None:
            # An incomplete listing must not look complete (rsync --delete would delete what
            # it lacks): every entry went out in earlier calls (an error in the call that
            # sent some would lose them), and the read ends with EIO. Logged when listed.
            raise FSError(errno.EIO, listing.gap, level=logging.DEBUG)
        for index in range(start, len(children)):
            name, node = children[index]
            if not pyfuse3.readdir_reply(token, names.name_bytes(name), self.attributes(node),
                                         node.inode):
                return
            self.namespace.remember(node)

    @_handler
    async def releasedir(self, fh: int) -> None:
        self._handles.pop(fh, None)

    @_handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        # ``sync DIR``. pyfuse3's default answers ENOSYS, after which the kernel never sends
        # FSYNCDIR for this mount again; here it waits for what --write-back has queued
        listing = self._handles[fh]
        assert isinstance(listing, DirectoryHandle)
        await self.files.sync_directory(self.namespace.node(listing.inode))

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
            return pyfuse3.FileInfo(fh=self._add_handle(SnapshotHandle(snapshot)),
                                    direct_io=True, keep_cache=False)
        entry = self._file(inode)
        if entry.file is not None and entry.file.problem is not None and entry.local is None \
                and not flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_WRONLY:
            # Its size is not known (the kernel would read an empty file as EOF without
            # asking), so the read fails here; the namespace logged why.
            raise FSError(errno.EIO, f"{entry.directory.name}/{entry.name}: the server's entry "
                                     f"cannot be trusted ({entry.file.problem})",
                          level=logging.DEBUG)
        handle = await self.files.open(entry, flags, _pid(ctx))
        return self._file_info(inode, handle)

    @_handler
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx=None):
        _check_new_name(name)
        directory = self.namespace.node(parent_inode)
        handle, entry = await self.files.create(directory, _text(name), flags, _pid(ctx))
        self.namespace.remember(entry)
        return self._file_info(entry.inode, handle), self.attributes(entry)

    def _file_info(self, inode: int, handle: FileHandle) -> pyfuse3.FileInfo:
        keep = False
        if isinstance(handle, ContentReader):
            # The kernel may keep pages of an inode between opens only while its content is
            # the same file id; after a replacement the stale pages must go.
            keep = self._kernel_cached.get(inode) == handle.file.id
            self._kernel_cached[inode] = handle.file.id
        elif isinstance(handle, LocalWriter):
            self._kernel_cached.pop(inode, None)
        return pyfuse3.FileInfo(fh=self._add_handle(handle), keep_cache=keep)

    @_handler
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        handle = self._handles[fh]
        if isinstance(handle, SnapshotHandle):
            return handle.data[off:off + size]
        # may be a view that is valid only until the next await: pyfuse3 replies with it first
        return await self.files.read(self._file_handle(fh), off, size)

    @_handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.files.write(self._file_handle(fh), off, buf)

    @_handler
    async def flush(self, fh: int) -> None:
        handle = self._handles[fh]
        if isinstance(handle, LocalWriter):
            await self.files.flush(handle, lambda: self._held_by_opener(handle))

    def _held_by_opener(self, handle: LocalWriter) -> bool:
        """Whether the process that opened the file still holds it open for writing (so the
        close being flushed came from a copy of its descriptor)."""
        if handle.opener is None or self.mounted is None:
            return False
        return openers.holds_open(handle.opener, self.mounted.mount_id,
                                  handle.entry.inode) is True

    @_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        if isinstance(self._handles[fh], SnapshotHandle):
            # fsync of the control file: ``openai-fs sync`` waits for every queued change
            await self.files.sync_all()
            return
        await self.files.fsync(self._file_handle(fh))

    @_handler
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh)
        if not isinstance(handle, SnapshotHandle):
            assert not isinstance(handle, DirectoryHandle)
            await self.files.release(handle)

    @_handler
    async def setattr(self, inode: int, attr, fields, fh, ctx=None) -> pyfuse3.EntryAttributes:
        node = self.namespace.node(inode)
        if fields.update_size:
            if not isinstance(node, FileEntry):
                raise FSError(errno.EISDIR, "cannot truncate a directory", level=logging.DEBUG)
            await self.files.truncate(node, attr.st_size, self._file_handle(fh) if fh else None)
        # chmod, chown and utimens succeed and change nothing: modes and times come from the
        # server (see docs/SEMANTICS.md), and failing them breaks cp -p, rsync -a and friends
        return self.attributes(node)

    @_handler
    async def unlink(self, parent_inode: int, name: bytes, ctx=None) -> None:
        node = await self.namespace.lookup_known(parent_inode, _text(name))
        if not isinstance(node, FileEntry):
            raise FSError(errno.EISDIR, f"{_text(name)} is a directory", level=logging.DEBUG)
        await self.files.unlink(node)
        self._kernel_cached.pop(node.inode, None)

    @_handler
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx=None) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise FSError(errno.EINVAL, "exchanging two files is not supported",
                          level=logging.INFO)
        source = await self.namespace.lookup_known(parent_inode_old, _text(name_old))
        _check_new_name(name_new)
        await self.files.rename(source, self.namespace.node(parent_inode_new), _text(name_new),
                                replace=not flags & pyfuse3.RENAME_NOREPLACE)

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
        if len(value) > XATTR_SIZE_MAX:
            # no program can be given it (the kernel caps values at 64 KiB); a server name of
            # 100 kB is shown cut in the file's name, and its full text is not available here
            raise FSError(errno.E2BIG, f"{name.decode(errors='replace')} of inode {inode} holds "
                                       f"{len(value)} bytes, more than an attribute can",
                          level=logging.DEBUG)
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
            values["downloadable"] = self.core.cache.access.describe(node.purpose or "")
        elif isinstance(node, FileEntry):
            values["purpose"] = node.purpose
            values["downloadable"] = self.core.cache.access.describe(node.purpose)
            values["filename"] = node.server_name
            if node.file is not None:
                values["id"] = node.file.id
                if node.file.problem is not None:
                    values["error"] = f"the server's entry cannot be trusted: {node.file.problem}"
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
        """``df``: the project quota, and the bytes and files used as far as the mount knows
        (never waiting for a listing of the whole account: core/usage.py)."""
        used, files = await self.usage.current()
        namespace = self.namespace
        quota = namespace.quota
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = STATFS_BLOCK
        data.f_blocks = quota // STATFS_BLOCK
        data.f_bfree = data.f_bavail = max(0, quota - used) // STATFS_BLOCK
        # the API has no limit on the number of files: df -i shows what is used of a space
        # as large as the kernel's 32-bit inode numbers, never more used than there is
        inodes_used = files + namespace.directories
        data.f_files = max(INODE_SPACE, inodes_used)
        data.f_ffree = data.f_favail = data.f_files - inodes_used
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

    def _file_handle(self, fh: int) -> FileHandle:
        handle = self._handles[fh]
        assert not isinstance(handle, (DirectoryHandle, SnapshotHandle))
        return handle

    def open_handles(self) -> int:
        return len(self._handles)


def _fuse_error(operation: str, exc: Exception) -> pyfuse3.FUSEError:
    """The one place a failure becomes an errno: logged once (with the status, the server's
    message and the request id of an API answer; with the traceback of a bug), then answered."""
    error = as_fs_error(exc)
    if isinstance(error, Unexpected):
        log.error("%s failed unexpectedly", operation, exc_info=exc)
    elif not getattr(exc, "logged", False):
        log.log(error.level, "%s: %s", operation, error.message)
        exc.logged = True  # type: ignore[attr-defined]
    return pyfuse3.FUSEError(error.errno)


def _shown(handler: str, args: tuple[Any, ...]) -> str:
    """A handler's arguments for the debug log: bytes shortened, no request context, and never
    file content (a write's buffer, an attribute's value): only its length."""
    shown = []
    content = CONTENT_ARGUMENT.get(handler)
    for index, arg in enumerate(args):
        if index == content and isinstance(arg, (bytes, bytearray, memoryview)):
            shown.append(f"<{len(arg)} bytes>")
        elif isinstance(arg, (bytes, bytearray)) and len(arg) > 64:
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
