"""The spool: local files holding the bytes of files being written, and what happens to them
when a mount dies.

Bytes written through the mount go to a spool file (never memory), so seeks, rewrites,
truncation and sparse writes work while a file is open. Each spool file has a *sidecar* (its
purpose and name, and the Upload it is being sent with, if any), so that a later mount can say
what a dead mount's spool file was. The spool folder of a running mount is locked; a later mount
finds the folders of mounts that died, moves their files to ``unsent/`` and says so in its log.
Bytes that failed to upload are moved to ``unsent/`` too; nothing is ever dropped silently.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from openai_fs.api import FileObject
from openai_fs.core import names, purposes
from openai_fs.core.early_upload import LET_GO_SPAN, let_go_behind
from openai_fs.core.errors import FSError, RuleViolation
from openai_fs.core.private import private_dir, private_dirs, write_private

if TYPE_CHECKING:
    from openai_fs.core.cache import ContentCache
    from openai_fs.core.early_upload import EarlyUpload

log = logging.getLogger(__name__)


@dataclass(eq=False)
class LocalFile:
    """The bytes of one file being written, in a spool file.

    **The lock.** ``lock`` is held while something reads the spool as a whole: an upload
    (:meth:`OpenFiles.commit <openai_fs.core.open_files.OpenFiles.commit>`) and the fetch of
    the server bytes the spool stands for (:meth:`ensure_loaded`). Writes and truncations wait
    for it, so an upload always sends one state of the file; reads through the mount do not.

    **Invariants.**

    * ``size`` is the spool file's length; ``fd`` is open until :meth:`close` (then -1).
    * While ``base`` is set, the spool stands for that server file's bytes without holding
      them: nothing may read, write or truncate (except to 0) before :meth:`ensure_loaded`.
    * ``dirty`` is false only when the server has exactly these bytes (after an upload, or for
      a ``base`` not yet changed).
    * Once ``failure`` is set it stays, and every write, truncation and upload raises it.
    * ``discarded`` (unlinked or renamed over before its upload) means it is never uploaded.
    """

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
    #: what the spool is, for a later mount if this one dies (see Spool.recover)
    sidecar: Path | None = None
    #: the upload that began while the file is written, if any
    early: EarlyUpload | None = None
    #: written from start to end so far, without leaving holes (only such files upload early)
    sequential: bool = True
    #: once the file is this large, pages behind the writer are next let go (see write())
    let_go_at: int = LET_GO_SPAN
    #: its write-back journal record while it waits for (or is in) its background upload
    record: Record | None = None
    #: queued for a background upload: the queue lets it go once uploaded, not its last close
    queued: bool = False

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

    def sync(self) -> None:
        """Make the bytes durable (blocking: run it in a thread)."""
        os.fsync(self.fd)

    async def ensure_loaded(self, cache: ContentCache) -> None:
        """Fetch the server bytes the spool stands for (from the content cache when there)."""
        if self.base is None:
            return
        async with self.lock:
            base = self.base
            if base is None:
                return
            await cache.copy_into(base, self.path, self.fd)
            self.base = None

    def note_upload(self, upload_id: str) -> None:
        """Write the Upload it is being sent with into the sidecar, for a later mount if this
        one dies (which then cancels it)."""
        if self.record is not None:         # journaled: the record keeps it, durably
            self.record.journal["upload_id"] = upload_id
            write_record(self.record)
            return
        if self.sidecar is None:
            return
        info = _read_sidecar(self.sidecar)
        info["upload_id"] = upload_id
        try:
            write_private(self.sidecar, json.dumps(info))
        except OSError as exc:
            log.debug("could not note Upload %s in %s: %s", upload_id, self.sidecar, exc)

    def drop_early(self, reason: str) -> None:
        """Give up the upload that began while the file was written, if any."""
        if self.early is not None:
            self.early.abandon(reason)
            self.early = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Spool:
    """The spool folder of this mount (locked while it runs) and ``unsent/`` beside it. Every
    folder is ``0700`` and every file ``0600`` (:mod:`openai_fs.core.private`)."""

    def __init__(self, cache_dir: Path, *, account: str = "") -> None:
        self._cache_dir = cache_dir
        self.unsent_dir = cache_dir / "unsent"
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)   # chosen by cache_root
        spool_root = private_dirs(cache_dir, "spool")
        # The lock file beside the folder is taken before the folder exists, so a mount
        # starting at the same moment never mistakes this folder for a dead mount's.
        name = f"mount-{os.getpid()}-{secrets.token_hex(3)}"
        self._lock_fd = os.open(spool_root / f"{name}.lock",
                                os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.folder = spool_root / name
        self.folder.mkdir(mode=0o700)
        os.chmod(self.folder, 0o700)        # whatever the umask
        #: the write-back journal of this mount, tied to its account
        self.journal = Journal(self.folder, account)
        #: Uploads that dead mounts left open (their ids, from the spool sidecars)
        self.abandoned_uploads: list[str] = []
        #: journal records of dead mounts of this account, moved here to be finished
        self.resumed: list[Record] = []
        self._recover_dead_spools(spool_root)

    def new_file(self, purpose: str, name: str) -> LocalFile:
        """An empty spool file for ``purpose/name``, with its sidecar."""
        path = self.folder / secrets.token_hex(8)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        # the sidecar lets a later mount say what a dead mount's spool file was
        sidecar = path.with_suffix(".json")
        write_private(sidecar, json.dumps({"purpose": purpose, "name": name,
                                           "created": time.time()}))
        return LocalFile(path, fd, purpose, sidecar=sidecar)

    def holds(self, local: LocalFile) -> bool:
        """Whether the spool file is still in this mount's folder (not moved to unsent/)."""
        return local.path.parent == self.folder

    def remove(self, local: LocalFile, *, keep_bytes: bool = False) -> None:
        """A closed spool file leaves the spool: its bytes are deleted unless ``keep_bytes``
        (they were moved away, e.g. into the content cache), and its sidecar goes."""
        if not keep_bytes and self.holds(local):
            local.path.unlink(missing_ok=True)
        if local.sidecar is not None:
            local.sidecar.unlink(missing_ok=True)

    def temporary_path(self) -> Path:
        """A fresh path in the spool folder, for a copy that is not a spool file."""
        return self.folder / secrets.token_hex(8)

    def keep_unsent(self, local: LocalFile, purpose: str, name: str) -> Path:
        """Move the bytes of a failed upload to ``unsent/``; returns where they are."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self._unsent_path(f"{stamp}-{purpose}-", name)
        os.replace(local.path, target)
        if local.sidecar is not None:
            local.sidecar.unlink(missing_ok=True)
            local.sidecar = None
        local.path = target
        return target

    def close(self) -> None:
        """Remove the folder, but for what the journal still has to do: that stays for the
        next mount of the account (the folder's lock file goes, so it counts as dead)."""
        if self._lock_fd < 0:
            return
        kept = self.journal.pending_paths()
        if kept:
            for path in self.folder.iterdir():
                if path not in kept:
                    path.unlink(missing_ok=True)
            log.info("%d write-back change(s) not finished; the next mount of this account "
                     "with this cache folder finishes them", len(self.journal.pending))
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder.parent / f"{self.folder.name}.lock").unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = -1

    def _unsent_path(self, prefix: str, name: str) -> Path:
        """A new path in ``unsent/``: the prefix, then as much of the name as fits."""
        private_dir(self.unsent_dir)
        for counter in range(1, 10_000):
            head = prefix if counter == 1 else f"{prefix}{counter}-"
            target = self.unsent_dir / (head + names.cut(name.replace("/", "_"),
                                                         names.MAX_NAME_BYTES - len(head)))
            if not target.exists():
                return target
        raise OSError(errno.EEXIST, "no free name in the unsent folder")

    def _recover_dead_spools(self, spool_root: Path) -> None:
        """Take over the write-back journal of dead mounts of this account (into
        :attr:`resumed`), move the rest of what they left in their spools to ``unsent/``, and
        say so. Journal records of another account stay where they are, for a mount of it."""
        for folder in spool_root.iterdir():
            if not folder.is_dir() or folder == self.folder:
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
            foreign = False
            for path in sorted(folder.iterdir()):
                if not path.exists():       # a data file taken over with its record
                    continue
                if path.suffix == ".tmp":
                    continue                # a record never written to its end
                if path.suffix == ".json":
                    info = _read_sidecar(path)
                    journal = info.get("journal")
                    if isinstance(journal, dict):
                        if journal.get("account") == self.journal.account:
                            self._take_over(path, info)
                        else:
                            foreign = True
                        continue
                    upload_id = info.get("upload_id")
                    if isinstance(upload_id, str):
                        self.abandoned_uploads.append(upload_id)
                    continue
                info = _read_sidecar(path.with_suffix(".json"))
                if isinstance(info.get("journal"), dict):
                    continue                # its record says what to do with it
                if path.stat().st_size == 0 and not info:
                    continue
                target = self._unsent_path(
                    f"recovered-{info.get('purpose', 'unknown')}-",
                    str(info.get("name", path.name)))
                os.replace(path, target)
                rescued.append(str(target))
            if foreign:
                for path in folder.iterdir():
                    info = _read_sidecar(path if path.suffix == ".json"
                                         else path.with_suffix(".json"))
                    if not isinstance(info.get("journal"), dict):
                        path.unlink(missing_ok=True)
            else:
                shutil.rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)
            if rescued:
                log.warning("a previous mount stopped while %d file(s) were being written; "
                            "they were not uploaded and are kept in %s: %s", len(rescued),
                            self.unsent_dir, ", ".join(rescued))


    def _take_over(self, path: Path, info: dict) -> None:
        """Move a dead mount's journal record (and the spool file it is about) here."""
        journal = info["journal"]
        target = self.folder / path.name
        if journal.get("op") == "upload":
            data = path.with_suffix("")
            if not data.exists():
                log.warning("a write-back record of %s/%s has lost its bytes (%s); dropping it",
                            info.get("purpose"), info.get("name"), data)
                path.unlink(missing_ok=True)
                return
            os.replace(data, self.folder / data.name)
        os.replace(path, target)
        record = Record(target, info)
        self.journal.pending.add(record)
        self.resumed.append(record)


