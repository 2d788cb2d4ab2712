"""The pyfuse3 adapter (openai_fs/fuse/operations.py), called directly without a mount: errno mapping and
logging, xattrs, modes, readdir offsets, and the write path end to end."""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass

import pyfuse3
import pytest
import trio
import trio.testing

from openai_fs.core.names import SLASH
from openai_fs.core.namespace import BY_ID_INODE, ROOT_INODE

from .conftest import OWNER


@dataclass
class Ctx:
    """Duck type of pyfuse3.RequestContext (read-only in pyfuse3)."""

    uid: int = OWNER.uid
    gid: int = OWNER.gid
    pid: int = 4242
    umask: int = 0o022


@dataclass
class SetattrFields:
    """Duck type of pyfuse3.SetattrFields."""

    update_atime: bool = False
    update_mtime: bool = False
    update_ctime: bool = False
    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_size: bool = False


class Token:
    """What readdir hands to ``readdir_reply``: takes ``room`` entries, then says full."""

    def __init__(self, room: int = 1000) -> None:
        self.room = room
        self.entries: list[tuple[str, int, int]] = []     # (name, st_ino, next_id)


@pytest.fixture
def replies(monkeypatch):
    def readdir_reply(token: Token, name: bytes, attr, next_id: int) -> bool:
        if len(token.entries) >= token.room:
            return False
        token.entries.append((os.fsdecode(name), attr.st_ino, next_id))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)


async def readdir(ops, fh: int, start: int = 0, room: int = 1000) -> list[tuple[str, int, int]]:
    token = Token(room)
    await ops.readdir(fh, start, token)
    return token.entries


async def fuse_errno(call) -> int:
    with pytest.raises(pyfuse3.FUSEError) as caught:
        await call
    return caught.value.errno


