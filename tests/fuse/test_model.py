"""A reference-model test: random sequences of real syscalls on a real mount, checked against a
model of what docs/SEMANTICS.md promises, after every step.

The machine (a Hypothesis ``RuleBasedStateMachine``, like mountpoint-s3's reftests) mounts the
emulator afresh for every example and applies rules drawn at random:

* ``create``: open(O_CREAT|O_EXCL), write, close a new file in a writable purpose; refused with
  EEXIST when the name is shown, EINVAL when the purpose takes ``.jsonl`` names only.
* ``overwrite``: open(O_TRUNC) an existing file, write, close: a new file, then the old deleted.
* ``append``: open(O_APPEND), write, close: a change in place (nothing at all if nothing is
  written).
* ``read_part``: pread a slice of a file, through its name or ``.by-id``.
* ``unlink``, ``rename`` (to a name of the small alphabet, in any writable purpose; EXDEV when
  the target purpose refuses the name) and ``rename_over`` (onto another file's shown name,
  which replaces it; that name may carry an id).
* ``upload_elsewhere``, ``upload_same_name_elsewhere``, ``delete_elsewhere``: another client
  changes the server directly (the last two always collide with, or remove, a known file).

The model keys files by id (``id -> purpose, filename, bytes``). A file the mount uploads gets
its id from ``user.openai.id`` after close, found by the inode that the descriptor had (the
inode stays with the name's file through the upload even when the collision rule changes the
name it is shown under). Names come from a small alphabet so that collisions are common; the
expected directory listing follows the rule of docs/SEMANTICS.md "Names" (``stem (id).ext``
for every file of a name that several share).

After every step ``check`` compares, for every writable purpose: the listing, each file's
``st_size``, ``user.openai.id`` and bytes; ``ls .by-id``; and the server's files (ids, purposes,
filenames, sizes, bytes), so a replaced or moved file that was not deleted shows up too.

The mount runs with ``--dir-ttl 0``: another client's changes must show at the next step, and
the model has no clock to say when a cached listing would expire. (The mount's own changes
show at once whatever the TTL; a TTL of 0 also means every lookup lists again, which is what
lets the model ignore the kernel's and the mount's caches.)

Run longer with ``OPENAI_FS_MODEL_EXAMPLES=100 OPENAI_FS_MODEL_STEPS=40``; add ``-s`` to see
how many steps of each rule ran, and ``--hypothesis-seed=N`` to pick a seed.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
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

from openai_fs import names
from fusetools import delete_on_server, upload_on_server

WRITABLE = ("assistants", "batch", "evals", "fine-tune", "user_data", "vision")
JSONL_ONLY = ("batch", "fine-tune")
#: server filenames: few stems so that names collide; ``.jsonl`` (any case) fits every purpose,
#: the others are refused by batch and fine-tune; ``/`` and a literal ``／`` exercise the name
#: rule. None has ``(`` so the model's id-bearing names cannot clash with a real name, and
#: none looks like a temporary file of rsync or GIO (uploaded only at its rename).
FILENAMES = ("a.jsonl", "b.jsonl", "A.JSONL", "a.txt", "notes", "dir/c.jsonl", "x\uff0fy.txt")
EXAMPLES = int(os.environ.get("OPENAI_FS_MODEL_EXAMPLES", "20"))
STEPS = int(os.environ.get("OPENAI_FS_MODEL_STEPS", "20"))
MODE_PATTERN = r"refused, (batch|fine-tune) files must be JSON Lines"

#: steps run per rule in this process (printed at the end of the test)
STEP_COUNTS: Counter[str] = Counter()


def _sized(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


#: mostly a few bytes; sometimes sizes around page and FUSE request boundaries, up to 1 MiB
CONTENTS = st.one_of(
    st.binary(max_size=40),
    st.builds(_sized, st.integers(0, 2**16),
              st.sampled_from([4095, 4096, 4097, 131072, 131073, 1 << 20])),
)


def refuses(purpose: str, filename: str) -> bool:
    """The purpose rule of docs/SEMANTICS.md section 7."""
    return purpose in JSONL_ONLY and not filename.lower().endswith(".jsonl")


@dataclass
class ModelFile:
    id: str
    purpose: str
    filename: str
    content: bytes


def shown_names(files: list[ModelFile]) -> dict[str, str]:
    """name -> id of one purpose directory, by the rule of docs/SEMANTICS.md "Names": a name
    that several files share (or that does not fit 255 bytes) shows as ``stem (id).ext``."""
    wanted = {f.id: names.encode(f.filename) for f in files}
    claims = Counter(wanted.values())
    shown = {}
    for file_id, name in wanted.items():
        if claims[name] > 1 or not names.fits(name):
            name = names.with_id(name, file_id)
        assert name not in shown, f"the model made {name} twice"
        shown[name] = file_id
    return shown


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_all(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def expect_errno(code: int, call, *args) -> None:
    try:
        call(*args)
    except OSError as exc:
        assert exc.errno == code, f"{call.__name__}{args}: {exc!r}, expected {errno.errorcode[code]}"
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
        self.verified: set[str] = set()     # ids whose server bytes were compared already
        self.emulator.control.reset()
        self.tmp = Path(tempfile.mkdtemp(prefix="openai-fs-model-"))
        self.mounter = self.mounter_class(self.tmp, self.emulator)
        try:
            self.mounted = self.mounter("--dir-ttl", "0")
        except BaseException:
            self._cleanup()
            raise
        self.root = self.mounted.path

    # ------------------------------------------------------------------ model

    def in_purpose(self, purpose: str) -> list[ModelFile]:
        return [f for f in self.files.values() if f.purpose == purpose]

    def expected(self, purpose: str) -> dict[str, str]:
        return shown_names(self.in_purpose(purpose))

    def name_of(self, file_id: str) -> str:
        file = self.files[file_id]
        return next(name for name, fid in self.expected(file.purpose).items() if fid == file_id)

    def path_of(self, file_id: str) -> Path:
        return self.root / self.files[file_id].purpose / self.name_of(file_id)

    def add(self, file_id: str, purpose: str, filename: str, content: bytes) -> None:
        assert file_id not in self.files, f"{file_id} is known already"
        self.files[file_id] = ModelFile(file_id, purpose, filename, content)

    def pick(self, data) -> str:
        return data.draw(st.sampled_from(sorted(self.files)), label="file")

    def id_of_inode(self, purpose: str, inode: int) -> str:
        """The id of the file shown with this inode in a purpose directory."""
        directory = self.root / purpose
        found = [name for name in os.listdir(directory)
                 if os.stat(directory / name).st_ino == inode]
        assert len(found) == 1, f"inode {inode} in {purpose}: {found}"
        file_id = os.getxattr(directory / found[0], "user.openai.id").decode()
        note(f"-> {purpose}/{found[0]} is {file_id}")
        return file_id

    def step(self, name: str) -> None:
        STEP_COUNTS[name] += 1

    # ------------------------------------------------------------------ rules

    @rule(purpose=st.sampled_from(WRITABLE), filename=st.sampled_from(FILENAMES),
          content=CONTENTS)
    def create(self, purpose, filename, content):
        self.step("create")
        path = self.root / purpose / names.encode(filename)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        if path.name in self.expected(purpose):
            event("create: EEXIST")
            expect_errno(errno.EEXIST, os.open, path, flags, 0o644)
            return
        if refuses(purpose, filename):
            event("create: EINVAL (purpose rule)")
            self.mounted.expect_log(MODE_PATTERN)
            expect_errno(errno.EINVAL, os.open, path, flags, 0o644)
            return
        fd = os.open(path, flags, 0o644)
        try:
            inode = os.fstat(fd).st_ino
            write_all(fd, content)
        finally:
            os.close(fd)
        if any(f.filename == filename for f in self.in_purpose(purpose)):
            event("create: name shared with a server file")
        self.add(self.id_of_inode(purpose, inode), purpose, filename, content)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), content=CONTENTS)
    def overwrite(self, data, content):
        self.step("overwrite")
        old = self.files[self.pick(data)]
        path = self.path_of(old.id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            inode = os.fstat(fd).st_ino
            write_all(fd, content)
        finally:
            os.close(fd)
        del self.files[old.id]
        self.add(self.id_of_inode(old.purpose, inode), old.purpose, old.filename, content)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), extra=st.binary(max_size=20))
    def append(self, data, extra):
        self.step("append")
        old = self.files[self.pick(data)]
        path = self.path_of(old.id)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            inode = os.fstat(fd).st_ino
            write_all(fd, extra)
        finally:
            os.close(fd)
        if not extra:
            event("append: nothing written")
            return          # closed without a change: nothing is uploaded
        del self.files[old.id]
        self.add(self.id_of_inode(old.purpose, inode), old.purpose, old.filename,
                 old.content + extra)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), by_id=st.booleans(), offset=st.integers(0, 1 << 20),
          size=st.integers(0, 1 << 18))
    def read_part(self, data, by_id, offset, size):
        self.step("read_part")
        file = self.files[self.pick(data)]
        path = self.root / ".by-id" / file.id if by_id else self.path_of(file.id)
        fd = os.open(path, os.O_RDONLY)
        try:
            got = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        assert got == file.content[offset:offset + size], f"pread({path}, {size}, {offset})"

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def unlink(self, data):
        self.step("unlink")
        file_id = self.pick(data)
        os.unlink(self.path_of(file_id))
        del self.files[file_id]

    @precondition(lambda self: self.files)
    @rule(data=st.data(), purpose=st.sampled_from(WRITABLE), filename=st.sampled_from(FILENAMES))
    def rename(self, data, purpose, filename):
        self.step("rename")
        self._rename(self.pick(data), purpose, names.encode(filename))

    @precondition(lambda self: len(self.files) >= 2)
    @rule(data=st.data())
    def rename_over(self, data):
        """Rename onto the name another file is shown under (perhaps ``stem (id).ext``)."""
        self.step("rename_over")
        source = self.pick(data)
        target = self.files[data.draw(st.sampled_from(sorted(set(self.files) - {source})),
                                      label="replaced")]
        self._rename(source, target.purpose, self.name_of(target.id))

    def _rename(self, file_id: str, purpose: str, name: str) -> None:
        file = self.files[file_id]
        source = self.path_of(file_id)
        target = self.root / purpose / name
        filename = names.decode(name)
        if source == target:
            event("rename: onto itself")
            os.rename(source, target)
            return
        if refuses(purpose, filename):
            event("rename: EXDEV (purpose rule)")
            expect_errno(errno.EXDEV, os.rename, source, target)
            return
        replaced = self.expected(purpose).get(name)
        event("rename: replaces a file" if replaced else "rename: to a free name")
        event("rename: across purposes" if purpose != file.purpose else "rename: same purpose")
        inode = os.stat(source).st_ino
        os.rename(source, target)
        if replaced:
            del self.files[replaced]
        del self.files[file_id]
        self.add(self.id_of_inode(purpose, inode), purpose, filename, file.content)

    @rule(purpose=st.sampled_from(WRITABLE), filename=st.sampled_from(FILENAMES),
          content=CONTENTS)
    def upload_elsewhere(self, purpose, filename, content):
        self.step("upload_elsewhere")
        if refuses(purpose, filename):
            purpose = "assistants"      # the server would refuse it: put it where it fits
        made = upload_on_server(self.emulator, filename, purpose, content)
        self.add(made["id"], purpose, filename, content)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), content=CONTENTS)
    def upload_same_name_elsewhere(self, data, content):
        self.step("upload_same_name_elsewhere")
        file = self.files[self.pick(data)]
        made = upload_on_server(self.emulator, file.filename, file.purpose, content)
        self.add(made["id"], file.purpose, file.filename, content)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def delete_elsewhere(self, data):
        self.step("delete_elsewhere")
        file_id = self.pick(data)
        delete_on_server(self.emulator, file_id)
        del self.files[file_id]

    # ------------------------------------------------------------- invariant

    @invariant()
    def check(self):
        for purpose in WRITABLE:
            directory = self.root / purpose
            expected = self.expected(purpose)
            assert sorted(os.listdir(directory)) == sorted(expected), f"ls {purpose}"
            for name, file_id in expected.items():
                path = directory / name
                content = self.files[file_id].content
                assert os.getxattr(path, "user.openai.id").decode() == file_id, path
                assert os.stat(path).st_size == len(content), path
                assert read_all(path) == content, path
        # after the purpose listings: ``ls .by-id`` on its own keeps showing files that another
        # client deleted (test_model_regressions.py::test_by_id_drops_a_file_deleted_elsewhere)
        assert sorted(os.listdir(self.root / ".by-id")) == sorted(self.files), "ls .by-id"
        self.check_server()

    def check_server(self):
        live = {f["id"]: (f["purpose"], f["filename"], f["bytes"])
                for f in self.emulator.control.state()["files"] if not f["deleted"]}
        assert live == {f.id: (f.purpose, f.filename, len(f.content))
                        for f in self.files.values()}, "files on the server"
        for file_id in set(self.files) - self.verified:
            response = httpx.get(f"{self.emulator.base_url}/files/{file_id}/content",
                                 headers={"Authorization": "Bearer checker"}, timeout=60)
            response.raise_for_status()
            assert response.content == self.files[file_id].content, f"server bytes of {file_id}"
            self.verified.add(file_id)

    # --------------------------------------------------------------- teardown

    def teardown(self):
        failures = self._cleanup()
        if failures:
            raise AssertionError("\n\n".join(failures))

    def _cleanup(self) -> list[str]:
        try:
            return self.mounter.cleanup()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.mark.timeout(max(300, EXAMPLES * STEPS * 3))
def test_mount_follows_the_model(mount, emulator):
    # ``mount`` is the fixture's Mounter; the machine makes one of its own per example (fixtures
    # run once per test, not per Hypothesis example), with its own temporary directory.
    MountModel.emulator = emulator
    MountModel.mounter_class = type(mount)
    STEP_COUNTS.clear()
    try:
        run_state_machine_as_test(MountModel, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                   HealthCheck.data_too_large]))
    finally:
        print(f"\nmodel test: {sum(STEP_COUNTS.values())} steps "
              f"({EXAMPLES} examples of up to {STEPS}): {dict(sorted(STEP_COUNTS.items()))}")
