"""The tree the mount shows: purposes as directories, files under readable names, inodes.

Built from ``GET /files?purpose=P`` listings (cached for ``dir_ttl`` seconds) plus what the mount
itself changed since (files it created, uploaded, deleted or renamed show at once, even before a
listing confirms them). Knows nothing of FUSE: it hands out :class:`Directory` and
:class:`FileEntry` objects, and tells the kernel's cache (:mod:`openai_fs.core.kernel_cache`)
about names that went away.

Nothing a listing says is trusted (docs/SEMANTICS.md, "What the mount trusts"): an entry
without a usable id cannot be shown, and makes its listing *incomplete* (``gap``): the
directory read returns what was listed and then fails, so that no tool takes it for complete,
and files that such a listing does not show are not dropped. An entry with a usable id but
other fields that cannot be trusted is shown under an id-bearing name, and its content is never
read (``FileObject.problem``). Each of these is logged once.

Concurrency: everything here runs on the trio loop. Methods without ``await`` are atomic; the
only awaits are listing and retrieve calls, after which state is re-read, never assumed.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Iterable, Protocol

import trio

from openai_fs.core import names, purposes
from openai_fs.api import FileObject, FilesClient, NotFoundError, usable_id
from openai_fs.api.models import usable_purpose
from openai_fs.core.errors import AlreadyExists, FSError, NoSuchEntry
from openai_fs.core.kernel_cache import KernelCache, NoKernelCache

log = logging.getLogger(__name__)

ROOT_INODE = 1
BY_ID_INODE = 2
CONTROL_INODE = 3
BY_ID_NAME = ".by-id"
CONTROL_NAME = names.CONTROL_NAME
_FIRST_PURPOSE_INODE = 10
_FIRST_DYNAMIC_INODE = 1000
#: how long the mount trusts its own changes over a listing that does not show them yet
OVERLAY_SECONDS = 300.0
#: the bytes and files used by the whole account (``df``) are counted again, with a listing
#: of every file, at most this often (or ``dir_ttl``, if longer); in between, ``df`` answers
#: from what the mount knows, which includes its own changes and every listing since
USAGE_SECONDS = 300.0
#: a name in the root that could be a purpose the mount does not know yet (the API's
#: purposes are lower-case words with ``_`` and ``-``)
_PURPOSE_LIKE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
#: unknown names of the root remembered as "no such purpose", so that tools probing names
#: there (``.git``, ``.Trash``, ``autorun.inf``) cost at most one request per name and dir_ttl
_MAX_MISSES = 256


class LocalContent(Protocol):
    """What the upload engine keeps for a file being written (see ``uploads.LocalFile``)."""

    @property
    def size(self) -> int: ...

    @property
    def mtime(self) -> float: ...


@dataclass(eq=False)
class Directory:
    inode: int
    name: str
    #: the purpose it lists, or None for the root and ``.by-id``
    purpose: str | None = None
    writable: bool = False
    created: float = field(default_factory=time.time)
    #: changes whenever a name is added to it or leaves it (st_mtime, st_ctime)
    mtime: float = field(default_factory=time.time)
    #: why its latest listing may lack files the server has (None: complete)
    gap: str | None = None
    #: the gap last logged, so that a listing that stays incomplete is logged once
    reported_gap: str | None = None


@dataclass(eq=False)
class PurposeDir(Directory):
    #: files on the server by id (the listing plus the mount's own recent changes)
    files: dict[str, FileEntry] = field(default_factory=dict)
    #: files being created here that have no id yet, by name
    unsent: dict[str, FileEntry] = field(default_factory=dict)
    #: name shown -> entry, recomputed after every change
    by_name: dict[str, FileEntry] = field(default_factory=dict)
    #: trio clock time of the last listing, None before the first
    listed_at: float | None = None
    refresh_lock: trio.Lock = field(default_factory=trio.Lock)
    #: our own uploads (id -> (file, when)) and deletes (id -> when) that a listing may not show yet
    recent_adds: dict[str, tuple[FileObject, float]] = field(default_factory=dict)
    recent_deletes: dict[str, float] = field(default_factory=dict)

    @property
    def listed_bytes(self) -> int:
        return sum(entry.file.bytes for entry in self.files.values() if entry.file)

    def names_changed(self) -> None:
        self.mtime = time.time()


@dataclass(eq=False)
class FileEntry:
    inode: int
    directory: PurposeDir
    #: the file on the server; None while a new file has not been uploaded yet
    file: FileObject | None = None
    #: the name shown in ``directory`` (kept by :class:`Namespace`)
    name: str = ""
    #: local bytes while the file is being written (set by the upload engine)
    local: LocalContent | None = None
    #: times the kernel was told about this inode and has not forgotten yet
    lookups: int = 0
    #: gone from the namespace (deleted, replaced away, or no longer listed)
    removed: bool = False
    created: float = field(default_factory=time.time)
    #: server files this one took the name of (a rename over them before it was uploaded):
    #: deleted once it is uploaded, and shown again if that upload fails
    supersedes: list[FileObject] = field(default_factory=list)
    #: a file kept local: it never goes to the server (core/local_only.py)
    local_only: bool = False
    #: a server file renamed onto a name kept local (vim's ``report.txt~``): shown under that
    #: name while the mount lives; the server file keeps its own name, and goes when that
    #: name is removed
    kept_name: str | None = None

    @property
    def purpose(self) -> str:
        return self.directory.purpose or ""

    @property
    def size(self) -> int:
        if self.local is not None:
            return self.local.size
        return self.file.bytes if self.file else 0

    @property
    def mtime(self) -> float:
        if self.local is not None:
            return self.local.mtime
        return float(self.file.created_at) if self.file else self.created

    @property
    def server_name(self) -> str:
        """The filename as the server has it (or will have it once uploaded)."""
        return self.file.filename if self.file else names.decode(self.name)

    @property
    def writable(self) -> bool:
        return self.directory.writable


Node = Directory | FileEntry


class Namespace:
    """Inodes, directories and names, from listings and the mount's own changes."""

    def __init__(self, client: FilesClient, *, dir_ttl: float = 30.0, read_only: bool = False,
                 quota: int = purposes.PROJECT_QUOTA_BYTES,
                 kernel: KernelCache | None = None) -> None:
        self.client = client
        self.quota = quota
        self.dir_ttl = dir_ttl
        self.read_only = read_only
        self.kernel = kernel or NoKernelCache()
        self._nodes: dict[int, Node] = {}
        self._inode_of_id: dict[str, int] = {}
        self._next_inode = _FIRST_DYNAMIC_INODE
        self.root = Directory(ROOT_INODE, "")
        self.by_id = Directory(BY_ID_INODE, BY_ID_NAME)
        self._nodes[ROOT_INODE] = self.root
        self._nodes[BY_ID_INODE] = self.by_id
        self.purpose_dirs: dict[str, PurposeDir] = {}
        for offset, purpose in enumerate(purposes.KNOWN_PURPOSES):
            self._add_purpose_dir(purpose, _FIRST_PURPOSE_INODE + offset)
        #: the unfiltered listing (all purposes), for ``.by-id`` and ``statfs``
        self._all_listed_at: float | None = None
        self._all_lock = trio.Lock()
        #: root names found not to be purposes -> when (trio clock)
        self._not_purposes: dict[str, float] = {}
        #: (when, bytes, files) of the last count from memory (see ``usage``)
        self._usage: tuple[float, int, int] | None = None
        #: ids of entries that cannot be trusted, already logged
        self._reported_entries: set[str] = set()

    # ---------------------------------------------------------------- access

    def node(self, inode: int) -> Node:
        try:
            return self._nodes[inode]
        except KeyError:
            raise NoSuchEntry(inode) from None

    def entry_for_id(self, file_id: str) -> FileEntry | None:
        inode = self._inode_of_id.get(file_id)
        node = self._nodes.get(inode) if inode is not None else None
        return node if isinstance(node, FileEntry) else None

    def entries(self) -> Iterable[FileEntry]:
        return (node for node in self._nodes.values() if isinstance(node, FileEntry))

    async def lookup_known(self, parent: int, name: str) -> Node:
        """A name the kernel has just looked up (``unlink``, ``rename``): from what the mount
        knows, without listing again however old the listing is, so that such a call costs only
        its own request; a name not known is looked up as usual."""
        directory = self.node(parent)
        if isinstance(directory, PurposeDir) and name in directory.by_name:
            return directory.by_name[name]
        return await self.lookup(parent, name)

    async def lookup(self, parent: int, name: str) -> Node:
        directory = self.node(parent)
        if directory is self.root:
            return await self._lookup_root(name)
        if directory is self.by_id:
            return await self.resolve_id(name)
        if isinstance(directory, PurposeDir):
            if not self._fresh(directory.listed_at):
                await self.refresh(directory)
            try:
                return directory.by_name[name]
            except KeyError:
                raise NoSuchEntry(name) from None
        raise NoSuchEntry(name)

    def gap_of(self, inode: int) -> str | None:
        """Why the latest listing of a directory may lack files (None: it is complete)."""
        node = self._nodes.get(inode)
        return node.gap if isinstance(node, Directory) else None

    async def list_directory(self, inode: int) -> list[tuple[str, Node]]:
        """Every ``(name, node)`` of a directory, sorted by inode (a stable readdir order);
        :meth:`gap_of` then says whether the listing was complete."""
        directory = self.node(inode)
        if directory is self.root:
            # no request: the purposes are known, and those the server adds show once a
            # listing or lookup has seen them (see ``purpose_dir``)
            children: list[tuple[str, Node]] = [(BY_ID_NAME, self.by_id)]
            children += [(d.name, d) for d in self.purpose_dirs.values()]
        elif directory is self.by_id:
            await self.refresh_all(only_if_stale=True)
            children = [(entry.file.id, entry) for entry in self.entries()
                        if entry.file and not entry.removed]
        elif isinstance(directory, PurposeDir):
            if not self._fresh(directory.listed_at):
                await self.refresh(directory)
            children = list(directory.by_name.items())
        else:
            raise NoSuchEntry(inode)
        children.sort(key=lambda child: child[1].inode)
        return children

    async def resolve_id(self, file_id: str) -> FileEntry:
        """A file by id: from memory when known, else with one ``GET /files/{id}``. A name
        that cannot be an id is not found, without a request."""
        if not usable_id(file_id):
            raise NoSuchEntry(file_id)
        entry = self.entry_for_id(file_id)
        if entry is not None and not entry.removed:
            return entry
        try:
            found = await self.client.retrieve(file_id)
        except NotFoundError:
            raise NoSuchEntry(file_id) from None
        if not usable_purpose(found.purpose):
            raise FSError(errno.EIO, f"{BY_ID_NAME}/{file_id}: the server's answer cannot be "
                                     f"shown: {found.problem}")
        directory = self.purpose_dir(found.purpose)
        entry = self._server_entry(directory, found)
        self._rename_all(directory)
        self._report_entries(directory)
        return entry

    def purpose_dir(self, purpose: str) -> PurposeDir:
        if not usable_purpose(purpose):        # the parsers keep such purposes out
            raise ValueError(f"not a purpose: {purpose[:40]!r}")
        directory = self.purpose_dirs.get(purpose)
        if directory is None:
            log.info("the server reports files of purpose %r; showing them read-only", purpose)
            directory = self._add_purpose_dir(purpose, self._new_inode())
        return directory

    # -------------------------------------------------------------- listings

    def _fresh(self, stamp: float | None) -> bool:
        return stamp is not None and trio.current_time() - stamp < self.dir_ttl

    async def refresh(self, directory: PurposeDir, *, force: bool = False) -> None:
        """List the purpose again (every page), unless another task just did."""
        requested = trio.current_time()
        async with directory.refresh_lock:
            if directory.listed_at is not None and (
                    directory.listed_at >= requested or (not force and self._fresh(
                        directory.listed_at))):
                return          # a listing that started after our request already finished
            started = trio.current_time()
            listing = await self.client.list_all(purpose=directory.purpose,
                                                 limit=purposes.MAX_LIST_LIMIT)
            self._apply_listing(directory, listing.files, complete=listing.complete)
            self._note_gap(directory, listing.gaps)
            directory.listed_at = started

    async def refresh_all(self, *, only_if_stale: bool = False) -> None:
        """The unfiltered listing: finds purposes we do not know and the bytes used."""
        async with self._all_lock:
            if only_if_stale and self._fresh(self._all_listed_at):
                return
            started = trio.current_time()
            listing = await self.client.list_all(limit=purposes.MAX_LIST_LIMIT)
            gaps = list(listing.gaps)
            by_purpose: dict[str, list[FileObject]] = {}
            for found in listing.files:
                if usable_purpose(found.purpose):
                    by_purpose.setdefault(found.purpose, []).append(found)
                else:       # no directory to show it in
                    gaps.append(f"the entry {found.id} cannot be placed: {found.problem}")
            for purpose in by_purpose:
                self.purpose_dir(purpose)
            # the full listing holds every purpose's listing: apply each (new files appear,
            # files deleted elsewhere go), as a listing of that purpose alone would; one that
            # is incomplete only adds what it shows, and each purpose is listed on its own
            for purpose, directory in self.purpose_dirs.items():
                self._apply_listing(directory, by_purpose.get(purpose, []), complete=not gaps)
                if not gaps:
                    directory.listed_at = max(directory.listed_at or started, started)
                    self._note_gap(directory, [])
            self._note_gap(self.by_id, gaps)
            self._all_listed_at = started
            self._usage = None

    # ----------------------------------------------------------------- usage

    def usage(self) -> tuple[int, int]:
        """``(bytes, files)`` on the server as far as the mount knows: every file of every
        purpose listed or looked up so far (all of them once ``refresh_all`` has run),
        including the mount's own changes. Counted from memory, at most once a second."""
        now = trio.current_time()
        if self._usage is None or now - self._usage[0] >= 1.0:
            used = files = 0
            for directory in self.purpose_dirs.values():
                for entry in directory.files.values():
                    if entry.file is not None:
                        used += entry.file.bytes
                        files += 1
                files += len(directory.unsent)
            self._usage = (now, used, files)
        return self._usage[1], self._usage[2]

    def usage_stale(self, since: float | None) -> bool:
        """Whether a count started at ``since`` (trio clock) is too old for ``df``."""
        return since is None or \
            trio.current_time() - since >= max(USAGE_SECONDS, self.dir_ttl)

    @property
    def directories(self) -> int:
        """The directories the mount shows: the root, ``.by-id`` and one per purpose."""
        return 2 + len(self.purpose_dirs)

    def _note_gap(self, directory: Directory, gaps: list[str]) -> None:
        """Remember why a listing of ``directory`` is incomplete (or that it is complete), and
        say so in the log once."""
        where = directory.name
        if not gaps:
            if directory.gap is not None:
                log.info("%s: the server's listing is complete again", where)
            directory.gap = directory.reported_gap = None
            return
        shown = "; ".join(gaps[:3]) + (f"; and {len(gaps) - 3} more" if len(gaps) > 3 else "")
        directory.gap = f"the server's listing of {where} is incomplete: {shown}"
        if directory.gap != directory.reported_gap:
            directory.reported_gap = directory.gap
            log.warning("%s; the directory shows what was listed, then reading it fails "
                        "with an I/O error, so that no tool takes it for complete",
                        directory.gap)

    def _report_entries(self, directory: PurposeDir) -> None:
        """Log, once per file, each entry of ``directory`` that cannot be trusted."""
        for file_id, entry in directory.files.items():
            if entry.file is not None and entry.file.problem is not None \
                    and file_id not in self._reported_entries:
                self._reported_entries.add(file_id)
                log.warning("%s: the server's entry for %s cannot be trusted (%s); it is shown "
                            "as %r and reading it fails with an I/O error", directory.name,
                            file_id, entry.file.problem, entry.name)

    def _apply_listing(self, directory: PurposeDir, listed: list[FileObject], *,
                       complete: bool = True) -> None:
        """Make ``directory`` show ``listed`` (a listing of its purpose) and the mount's own
        recent changes. A listing that may be ``complete=False`` only adds and updates: a file
        it does not show may be in the part it missed, so nothing is dropped."""
        now = trio.current_time()
        current = {found.id: found for found in listed}
        # the mount's own recent changes win over a listing that does not show them yet
        for file_id, (found, when) in list(directory.recent_adds.items()):
            if file_id in current or now - when > OVERLAY_SECONDS:
                del directory.recent_adds[file_id]
            else:
                current[file_id] = found
        for file_id, when in list(directory.recent_deletes.items()):
            if file_id not in current or now - when > OVERLAY_SECONDS:
                directory.recent_deletes.pop(file_id, None)
            else:
                current.pop(file_id, None)
        for file_id, entry in list(directory.files.items()):
            if complete and file_id not in current and entry.local is None:
                log.debug("%s/%s (%s) is gone from the server", directory.name, entry.name,
                          file_id)
                self._drop(entry)
        for found in current.values():
            known = directory.files.get(found.id)
            if known is None:
                self._server_entry(directory, found)
            elif known.file != found and known.file is not None and known.file.id == found.id:
                known.file = found          # status or expiry changed; the bytes cannot
        self._rename_all(directory)
        self._report_entries(directory)

    # ------------------------------------------------------------- mutations

    def check_new_name(self, directory: PurposeDir, name: str) -> None:
        if name in directory.by_name:
            raise AlreadyExists(f"{directory.name}/{name}")

    def add_unsent(self, directory: PurposeDir, name: str, local: LocalContent) -> FileEntry:
        """A new file, created here and not uploaded yet."""
        self.check_new_name(directory, name)
        entry = FileEntry(self._new_inode(), directory, name=name, local=local)
        self._nodes[entry.inode] = entry
        directory.unsent[name] = entry
        self._rename_all(directory)
        return entry

    def uploaded(self, entry: FileEntry, new: FileObject) -> FileObject | None:
        """``entry`` now is the server file ``new``; returns the file it replaced, if any
        (which the caller deletes)."""
        directory = entry.directory
        old = entry.file
        if old is not None:
            directory.files.pop(old.id, None)
            self._inode_of_id.pop(old.id, None)
        directory.unsent.pop(entry.name, None)
        entry.file = new
        directory.files[new.id] = entry
        self._inode_of_id[new.id] = entry.inode
        directory.recent_adds[new.id] = (new, trio.current_time())
        if old is not None:
            directory.recent_deletes[old.id] = trio.current_time()
        self._rename_all(directory)
        return old

    def removed(self, entry: FileEntry, *, until_gone: bool = False) -> None:
        """The file left the namespace (deleted by us, or discarded before upload). With
        ``until_gone`` (a delete still to be sent) listings hide its server file for as long as
        they show it, not only for :data:`OVERLAY_SECONDS`."""
        directory = entry.directory
        if entry.file is not None:
            directory.recent_deletes[entry.file.id] = math.inf if until_gone \
                else trio.current_time()
            directory.recent_adds.pop(entry.file.id, None)
        self._drop(entry, notify=False)
        self._rename_all(directory, notify=False)

    def hide(self, file: FileObject) -> None:
        """A server file the mount is about to delete (a journaled change it resumes): not
        shown, whatever listings say, until they no longer show it."""
        directory = self.purpose_dir(file.purpose)
        directory.recent_deletes[file.id] = math.inf
        directory.recent_adds.pop(file.id, None)
        known = directory.files.get(file.id)
        if known is not None:
            self._drop(known, notify=True)
            self._rename_all(directory)

    def keep_under(self, entry: FileEntry, name: str | None) -> None:
        """Show the server file of ``entry`` under the local name ``name`` (None: under its
        own name again); nothing changes on the server."""
        entry.kept_name = name
        self._rename_all(entry.directory)

    def rename_unsent(self, entry: FileEntry, target: PurposeDir, name: str) -> None:
        """Rename a file that is not on the server yet: only the namespace changes."""
        source = entry.directory
        source.unsent.pop(entry.name, None)
        entry.directory = target
        entry.name = name
        target.unsent[name] = entry
        self._rename_all(source, notify=False)
        if target is not source:
            self._rename_all(target, notify=False)

    def detach(self, entry: FileEntry) -> None:
        """An uploaded file whose content now lives only locally (changed, not uploaded yet)
        becomes a new file of its directory: its server file is hidden and superseded, to be
        deleted once the local bytes are uploaded (see ``FileEntry.supersedes``)."""
        old = entry.file
        if old is None:
            return
        directory = entry.directory
        if directory.files.get(old.id) is entry:
            del directory.files[old.id]
        self._inode_of_id.pop(old.id, None)
        directory.recent_adds.pop(old.id, None)
        directory.recent_deletes[old.id] = trio.current_time()
        entry.file = None
        entry.supersedes.append(old)
        directory.unsent[entry.name] = entry
        self._rename_all(directory, notify=False)

    def moved(self, entry: FileEntry, target: PurposeDir, new: FileObject) -> None:
        """An uploaded file now lives in ``target`` as the server file ``new`` (a re-upload under
        another name or purpose); the inode stays the same so open handles keep working."""
        source = entry.directory
        now = trio.current_time()
        old = entry.file
        if old is not None:
            if source.files.get(old.id) is entry:
                del source.files[old.id]
            self._inode_of_id.pop(old.id, None)
            source.recent_adds.pop(old.id, None)
            source.recent_deletes[old.id] = now
        if source.unsent.get(entry.name) is entry:
            del source.unsent[entry.name]
        entry.directory = target
        entry.file = new
        target.files[new.id] = entry
        self._inode_of_id[new.id] = entry.inode
        target.recent_adds[new.id] = (new, now)
        self._rename_all(source, notify=False)
        if target is not source:
            self._rename_all(target, notify=False)

    def restore(self, file: FileObject) -> None:
        """Show a server file again that the mount had hidden (a replacement that failed)."""
        directory = self.purpose_dir(file.purpose)
        directory.recent_deletes.pop(file.id, None)
        self._server_entry(directory, file)
        self._rename_all(directory)

    def forget_attributes_of(self, purpose: str) -> None:
        """Tell the kernel that the attributes of every file of ``purpose`` it holds changed
        (their modes follow what the server lets be read)."""
        directory = self.purpose_dirs.get(purpose)
        if directory is None:
            return
        for entry in list(directory.files.values()) + list(directory.unsent.values()):
            if entry.lookups:
                self.kernel.forget_attributes(entry.inode)

    def refresh_names(self, directory: PurposeDir) -> None:
        self._rename_all(directory)

    def forget(self, inode: int, count: int) -> None:
        node = self._nodes.get(inode)
        if isinstance(node, FileEntry):
            node.lookups = max(0, node.lookups - count)
            if node.removed and node.lookups == 0:
                del self._nodes[inode]

    def remember(self, node: Node) -> None:
        """The kernel was given this node (lookup, create, readdirplus)."""
        if isinstance(node, FileEntry):
            node.lookups += 1

    # -------------------------------------------------------------- helpers

    async def _lookup_root(self, name: str) -> Node:
        if name == BY_ID_NAME:
            return self.by_id
        directory = self.purpose_dirs.get(name)
        if directory is None and await self._is_new_purpose(name):
            directory = self.purpose_dir(name)
        if directory is None:
            raise NoSuchEntry(name)
        return directory

    async def _is_new_purpose(self, name: str) -> bool:
        """Whether the server has files of purpose ``name``, which the mount does not know
        yet: one ``GET /files?purpose=NAME&limit=1`` (not a listing of everything), asked
        only for names that look like a purpose and at most once per ``dir_ttl``."""
        if not _PURPOSE_LIKE.fullmatch(name):
            return False
        missed = self._not_purposes.get(name)
        if missed is not None and self._fresh(missed):
            return False
        asked = trio.current_time()
        page = await self.client.list_page(purpose=name, limit=1)
        if any(found.purpose == name for found in page.files):
            self._not_purposes.pop(name, None)
            return True
        if len(self._not_purposes) >= _MAX_MISSES:
            self._not_purposes.clear()
        self._not_purposes[name] = asked
        return False

    def _add_purpose_dir(self, purpose: str, inode: int) -> PurposeDir:
        directory = PurposeDir(inode, purpose, purpose=purpose,
                               writable=purposes.is_uploadable(purpose) and not self.read_only)
        self.purpose_dirs[purpose] = directory
        self._nodes[inode] = directory
        return directory

    def _new_inode(self) -> int:
        inode = self._next_inode
        self._next_inode += 1
        return inode

    def _server_entry(self, directory: PurposeDir, found: FileObject) -> FileEntry:
        inode = self._inode_of_id.get(found.id)
        node = self._nodes.get(inode) if inode is not None else None
        if isinstance(node, FileEntry) and not node.removed:
            entry = node
            if entry.directory is not directory:
                entry.directory.files.pop(found.id, None)
                entry.directory = directory
        else:
            if inode is None:
                inode = self._inode_of_id[found.id] = self._new_inode()
            entry = FileEntry(inode, directory, file=found)
            self._nodes[inode] = entry
        directory.files[found.id] = entry
        return entry

    def _drop(self, entry: FileEntry, *, notify: bool = True) -> None:
        directory = entry.directory
        if entry.file is not None and directory.files.get(entry.file.id) is entry:
            del directory.files[entry.file.id]
        if directory.unsent.get(entry.name) is entry:
            del directory.unsent[entry.name]
        entry.removed = True
        if notify and entry.name:
            self.kernel.forget_name(directory.inode, entry.name)
            if entry.file is not None:
                self.kernel.forget_name(BY_ID_INODE, entry.file.id)
        if entry.lookups == 0:
            self._nodes.pop(entry.inode, None)

    def _rename_all(self, directory: PurposeDir, *, notify: bool = True) -> None:
        """Give every file of the directory its name (see docs/SEMANTICS.md "Names").

        A file shows under its (encoded) server name when no other file of the directory
        claims that name and it fits; otherwise every claimant shows as ``stem (id).ext``.
        Files being created keep the name they were created with.
        """
        self._usage = None
        kept = {entry.kept_name: entry for entry in directory.files.values()
                if entry.kept_name is not None}
        taken = set(directory.unsent) | set(kept)
        wanted: dict[FileEntry, str] = {}
        for entry in sorted(directory.files.values(), key=lambda e: e.inode):
            if entry.kept_name is not None:
                continue
            if entry.file is None:
                wanted[entry] = entry.name
            elif entry.file.problem is not None:
                # an entry that cannot be trusted never takes a plain name: it says its id
                wanted[entry] = names.with_id(names.encode(entry.file.filename), entry.file.id)
            else:
                wanted[entry] = names.encode(entry.file.filename)
        # Each round gives every claimant of a clashing name a longer, id-bearing name; a
        # clash can only persist while some real filename equals such a longer name, so the
        # rounds end after at most one per file.
        for _round in range(len(wanted) + 2):
            claims: dict[str, list[FileEntry]] = {}
            for entry, name in wanted.items():
                claims.setdefault(name, []).append(entry)
            clashes = [name for name, group in claims.items()
                       if len(group) > 1 or name in taken or not names.fits(name)]
            if not clashes:
                break
            for name in clashes:
                for entry in claims[name]:
                    if entry.file is not None:
                        wanted[entry] = names.with_id(name, entry.file.id)
        by_name = {name: entry for name, entry in directory.unsent.items()}
        by_name.update(kept)
        for entry, name in wanted.items():
            by_name.setdefault(name, entry)
        old = directory.by_name
        for name, entry in by_name.items():
            entry.name = name
        directory.by_name = by_name
        if by_name.keys() != old.keys():
            directory.names_changed()
        if notify:
            for name, entry in old.items():
                if by_name.get(name) is not entry:
                    self.kernel.forget_name(directory.inode, name)