@pytest.mark.parametrize(("status", "code"), [
    (400, errno.EINVAL), (401, errno.EACCES), (403, errno.EACCES), (404, errno.ENOENT),
    (413, errno.EFBIG), (429, errno.EAGAIN), (500, errno.EIO), (503, errno.EIO),
])
async def test_api_errors_become_their_errno_with_one_log_line(fake, make_core, caplog,
                                                               autojump_clock, status, code):
    caplog.set_level(logging.DEBUG, logger="openai_fs")
    core = await make_core(max_retries=1)
    fake.fail("list", status, message="the server said no", times=None)
    got = await fuse_errno(core.ops.lookup(core.dir("assistants").inode, b"x.txt", Ctx()))
    assert got == code
    last = fake.of("list")[-1]
    assert len(fake.of("list")) == (2 if status in (429, 500, 503) else 1)
    lines = [r.getMessage() for r in caplog.records
             if r.name == "openai_fs.fuse.operations" and last.request_id in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert str(status) in lines[0] and "the server said no" in lines[0]


async def test_a_dropped_connection_is_eio(fake, core, caplog):
    caplog.set_level(logging.DEBUG, logger="openai_fs")
    fake.fail("list", None, times=None)
    assert await fuse_errno(core.ops.lookup(core.dir("assistants").inode, b"x", Ctx())) \
        == errno.EIO
    assert "lookup" in caplog.text and "connection refused" in caplog.text


async def test_an_unexpected_exception_is_eio_with_a_traceback_and_goes_no_further(
        fake, core, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG, logger="openai_fs")

    async def broken(*args):
        raise ValueError("a bug in the core")

    monkeypatch.setattr(core.namespace, "lookup", broken)
    with pytest.raises(pyfuse3.FUSEError) as caught:
        await core.ops.lookup(ROOT_INODE, b"assistants", Ctx())
    assert caught.value.errno == errno.EIO
    assert not isinstance(caught.value, ValueError)
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.exc_info[0] is ValueError and record.levelno == logging.ERROR
    assert "Traceback" in caplog.text and "a bug in the core" in caplog.text


@pytest.mark.parametrize("name, expected", [
    # namespaces the filesystem does not have: "not supported" (GNU ls then stops asking)
    (b"security.selinux", errno.ENOTSUP), (b"system.posix_acl_access", errno.ENOTSUP),
    (b"system.posix_acl_default", errno.ENOTSUP), (b"trusted.x", errno.ENOTSUP),
    # a user attribute that is not one of ours: "not set"
    (b"user.other", pyfuse3.ENOATTR), (b"user.openai.nope", pyfuse3.ENOATTR)])
async def test_kernel_xattr_probes_are_answered_without_requests(fake, core, name, expected):
    fake.add("a.txt", b"a")
    entry = await core.namespace.lookup(core.dir("assistants").inode, "a.txt")
    fake.calls.clear()
    for inode in (entry.inode, core.dir("assistants").inode, ROOT_INODE):
        assert await fuse_errno(core.ops.getxattr(inode, name, Ctx())) == expected
    assert fake.calls == []


async def test_user_openai_xattrs_show_the_server_file(fake, core):
    made = fake.add("a/b.txt", b"abc", purpose="vision", created_at=1_700_000_123,
                    expires_at=1_800_000_000, status="processed")
    plain = fake.add("plain.txt", b"p", purpose="vision")
    vision = core.dir("vision").inode
    attr = await core.ops.lookup(vision, f"a{SLASH}b.txt".encode(), Ctx())
    fake.calls.clear()

    async def xattr(inode: int, key: str) -> bytes:
        return await core.ops.getxattr(inode, f"user.openai.{key}".encode(), Ctx())

    assert await xattr(attr.st_ino, "id") == made["id"].encode()
    assert await xattr(attr.st_ino, "purpose") == b"vision"
    assert await xattr(attr.st_ino, "filename") == b"a/b.txt"
    assert await xattr(attr.st_ino, "created_at") == b"1700000123"
    assert await xattr(attr.st_ino, "expires_at") == b"1800000000"
    assert await xattr(attr.st_ino, "status") == b"processed"
    assert sorted(await core.ops.listxattr(attr.st_ino, Ctx())) == sorted(
        b"user.openai." + key for key in
        [b"id", b"purpose", b"filename", b"created_at", b"expires_at", b"status",
         b"downloadable"])
    other = await core.ops.lookup(vision, b"plain.txt", Ctx())
    assert await xattr(other.st_ino, "id") == plain["id"].encode()
    assert await fuse_errno(core.ops.getxattr(other.st_ino, b"user.openai.expires_at",
                                              Ctx())) == pyfuse3.ENOATTR
    assert await xattr(vision, "purpose") == b"vision"
    assert fake.calls == []
    assert await fuse_errno(core.ops.setxattr(attr.st_ino, b"user.openai.id", b"x",
                                              Ctx())) == errno.ENOTSUP


async def test_attributes_of_files_and_directories(fake, core):
    made = fake.add("w.txt", b"12345", created_at=1_700_000_500)
    fake.add("r.jsonl", b"{}", purpose="batch_output")
    w = await core.ops.lookup(core.dir("assistants").inode, b"w.txt", Ctx())
    r = await core.ops.lookup(core.dir("batch_output").inode, b"r.jsonl", Ctx())
    assert stat.S_ISREG(w.st_mode) and stat.S_IMODE(w.st_mode) == 0o644
    assert stat.S_ISREG(r.st_mode) and stat.S_IMODE(r.st_mode) == 0o444
    assert (w.st_size, w.st_uid, w.st_gid) == (5, OWNER.uid, OWNER.gid)
    assert w.st_mtime_ns == w.st_ctime_ns == made["created_at"] * 10**9
    writable = await core.ops.getattr(core.dir("assistants").inode, Ctx())
    output = await core.ops.getattr(core.dir("batch_output").inode, Ctx())
    assert stat.S_ISDIR(writable.st_mode) and stat.S_IMODE(writable.st_mode) == 0o755
    assert stat.S_ISDIR(output.st_mode) and stat.S_IMODE(output.st_mode) == 0o555
    by_id = await core.ops.lookup(BY_ID_INODE, made["id"].encode(), Ctx())
    assert by_id.st_ino == w.st_ino


async def test_a_read_only_mount_shows_read_only_modes(fake, make_core):
    fake.add("w.txt", b"1")
    core = await make_core(read_only=True)
    w = await core.ops.lookup(core.dir("assistants").inode, b"w.txt", Ctx())
    assert stat.S_IMODE(w.st_mode) == 0o444
    assert stat.S_IMODE((await core.ops.getattr(core.dir("assistants").inode)).st_mode) == 0o555
    assert await fuse_errno(core.ops.create(core.dir("assistants").inode, b"n.txt", 0o644,
                                            os.O_WRONLY | os.O_CREAT, Ctx())) in (
        errno.EROFS, errno.EACCES, errno.EPERM)
    assert await fuse_errno(core.ops.unlink(core.dir("assistants").inode, b"w.txt",
                                            Ctx())) in (errno.EROFS, errno.EACCES, errno.EPERM)
    assert fake.count("create_file", "delete") == 0


async def test_readdir_resumes_at_an_offset_after_an_entry_was_removed(fake, core, replies):
    for n in range(6):
        fake.add(f"f{n}.txt", b"x")
    assistants = core.dir("assistants").inode
    fh = await core.ops.opendir(assistants, Ctx())
    first = await readdir(core.ops, fh, 0, room=2)
    assert len(first) == 2
    everything = [name for name, _, _ in first] + [
        name for name, _, _ in await readdir(core.ops, fh, first[-1][2])]
    assert sorted(everything) == [f"f{n}.txt" for n in range(6)]

    # the first entry goes away between two readdir calls; the kernel resumes at the offset
    # it was given, also from a new handle (after rewinddir or a second opendir)
    await core.ops.unlink(assistants, first[0][0].encode(), Ctx())
    rest = await readdir(core.ops, fh, first[-1][2])
    assert [name for name, _, _ in rest] == everything[2:]
    await core.ops.releasedir(fh)
    fh = await core.ops.opendir(assistants, Ctx())
    rest = await readdir(core.ops, fh, first[-1][2])
    assert [name for name, _, _ in rest] == everything[2:]
    # an entry not reached yet that goes away is simply not listed; none is skipped
    await core.ops.unlink(assistants, everything[3].encode(), Ctx())
    fh = await core.ops.opendir(assistants, Ctx())
    rest = await readdir(core.ops, fh, first[-1][2])
    assert [name for name, _, _ in rest] == everything[2:3] + everything[4:]
    assert all(next_id == ino for _, ino, next_id in rest)


async def test_readdir_of_the_root_lists_by_id_and_the_purposes(fake, core, replies):
    fh = await core.ops.opendir(ROOT_INODE, Ctx())
    names = [name for name, _, _ in await readdir(core.ops, fh)]
    assert names[0] == ".by-id"
    assert {"assistants", "batch", "fine-tune", "vision", "user_data", "evals",
            "assistants_output", "batch_output", "fine-tune-results"} <= set(names)


async def test_create_write_close_uploads_and_reads_back_without_a_download(fake, core):
    assistants = core.dir("assistants").inode
    info, attr = await core.ops.create(assistants, b"new.txt", 0o644,
                                       os.O_WRONLY | os.O_CREAT, Ctx())
    assert await core.ops.write(info.fh, 0, b"hello ") == 6
    assert await core.ops.write(info.fh, 6, b"world") == 5
    assert fake.calls == []
    await core.ops.flush(info.fh)
    assert fake.kinds() == ["create_file"]
    await core.ops.release(info.fh)
    [made] = fake.by_name("new.txt")
    assert fake.blobs[made["id"]] == b"hello world"

    attr = await core.ops.lookup(assistants, b"new.txt", Ctx())
    assert attr.st_size == 11
    info = await core.ops.open(attr.st_ino, os.O_RDONLY, Ctx())
    assert await core.ops.read(info.fh, 0, 4096) == b"hello world"
    await core.ops.release(info.fh)
    assert fake.count("content") == 0


async def test_a_non_jsonl_batch_file_is_refused_at_create_without_requests(fake, core):
    code = await fuse_errno(core.ops.create(core.dir("batch").inode, b"input.csv", 0o644,
                                            os.O_WRONLY | os.O_CREAT, Ctx()))
    assert code == errno.EINVAL
    assert fake.calls == [] and "input.csv" not in core.dir("batch").by_name


async def test_chmod_chown_and_utimens_succeed_and_change_nothing(fake, core):
    fake.add("a.txt", b"abc")
    attr = await core.ops.lookup(core.dir("assistants").inode, b"a.txt", Ctx())
    fields = SetattrFields(update_mode=True, update_uid=True, update_gid=True,
                           update_atime=True, update_mtime=True)
    wanted = pyfuse3.EntryAttributes()
    wanted.st_mode, wanted.st_uid, wanted.st_mtime_ns = stat.S_IFREG | 0o600, 0, 5
    after = await core.ops.setattr(attr.st_ino, wanted, fields, None, Ctx())
    assert (after.st_mode, after.st_uid, after.st_mtime_ns, after.st_size) == (
        attr.st_mode, attr.st_uid, attr.st_mtime_ns, 3)
    assert fake.count("create_file", "delete", "create_upload") == 0


async def test_directories_links_and_special_files_are_refused(fake, core):
    assistants = core.dir("assistants").inode
    assert await fuse_errno(core.ops.mkdir(ROOT_INODE, b"new", 0o755, Ctx())) == errno.EPERM
    assert await fuse_errno(core.ops.symlink(assistants, b"l", b"/etc", Ctx())) == errno.EPERM
    assert await fuse_errno(core.ops.rmdir(ROOT_INODE, b"assistants", Ctx())) == errno.EPERM
    assert await fuse_errno(core.ops.create(core.dir("batch_output").inode, b"x.jsonl", 0o644,
                                            os.O_WRONLY | os.O_CREAT, Ctx())) == errno.EACCES
    assert fake.count("create_file", "delete") == 0


async def test_an_open_file_can_still_be_read_after_rm(fake, core):
    data = os.urandom(300_000)
    made = fake.add("open.bin", data)
    assistants = core.dir("assistants").inode
    attr = await core.ops.lookup(assistants, b"open.bin", Ctx())
    info = await core.ops.open(attr.st_ino, os.O_RDONLY, Ctx())
    await core.ops.unlink(assistants, b"open.bin", Ctx())
    assert made["id"] not in fake.files and fake.count("delete") == 1
    assert await fuse_errno(core.ops.lookup(assistants, b"open.bin", Ctx())) == errno.ENOENT
    assert await core.ops.read(info.fh, 1000, 5000) == data[1000:6000]
    await core.ops.release(info.fh)
    assert not core.disk.path(made["id"]).exists() and core.disk.used == 0


async def test_an_o_trunc_open_waiting_for_an_upload_gets_a_spool_when_the_writer_lets_go(
        fake, core, nursery):
    # cp onto a file whose first writer is still uploading it at close: the open waits for
    # the upload to stop reading the spool; the first writer then lets the spool go (closes
    # it) before the open resumes. The open must start a new spool, not truncate the closed
    # one (it answered EBADF; found by tests/fuse/test_stress.py under load).
    assistants = core.dir("assistants").inode
    info, attr = await core.ops.create(assistants, b"shared.bin", 0o644,
                                       os.O_WRONLY | os.O_CREAT, Ctx())
    await core.ops.write(info.fh, 0, b"first")
    gate = fake.hold("create_file")
    opened = {}

    async def first_writer_closes():
        await core.ops.flush(info.fh)
        await core.ops.release(info.fh)

    async def second_writer_opens():
        opened["info"] = await core.ops.open(attr.st_ino, os.O_WRONLY | os.O_TRUNC, Ctx())

    nursery.start_soon(first_writer_closes)
    await trio.testing.wait_all_tasks_blocked()         # its upload waits at the server
    nursery.start_soon(second_writer_opens)
    await trio.testing.wait_all_tasks_blocked()         # waits for the spool's lock
    gate.set()
    await trio.testing.wait_all_tasks_blocked()
    fh = opened["info"].fh
    assert await core.ops.write(fh, 0, b"second") == 6
    await core.ops.flush(fh)
    await core.ops.release(fh)
    assert [(f["filename"], fake.blobs[f["id"]]) for f in fake.files.values()] == [
        ("shared.bin", b"second")]
