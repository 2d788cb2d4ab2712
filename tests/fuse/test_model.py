"""A reference-model test: random sequences of real syscalls on a real mount, checked against a
model of what docs/SEMANTICS.md promises, after every step.

The machine (a Hypothesis ``RuleBasedStateMachine``, like mountpoint-s3's reftests) mounts the
emulator afresh for every example and applies rules drawn at random:

* ``create``: open(O_CREAT|O_EXCL), write, close a new file in a writable purpose; refused with
  EEXIST when the name is shown, EINVAL when the purpose takes ``.jsonl`` names only.
* ``overwrite``: open(O_TRUNC), write, close: a new file, then the old one deleted.
* ``append``: open(O_APPEND), write, close: a change in place (nothing at all if nothing is
  written).
* ``read_part``: pread a slice of a file, through its name or ``.by-id``.
* ``unlink``; ``rename`` to a name of the small alphabet in any writable purpose (EXDEV when
  the target purpose refuses the name); ``rename_over`` onto another file's shown name, which
  replaces it (that name may carry an id).
* descriptors kept open across steps: ``open_new_writer``, ``open_writer`` (O_TRUNC, in place
  or O_APPEND), ``write_held``, ``rename_held`` (the file a writer has open, as rsync and GIO
  do), ``close_held``, and ``open_reader``, ``close_reader``, so that every other rule also
  meets files being written and read.
* ``upload_elsewhere``, ``upload_same_name_elsewhere``, ``delete_elsewhere``: another client
  changes the server directly (the last two always collide with, or remove, a known file).

The model: ``files``, the server's files by id (purpose, filename, bytes), and ``spools``, the
files open for writing (the mount's local bytes, the file id they stand for or None for a new
file, whether they changed since the last upload). A file the mount uploads gets its id from
``user.openai.id`` after close, found by the inode its descriptor had (an inode stays with its
file through uploads, replacements and moves, even when the collision rule renames it). Names
come from a small alphabet so that collisions are common; the expected listing follows
docs/SEMANTICS.md "Names": every file of a name that several share shows as ``stem (id).ext``,
and a new file keeps the name it was created with until it is uploaded.

After every step ``check`` compares: ``ls .by-id``; for every writable purpose the listing, and
for each file ``st_size``, ``st_ino`` (stable per id), the ``user.openai.*`` attributes and the
bytes; what every descriptor held open reads; and the server's files (ids, purposes,
filenames, sizes, bytes), so a replaced or moved file that was not deleted shows up too.
Bugs it found are kept as plain tests in test_model_regressions.py.

The mount runs with ``--dir-ttl 0``: another client's changes must show at the next step, and
the model has no clock to say when a cached listing would expire. (The mount's own changes show
at once whatever the TTL; with a TTL of 0 every lookup also lists again, so the model can ignore
the kernel's and the mount's listing caches.)

The examples are the same on every run (derandomized), so that CI passes or fails for a change
and not for a draw. To explore, set ``OPENAI_FS_MODEL_RANDOM=1`` (new draws every run, or
``--hypothesis-seed=N`` for given ones) and run longer with ``OPENAI_FS_MODEL_EXAMPLES=100
OPENAI_FS_MODEL_STEPS=40``; add ``-s`` to see how many steps of each rule ran and which cases
came up.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import stat
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from openai_fs.core import names
from fusetools import delete_on_server, upload_on_server

WRITABLE = ("assistants", "batch", "evals", "fine-tune", "user_data", "vision")
JSONL_ONLY = ("batch", "fine-tune")
#: purposes whose content the server refuses, as the real service does (the emulator's
#: default); the mount is told so up front, so that what it refuses does not depend on
#: which file was read first (learning it is tested in test_real_service.py)
REFUSED = ("assistants", "evals", "fine-tune", "user_data")
MOVE_REFUSAL = r"rename: cannot move .*: the API cannot rename a file"
#: server filenames: few stems so that names collide; ``.jsonl`` (any case) fits every purpose,
#: the others are refused by batch and fine-tune; ``/`` and a literal ``／`` exercise the name
#: rule. None has ``(`` so the model's id-bearing names cannot clash with a real name, and
#: none looks like a temporary file of rsync or GIO (uploaded only at its rename).
FILENAMES = ("a.jsonl", "b.jsonl", "A.JSONL", "a.txt", "notes", "dir/c.jsonl", "x\uff0fy.txt")
#: about a minute on two cores; more with OPENAI_FS_MODEL_EXAMPLES and OPENAI_FS_MODEL_STEPS
EXAMPLES = int(os.environ.get("OPENAI_FS_MODEL_EXAMPLES", "25"))
STEPS = int(os.environ.get("OPENAI_FS_MODEL_STEPS", "25"))
#: fixed draws unless asked for new ones (see the module's docstring)
RANDOM = os.environ.get("OPENAI_FS_MODEL_RANDOM", "") not in ("", "0")
#: descriptors the machine keeps open at most at a time
MAX_HELD = 3
JSONL_REFUSAL = r"refused, (batch|fine-tune) files must be JSON Lines"

#: steps per rule and cases met, in this process (printed at the end of the test)
STEP_COUNTS: Counter[str] = Counter()
CASES: Counter[str] = Counter()


def _sized(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


#: mostly a few bytes; sometimes sizes around page and FUSE request boundaries, up to 1 MiB
CONTENTS = st.one_of(
    st.binary(max_size=40),
    st.builds(_sized, st.integers(0, 2**16),
              st.sampled_from([4095, 4096, 4097, 131072, 131073, 1 << 20])),
)


def case(text: str) -> None:
    event(text)
    CASES[text] += 1


def refuses(purpose: str, filename: str) -> bool:
    """The purpose rule of docs/SEMANTICS.md section 7."""
    return purpose in JSONL_ONLY and not filename.lower().endswith(".jsonl")


@dataclass
class ModelFile:
    """A file on the server."""
    id: str
    purpose: str
    filename: str
    content: bytes
    #: order of creation: choices follow it, never the ids (random, so the same choices would
    #: pick other files in a replay and Hypothesis could not shrink)
    seq: int = 0
    #: uploaded through the mount, which keeps its bytes (its disk cache holds every file here)
    held: bool = False

    @property
    def readable(self) -> bool:
        """Whether the mount can read it: the server serves its purpose's content, or the
        mount holds the bytes (docs/SEMANTICS.md section 5a)."""
        return self.held or self.purpose not in REFUSED


@dataclass(eq=False)
class Spool:
    """A file open for writing: the mount's local bytes."""
    purpose: str
    filename: str
    #: the file it stands for; None for a new file not uploaded yet
    id: str | None
    data: bytearray
    inode: int
    #: the name a new file was created with (it keeps it until uploaded)
    name: str = ""
    #: changed since the last upload: the next close of a writer uploads it
    dirty: bool = True
    #: removed (rm, or replaced by a rename) while open: never uploaded
    discarded: bool = False
    #: open descriptors on it (writers, and readers opened while it existed)
    handles: int = 0
    #: of which writers: a close uploads only when it ends the writing (SEMANTICS.md section 6)
    writers: int = 0
    #: server files it was renamed over before its upload: hidden now, deleted after it
    supersedes: list[str] = field(default_factory=list)
    seq: int = 0