@dataclass(eq=False)
class Record:
    """One change of the write-back journal: a JSON file in the spool folder (the sidecar of a
    queued spool file, or a file of its own for a delete), replaced atomically and synced."""

    path: Path
    data: dict[str, Any]

    @property
    def journal(self) -> dict[str, Any]:
        return self.data["journal"]

    @property
    def op(self) -> str:
        """``upload`` or ``delete``; empty once the record was removed."""
        return str(self.data.get("journal", {}).get("op", ""))

    @property
    def data_path(self) -> Path:
        """The spool file of an upload record."""
        return self.path.with_suffix("")


class Journal:
    """The write-back journal of one spool folder. Every record names the account it was
    written for (:attr:`account`), and goes to disk (synced, with its folder) before the call
    that wrote it returns."""

    def __init__(self, folder: Path, account: str) -> None:
        self.folder = folder
        self.account = account
        #: records written and not finished yet
        self.pending: set[Record] = set()

    def upload(self, local: LocalFile, purpose: str, name: str,
               replaces: list[FileObject]) -> Record:
        """The spool ``local`` is to be uploaded as ``purpose/name``; ``replaces`` are the server
        files to delete once it is."""
        assert local.sidecar is not None
        record = Record(local.sidecar, {
            "purpose": purpose, "name": name, "created": time.time(),
            "journal": {"op": "upload", "account": self.account, "state": "queued",
                        "replaces": [asdict(file) for file in replaces]}})
        write_record(record)
        local.record = record
        self.pending.add(record)
        return record

    def delete(self, file: FileObject) -> Record:
        """The server file ``file`` is to be deleted."""
        record = Record(self.folder / f"{secrets.token_hex(8)}.delete.json", {
            "purpose": file.purpose, "name": file.filename, "created": time.time(),
            "journal": {"op": "delete", "account": self.account, "file": asdict(file)}})
        write_record(record)
        self.pending.add(record)
        return record

    def sending(self, record: Record) -> None:
        """The upload begins now: a later mount that finds this record looks for what it may
        have made since (a lost answer) before it uploads again."""
        record.journal.update(state="sending", since=time.time())
        write_record(record)

    def uploaded(self, record: Record, file_id: str) -> None:
        """The server made ``file_id`` of it: what is left is deleting what it replaces."""
        record.journal.update(state="uploaded", file_id=file_id)
        write_record(record)

    def renamed(self, record: Record, purpose: str, name: str,
                replaces: list[FileObject]) -> None:
        record.data.update(purpose=purpose, name=name)
        record.journal["replaces"] = [asdict(file) for file in replaces]
        write_record(record)

    def remove(self, record: Record) -> None:
        """The change is on the server (or given up): its record goes. The sidecar of a spool
        file stays, without the journal, while the file is open."""
        self.pending.discard(record)
        if not record.op:
            return                  # removed already
        if record.op == "delete":
            record.path.unlink(missing_ok=True)
            return
        record.data.pop("journal", None)
        if record.path.exists():
            try:
                write_private(record.path, json.dumps(record.data))
            except OSError as exc:
                log.debug("could not rewrite %s: %s", record.path, exc)

    def pending_paths(self) -> set[Path]:
        paths = set()
        for record in self.pending:
            paths.add(record.path)
            if record.op == "upload":
                paths.add(record.data_path)
        return paths


def write_record(record: Record) -> None:
    """Replace a journal record's file atomically and durably (the file, then its folder)."""
    temporary = record.path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(record.data).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, record.path)
    folder = os.open(record.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _read_sidecar(path: Path) -> dict[str, object]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