@dataclass(eq=False)
class Writer:
    fd: int
    spool: Spool
    offset: int = 0
    append: bool = False


@dataclass(eq=False)
class Reader:
    fd: int
    #: reading a file being written: its spool, live
    spool: Spool | None
    #: reading a server file: its bytes
    content: bytes = b""
    #: False once its bytes may be gone: deleted elsewhere, or by the mount without being
    #: kept for open descriptors (see ``check_reader``)
    strict: bool = True
    file_id: str | None = None
    inode: int = 0
    #: a writer opened its file after it: once the file is removed, see ``check_reader``
    writer_seen: bool = False
    #: what the file held when it left the mount, and its spool then
    content_at_removal: bytes | None = None
    spool_at_removal: Spool | None = None


@dataclass(eq=False)
class Shown:
    """A file as the mount should show it."""
    purpose: str
    id: str | None
    filename: str
    content: bytes
    spool: Spool | None
    seq: int
    #: its bytes can be read (a file being written always can)
    readable: bool = True


def shown_names(entries: list[Shown]) -> dict[str, Shown]:
    """name -> file of one purpose directory, by docs/SEMANTICS.md "Names": a name that several
    files share (or a new file being written holds, or that does not fit 255 bytes) shows as
    ``stem (id).ext``; a new file keeps the name it was created with."""
    taken = {e.spool.name: e for e in entries if e.id is None}
    wanted = [(names.encode(e.filename), e) for e in entries if e.id is not None]
    claims = Counter(name for name, _ in wanted)
    shown = dict(taken)
    for name, entry in wanted:
        if claims[name] > 1 or name in taken or not names.fits(name):
            name = names.with_id(name, entry.id)
        assert name not in shown, f"the model made {name} twice"
        shown[name] = entry
    return shown


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_all(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def pread_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def expect_errno(code: int, call, *args) -> None:
    try:
        call(*args)
    except OSError as exc:
        assert exc.errno == code, \
            f"{call.__name__}{args}: {exc!r}, expected {errno.errorcode[code]}"
    else:
        raise AssertionError(f"{call.__name__}{args} succeeded, expected {errno.errorcode[code]}")


class MountModel(RuleBasedStateMachine):
    """One example: a fresh emulator state and a fresh mount (see the module docstring)."""

    #: set by the test: the session emulator and the Mounter class behind the ``mount`` fixture
    emulator = None
    mounter_class = None

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, ModelFile] = {}
        self.spools: list[Spool] = []
        self.writers: dict[str, Writer] = {}
        self.readers: dict[str, Reader] = {}
        self.labels = itertools.count(1)
        self.seq = itertools.count()
        self.inodes: dict[str, int] = {}     # id -> st_ino seen (stable per id)
        self.verified: set[str] = set()      # ids whose server bytes were compared already
        self.emulator.control.reset()
        self.tmp = Path(tempfile.mkdtemp(prefix="openai-fs-model-"))
        self.mounter = self.mounter_class(self.tmp, self.emulator)
        try:
            self.mounted = self.mounter("--dir-ttl", "0", "--not-downloadable",
                                        ",".join(REFUSED))
        except BaseException:
            self._cleanup()
            raise
        self.root = self.mounted.path

    # ------------------------------------------------------------------ model

    def live_spools(self) -> list[Spool]:
        return [s for s in self.spools if not s.discarded]

    def hidden(self) -> set[str]:
        return {file_id for s in self.live_spools() for file_id in s.supersedes}

    def entries(self, purpose: str) -> list[Shown]:
        spooled = {s.id for s in self.live_spools() if s.id is not None}
        hidden = self.hidden()
        found = [Shown(f.purpose, f.id, f.filename, f.content, None, f.seq, f.readable)
                 for f in self.files.values()
                 if f.purpose == purpose and f.id not in spooled and f.id not in hidden]
        found += [Shown(s.purpose, s.id, s.filename, bytes(s.data), s, s.seq)
                  for s in self.live_spools() if s.purpose == purpose]
        return sorted(found, key=lambda e: e.seq)

    def expected(self, purpose: str) -> dict[str, Shown]:
        return shown_names(self.entries(purpose))

    def shown_paths(self) -> dict[str, Shown]:
        """``purpose/name`` -> file, for every file the mount should show, in a deterministic
        order (purposes, then creation)."""
        shown = {}
        for purpose in WRITABLE:
            expected = self.expected(purpose)
            for name in sorted(expected, key=lambda name: expected[name].seq):
                shown[f"{purpose}/{name}"] = expected[name]
        return shown

    def pick(self, data, label: str = "file") -> tuple[Path, Shown]:
        paths = self.shown_paths()
        chosen = data.draw(st.sampled_from(list(paths)), label=label)
        return self.root / chosen, paths[chosen]

    def id_of_inode(self, purpose: str, inode: int) -> str:
        """The id of the file shown with this inode in a purpose directory."""
        directory = self.root / purpose
        found = [name for name in os.listdir(directory)
                 if os.stat(directory / name).st_ino == inode]
        assert len(found) == 1, f"inode {inode} in {purpose}: {found}"
        file_id = os.getxattr(directory / found[0], "user.openai.id").decode()
        note(f"-> {purpose}/{found[0]} is {file_id}")
        return file_id

    def add(self, file_id: str, purpose: str, filename: str, content: bytes, *,
            held: bool = False) -> None:
        assert file_id not in self.files, f"{file_id} is known already"
        self.files[file_id] = ModelFile(file_id, purpose, filename, content, next(self.seq),
                                        held)

    def deleted(self, file_id: str | None, *, by_mount: bool) -> None:
        """A server file went away; readers of it may now get ENOENT unless the mount
        deleted it (then docs/SEMANTICS.md section 9 says they keep reading)."""
        if file_id is None:
            return
        self.files.pop(file_id, None)
        if not by_mount:
            self.loosen_readers(file_id)

    def loosen_readers(self, file_id: str) -> None:
        for reader in self.readers.values():
            if reader.file_id == file_id:
                reader.strict = False

    def discard(self, spool: Spool) -> None:
        """A spool removed from the mount: never uploaded. The files it had been renamed over
        were replaced by it, so they are gone too."""
        spool.discarded = True
        for file_id in spool.supersedes:
            self.deleted(file_id, by_mount=False)
        spool.supersedes = []

    def remove(self, entry: Shown) -> None:
        """What ``rm`` of this file does (also a file that a rename replaces)."""
        self.freeze_readers(entry)
        if entry.spool is not None:
            self.discard(entry.spool)
        self.deleted(entry.id, by_mount=True)

    def inode_of(self, entry: Shown) -> int | None:
        return entry.spool.inode if entry.spool else self.inodes.get(entry.id)

    def freeze_readers(self, entry: Shown) -> None:
        """The file leaves the mount: remember what it held for the descriptors open on it."""
        for reader in self.readers.values():
            if reader.spool is None and reader.inode == self.inode_of(entry):
                reader.content_at_removal = entry.content
                reader.spool_at_removal = entry.spool

    def step(self, name: str) -> None:
        STEP_COUNTS[name] += 1

    # ------------------------------------------------ writers: open, write, close

    def open_for_writing(self, path: Path, entry: Shown | None, flags: int,
                         purpose: str = "", filename: str = "") -> Writer:
        """open() a file for writing, and what the model expects of it."""
        fd = os.open(path, flags, 0o644)
        inode = os.fstat(fd).st_ino
        spool = entry.spool if entry is not None else None
        if spool is not None:
            # several descriptors share the file's local bytes
            case("open: a file already being written")
            if flags & os.O_TRUNC:
                del spool.data[:]
                spool.dirty = True
        elif entry is None:
            spool = Spool(purpose, filename, None, bytearray(), inode, name=path.name,
                          seq=next(self.seq))
            self.spools.append(spool)
        else:
            truncate = bool(flags & os.O_TRUNC)
            spool = Spool(entry.purpose, entry.filename, entry.id,
                          bytearray() if truncate else bytearray(entry.content), inode,
                          dirty=truncate, seq=next(self.seq))
            self.spools.append(spool)
        assert spool.inode == inode, f"{path}: inode {inode}, the model has {spool.inode}"
        spool.handles += 1
        spool.writers += 1
        for reader in self.readers.values():
            if reader.spool is None and reader.inode == inode:
                reader.writer_seen = True
        return Writer(fd, spool, append=bool(flags & os.O_APPEND))

    def write(self, writer: Writer, data: bytes) -> None:
        write_all(writer.fd, data)
        if not data:
            return
        spool = writer.spool
        offset = len(spool.data) if writer.append else writer.offset
        if offset > len(spool.data):
            case("write: past the end (a hole)")
            spool.data.extend(bytes(offset - len(spool.data)))
        spool.data[offset:offset + len(data)] = data
        writer.offset = offset + len(data)
        spool.dirty = True

    def close_writer(self, writer: Writer) -> None:
        """close(): uploads the spool if it changed (whoever changed it), unless another
        descriptor of this process still writes the file: then that one's close uploads
        (docs/SEMANTICS.md section 6, "Several descriptors"; every descriptor here is this
        process's)."""
        spool = writer.spool
        os.close(writer.fd)
        spool.writers -= 1
        if spool.writers:
            case("close: another writer still has the file open")
        if spool.dirty and not spool.discarded and not spool.writers:
            file_id = self.id_of_inode(spool.purpose, spool.inode)
            if spool.id is not None:
                self.deleted(spool.id, by_mount=False)   # replaced: old readers may lose it
            for superseded in spool.supersedes:
                self.deleted(superseded, by_mount=False)
            spool.supersedes = []
            self.add(file_id, spool.purpose, spool.filename, bytes(spool.data), held=True)
            spool.id = file_id
            spool.dirty = False
        self.release(spool)

    def release(self, spool: Spool) -> None:
        spool.handles -= 1
        if spool.handles == 0:
            self.spools.remove(spool)

    def held(self) -> int:
        return len(self.writers) + len(self.readers)

    def new_label(self, kind: str, path: Path) -> str:
        return f"{kind}{next(self.labels)} {path.parent.name}/{path.name}"

    # ------------------------------------------------------------------ rules

    @rule(purpose=st.sampled_from(WRITABLE), filename=st.sampled_from(FILENAMES),
          content=CONTENTS)
    def create(self, purpose, filename, content):
        self.step("create")
        writer = self._create(purpose, filename)
        if writer is not None:
            self.write(writer, content)
            self.close_writer(writer)

    def _create(self, purpose: str, filename: str) -> Writer | None:
        path = self.root / purpose / names.encode(filename)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        if path.name in self.expected(purpose):
            case("create: EEXIST")
            expect_errno(errno.EEXIST, os.open, path, flags, 0o644)
            return None
        if refuses(purpose, filename):
            case("create: EINVAL (purpose rule)")
            self.mounted.expect_log(JSONL_REFUSAL)
            expect_errno(errno.EINVAL, os.open, path, flags, 0o644)
            return None
        if any(e.filename == filename for e in self.entries(purpose)):
            case("create: a name a file on the server has")
        return self.open_for_writing(path, None, flags, purpose, filename)

    @precondition(lambda self: self.shown_paths())
    @rule(data=st.data(), content=CONTENTS)
    def overwrite(self, data, content):
        self.step("overwrite")
        path, entry = self.pick(data)
        writer = self.open_for_writing(path, entry, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        self.write(writer, content)
        self.close_writer(writer)

    @precondition(lambda self: self.shown_paths())
    @rule(data=st.data(), extra=st.binary(max_size=20))
    def append(self, data, extra):
        self.step("append")
        path, entry = self.pick(data)
        if self.refused(entry, path, os.O_WRONLY | os.O_APPEND):
            return
        writer = self.open_for_writing(path, entry, os.O_WRONLY | os.O_APPEND)
        self.write(writer, extra)
        if not extra:
            case("append: nothing written")
        self.close_writer(writer)

    @precondition(lambda self: self.held() < MAX_HELD)
    @rule(purpose=st.sampled_from(WRITABLE), filename=st.sampled_from(FILENAMES))
    def open_new_writer(self, purpose, filename):
        self.step("open_new_writer")
        writer = self._create(purpose, filename)
        if writer is not None:
            self.hold(writer, self.root / purpose / writer.spool.name)

    @precondition(lambda self: self.held() < MAX_HELD and self.shown_paths())
    @rule(data=st.data(), how=st.sampled_from(["O_TRUNC", "in place", "O_APPEND"]))
    def open_writer(self, data, how):
        self.step("open_writer")
        path, entry = self.pick(data)
        flags = os.O_WRONLY | {"O_TRUNC": os.O_TRUNC, "in place": 0, "O_APPEND": os.O_APPEND}[how]
        if not flags & os.O_TRUNC and self.refused(entry, path, flags):
            return
        self.hold(self.open_for_writing(path, entry, flags), path)

    @staticmethod
    def refused(entry: Shown, path: Path, flags: int) -> bool:
        """An open that needs bytes the mount cannot read: EACCES (section 5a), at the open
        when it reads or appends, else (write-only, in place) at the first write; nothing
        changes."""
        if entry.readable:
            return False
        if flags & os.O_ACCMODE != os.O_WRONLY or flags & os.O_APPEND:
            case("open: EACCES, content the server keeps")
            expect_errno(errno.EACCES, os.open, path, flags)
            return True
        case("write in place: EACCES, content the server keeps")
        fd = os.open(path, flags)
        try:
            expect_errno(errno.EACCES, os.write, fd, b"x")
        finally:
            os.close(fd)
        return True

    def hold(self, writer: Writer, path: Path) -> None:
        label = self.new_label("w", path)
        note(f"-> {label}")
        self.writers[label] = writer

    @precondition(lambda self: self.writers)
    @rule(data=st.data(), content=CONTENTS)
    def write_held(self, data, content):
        self.step("write_held")
        writer = self.writers[data.draw(st.sampled_from(list(self.writers)), label="writer")]
        if writer.spool.discarded:
            case("write: a removed file")
        self.write(writer, content)

    @precondition(lambda self: self.writers)
    @rule(data=st.data())
    def close_held(self, data):
        self.step("close_held")
        writer = self.writers.pop(data.draw(st.sampled_from(list(self.writers)),
                                            label="writer"))
        if writer.spool.discarded:
            case("close: a removed file")
        self.close_writer(writer)

    @precondition(lambda self: self.held() < MAX_HELD and self.shown_paths())
    @rule(data=st.data())
    def open_reader(self, data):
        self.step("open_reader")
        path, entry = self.pick(data)
        if self.refused(entry, path, os.O_RDONLY):
            return
        fd = os.open(path, os.O_RDONLY)
        if entry.spool is not None:
            entry.spool.handles += 1
            reader = Reader(fd, entry.spool, inode=os.fstat(fd).st_ino)
        else:
            reader = Reader(fd, None, entry.content, file_id=entry.id,
                            inode=os.fstat(fd).st_ino)
        label = self.new_label("r", path)
        note(f"-> {label}")
        self.readers[label] = reader

    def check_reader(self, label: str, reader: Reader) -> None:
        """What a descriptor held open reads now (from ``check``, after every step)."""
        if reader.spool is not None:
            assert pread_all(reader.fd) == bytes(reader.spool.data), label
            return
        # As on a local disk, a descriptor reads what its file holds now, whatever replaced
        # or moved it since; once the file is gone (rm, or gone on the server), the bytes it
        # was opened with (docs/SEMANTICS.md section 9), or ENOENT if another client deleted
        # them and they were not kept (section 5).
        current = [e.content for purpose in WRITABLE for e in self.entries(purpose)
                   if self.inode_of(e) == reader.inode]
        if current:
            if current[0] != reader.content:
                case("read: the new bytes of a file replaced since")
            assert pread_all(reader.fd) == current[0], label
            return
        case("read: an open file gone since")
        try:
            got = pread_all(reader.fd)
        except OSError as exc:
            assert not reader.strict and exc.errno == errno.ENOENT, f"{label}: {exc!r}"
            case("read: ENOENT after a delete elsewhere")
            return
        if not reader.writer_seen:
            assert got == reader.content, label
            return
        # Its file was opened for writing after it, then removed: nothing says what it reads
        # then. The mount serves the bytes it was opened with, but the kernel keeps the size
        # the writer gave the inode; a local disk would give the writer's bytes. Any of these.
        if got == reader.content_at_removal or reader.spool_at_removal is not None and \
                got == bytes(reader.spool_at_removal.data):
            case("read: a removed file's last bytes")
            return
        assert reader.content.startswith(got), label
        case("read: the bytes it was opened with, cut to the writer's size")

    @precondition(lambda self: self.readers)
    @rule(data=st.data())
    def close_reader(self, data):
        self.step("close_reader")
        self.close_reader_labelled(data.draw(st.sampled_from(list(self.readers)),
                                             label="reader"))

    def close_reader_labelled(self, label: str) -> None:
        reader = self.readers.pop(label)
        os.close(reader.fd)
        if reader.spool is not None:
            self.release(reader.spool)

    @precondition(lambda self: self.shown_paths())
    @rule(data=st.data(), by_id=st.booleans(), offset=st.integers(0, 1 << 20),
          size=st.integers(0, 1 << 18))
    def read_part(self, data, by_id, offset, size):
        self.step("read_part")
        path, entry = self.pick(data)
        if by_id and entry.id is not None:
            path = self.root / ".by-id" / entry.id
        if self.refused(entry, path, os.O_RDONLY):
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            got = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        assert got == entry.content[offset:offset + size], f"pread({path}, {size}, {offset})"

    @precondition(lambda self: self.shown_paths())
    @rule(data=st.data())
    def unlink(self, data):
        self.step("unlink")
        path, entry = self.pick(data)
        if entry.spool is not None:
            case("unlink: a file being written")
        if entry.id is not None and entry.id not in self.files:
            # shown for its local bytes although another client deleted it: SEMANTICS.md
            # section 9, "a file already deleted on the server gives ENOENT"; it goes anyway
            case("unlink: ENOENT, deleted elsewhere")
            expect_errno(errno.ENOENT, os.unlink, path)
        else:
            os.unlink(path)
        self.remove(entry)

    @precondition(lambda self: self.shown_paths())
    @rule(data=st.data(), purpose=st.sampled_from(WRITABLE), filename=st.sampled_from(FILENAMES))
    def rename(self, data, purpose, filename):
        self.step("rename")
        path, entry = self.pick(data)
        self._rename(path, entry, self.root / purpose / names.encode(filename))

    @precondition(lambda self: len(self.shown_paths()) >= 2)
    @rule(data=st.data())
    def rename_over(self, data):
        """Rename onto the name another file is shown under (perhaps ``stem (id).ext``)."""
        self.step("rename_over")
        path, entry = self.pick(data)
        target, _ = self.pick(data, "replaced")
        self._rename(path, entry, target)

    @precondition(lambda self: self.writers)
    @rule(data=st.data(), over=st.booleans())
    def rename_held(self, data, over):
        """Rename a file while a writer has it open (to a name of the alphabet, or over another
        file): the case of rsync and GIO, and of any rename of a file being written."""
        self.step("rename_held")
        writer = self.writers[data.draw(st.sampled_from(list(self.writers)), label="writer")]
        shown = self.shown_paths()
        source = [path for path, entry in shown.items() if entry.spool is writer.spool]
        if not source:
            return          # removed meanwhile
        if over:
            target, _ = self.pick(data, "replaced")
        else:
            target = self.root / data.draw(st.sampled_from(WRITABLE), label="purpose") / \
                names.encode(data.draw(st.sampled_from(FILENAMES), label="filename"))
        self._rename(self.root / source[0], shown[source[0]], target)

    def _rename(self, source: Path, entry: Shown, target: Path) -> None:
        purpose = target.parent.name
        filename = names.decode(target.name)
        if source == target:
            case("rename: onto itself")
            os.rename(source, target)
            return
        if refuses(purpose, filename):
            case("rename: EXDEV (purpose rule)")
            expect_errno(errno.EXDEV, os.rename, source, target)
            return
        replaced = self.expected(purpose).get(target.name)
        spool = entry.spool
        if not entry.readable:
            # a move uploads the bytes again, and the mount cannot read them: nothing changes
            case("rename: EACCES, content the server keeps")
            self.mounted.expect_log(MOVE_REFUSAL)
            expect_errno(errno.EACCES, os.rename, source, target)
            return
        if replaced is not None and replaced.id is not None and replaced.id not in self.files:
            case("rename: over a file deleted elsewhere")
        case("rename: replaces a file" if replaced else "rename: to a free name")
        case("rename: across purposes" if purpose != entry.purpose else "rename: same purpose")
        inode = os.stat(source).st_ino
        os.rename(source, target)
        if spool is not None and spool.dirty and spool.id is not None:
            # changed and not uploaded yet: its local bytes are what moves, so it moves like a
            # new file, and its server file goes (hidden now) once they are uploaded
            case("rename: a file with unsaved changes")
            if spool.id not in self.files:
                case("rename: a changed file deleted elsewhere")
            spool.supersedes.append(spool.id)
            spool.id = None
        if spool is not None and spool.id is None:
            # not uploaded yet: renamed in the mount only; a file it replaces leaves the view
            # now and the server once this one is uploaded
            case("rename: a new file being written")
            if replaced is not None:
                if replaced.spool is not None:
                    replaced.spool.discarded = True
                    spool.supersedes += replaced.spool.supersedes
                    replaced.spool.supersedes = []
                if replaced.id is not None:
                    spool.supersedes.append(replaced.id)
                    self.loosen_readers(replaced.id)
                self.freeze_readers(replaced)
            spool.purpose, spool.filename, spool.name = purpose, filename, target.name
            return
        # uploaded again under the new name, then the old file deleted; the inode stays
        if replaced is not None:
            self.remove(replaced)
        new_id = self.id_of_inode(purpose, inode)
        self.add(new_id, purpose, filename, entry.content, held=True)
        self.deleted(entry.id, by_mount=True)
        if spool is not None:
            spool.id, spool.purpose, spool.filename = new_id, purpose, filename

    @rule(purpose=st.sampled_from(WRITABLE), filename=st.sampled_from(FILENAMES),
          content=CONTENTS)
    def upload_elsewhere(self, purpose, filename, content):
        self.step("upload_elsewhere")
        if refuses(purpose, filename):
            purpose = "assistants"      # the server would refuse it: put it where it fits
        made = upload_on_server(self.emulator, filename, purpose, content)
        self.add(made["id"], purpose, filename, content)

    @precondition(lambda self: self.shown_paths())
    @rule(data=st.data(), content=CONTENTS)
    def upload_same_name_elsewhere(self, data, content):
        self.step("upload_same_name_elsewhere")
        _, entry = self.pick(data)
        if entry.id is None:
            case("upload elsewhere: the name of a file being written")
        made = upload_on_server(self.emulator, entry.filename, entry.purpose, content)
        self.add(made["id"], entry.purpose, entry.filename, content)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def delete_elsewhere(self, data):
        self.step("delete_elsewhere")
        file_id = data.draw(st.sampled_from(
            [f.id for f in sorted(self.files.values(), key=lambda f: f.seq)]), label="id")
        if any(s.id == file_id for s in self.live_spools()):
            case("delete elsewhere: a file being written")
        if file_id in self.hidden():
            case("delete elsewhere: a file hidden by a rename over it")
        for entry in self.shown_paths().values():
            if entry.id == file_id and entry.spool is None:
                self.freeze_readers(entry)      # it leaves the mount at the next listing
        delete_on_server(self.emulator, file_id)
        self.deleted(file_id, by_mount=False)

    # ------------------------------------------------------------- invariant

    @invariant()
    def check(self):
        # first, before any purpose listing could drop what the full listing keeps
        # (test_model_regressions.py::test_by_id_drops_a_file_deleted_elsewhere)
        by_id = {e.id for purpose in WRITABLE for e in self.entries(purpose) if e.id}
        assert sorted(os.listdir(self.root / ".by-id")) == sorted(by_id), "ls .by-id"
        for purpose in WRITABLE:
            directory = self.root / purpose
            expected = self.expected(purpose)
            assert sorted(os.listdir(directory)) == sorted(expected), f"ls {purpose}"
            for name, entry in expected.items():
                path = directory / name
                info = os.stat(path)
                assert info.st_size == len(entry.content), path
                assert os.getxattr(path, "user.openai.filename") == \
                    names.name_bytes(entry.filename), path
                assert os.getxattr(path, "user.openai.purpose") == purpose.encode(), path
                if entry.id is None:
                    assert os.getxattr(path, "user.openai.status") == b"not uploaded", path
                else:
                    assert os.getxattr(path, "user.openai.id").decode() == entry.id, path
                    seen = self.inodes.setdefault(entry.id, info.st_ino)
                    assert info.st_ino == seen, f"{path}: the inode of {entry.id} changed"
                if entry.readable:
                    assert read_all(path) == entry.content, path
                else:
                    assert stat.S_IMODE(info.st_mode) == 0o200, path
                    expect_errno(errno.EACCES, read_all, path)
        for label, reader in self.readers.items():
            self.check_reader(label, reader)
        self.check_server()

    def check_server(self):
        live = {f["id"]: (f["purpose"], f["filename"], f["bytes"])
                for f in self.emulator.control.state()["files"] if not f["deleted"]}
        model = {f.id: (f.purpose, f.filename, len(f.content)) for f in self.files.values()}
        assert live == model, "files on the server"
        for file_id in set(self.files) - self.verified:
            assert self.emulator.control.stored_content(file_id) == \
                self.files[file_id].content, f"server bytes of {file_id}"
            self.verified.add(file_id)

    # --------------------------------------------------------------- teardown

    def teardown(self):
        for handle in [*self.writers.values(), *self.readers.values()]:
            try:
                os.close(handle.fd)
            except OSError:
                pass        # the example failed already; unmounting is what matters now
        failures = []
        if self.mounted.process.poll() is not None:
            # the Mounter's cleanup says nothing of a mount that is gone already
            failures.append(f"the mount exited with {self.mounted.process.returncode} during "
                            f"the example; its log ends with:\n{self.mounted.log()[-6000:]}")
        failures += self._cleanup()
        if failures:
            raise AssertionError("\n\n".join(failures))

    def _cleanup(self) -> list[str]:
        try:
            return self.mounter.cleanup()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


# generous: shrinking a failure can take Hypothesis several minutes
@pytest.mark.timeout(900 + EXAMPLES * STEPS * 3)
def test_mount_follows_the_model(mount, emulator, capsys, record_property):
    # ``mount`` is the fixture's Mounter; the machine makes one of its own per example (fixtures
    # run once per test, not per Hypothesis example), with its own temporary directory.
    MountModel.emulator = emulator
    MountModel.mounter_class = type(mount)
    STEP_COUNTS.clear()
    CASES.clear()
    try:
        run_state_machine_as_test(MountModel, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
            derandomize=not RANDOM,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                   HealthCheck.data_too_large]))
    finally:
        # shown even when output is captured: how much the run covered
        record_property("model_steps", sum(STEP_COUNTS.values()))
        with capsys.disabled():
            print(f"\nmodel test: {sum(STEP_COUNTS.values())} steps ({EXAMPLES} examples of up "
                  f"to {STEPS}): {dict(sorted(STEP_COUNTS.items()))}\n"
                  f"cases: {dict(sorted(CASES.items()))}")
