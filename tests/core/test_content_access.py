"""Files whose content the server refuses to hand out (openai_fs/core/content_access.py and its
users), driven through the FUSE adapter without a kernel, against the fake API refusing
``assistants`` content as the real service does."""

from __future__ import annotations

import errno
import logging
import os
import stat

import pyfuse3
import pytest

from openai_fs.core.errors import FSError

from .conftest import OWNER
from .helpers import flush, new_file
from .test_adapter import Ctx, fuse_errno

REFUSED = "Not allowed to download files of purpose: assistants"


@pytest.fixture
def refusing(fake):
    fake.refused_purposes = {"assistants", "assistants_output"}
    return fake


async def lookup(core, purpose: str, name: str):
    return await core.ops.lookup(core.dir(purpose).inode, name.encode(), Ctx())


async def test_the_first_refusal_is_learned_and_later_reads_ask_nothing(refusing, core, caplog):
    caplog.set_level(logging.DEBUG, logger="openai_fs")
    refusing.add("a.txt", b"aaa")
    refusing.add("b.txt", b"bbb")
    vision = refusing.add("v.txt", b"vvv", purpose="vision")
    a = await lookup(core, "assistants", "a.txt")
    b = await lookup(core, "assistants", "b.txt")
    assert stat.S_IMODE(a.st_mode) == 0o644            # nothing is known yet
    assert await core.ops.getxattr(a.st_ino, b"user.openai.downloadable", Ctx()) == b"unknown"

    info = await core.ops.open(a.st_ino, os.O_RDONLY, Ctx())   # not known yet: opens
    assert await fuse_errno(core.ops.read(info.fh, 0, 100)) == errno.EACCES
    await core.ops.release(info.fh)
    assert refusing.count("content") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and REFUSED in warnings[0], warnings

    # from now on: no request, EACCES at open, no read bits, and the kernel was told
    assert await fuse_errno(core.ops.open(b.st_ino, os.O_RDONLY, Ctx())) == errno.EACCES
    assert refusing.count("content") == 1
    assert stat.S_IMODE((await core.ops.getattr(b.st_ino, Ctx())).st_mode) == 0o200
    assert {a.st_ino, b.st_ino} <= set(core.kernel.attributes)
    assert await core.ops.getxattr(b.st_ino, b"user.openai.downloadable", Ctx()) == b"no"
    assert await core.ops.getxattr(core.dir("assistants").inode, b"user.openai.downloadable",
                                   Ctx()) == b"no"
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1

    # another purpose is not affected, and one that serves says so
    v = await lookup(core, "vision", "v.txt")
    info = await core.ops.open(v.st_ino, os.O_RDONLY, Ctx())
    assert await core.ops.read(info.fh, 0, 100) == b"vvv"
    await core.ops.release(info.fh)
    assert stat.S_IMODE(v.st_mode) == 0o644 and vision["id"]
    assert await core.ops.getxattr(v.st_ino, b"user.openai.downloadable", Ctx()) == b"yes"


async def test_read_only_purposes_show_no_bits_at_all(refusing, make_core):
    refusing.add("out.jsonl", b"{}", purpose="assistants_output")
    core = await make_core()
    core.cache.access.refused("assistants_output", REFUSED)
    attr = await lookup(core, "assistants_output", "out.jsonl")
    assert stat.S_IMODE(attr.st_mode) == 0o000


async def test_told_up_front_nothing_is_ever_asked(refusing, make_core, monkeypatch):
    refusing.add("a.txt", b"aaa")
    core = await make_core()
    core.cache.access.refused("assistants", "told by --not-downloadable")
    a = await lookup(core, "assistants", "a.txt")
    assert stat.S_IMODE(a.st_mode) == 0o200
    assert await fuse_errno(core.ops.open(a.st_ino, os.O_RDONLY, Ctx())) == errno.EACCES
    assert refusing.count("content") == 0


async def test_what_needs_the_old_bytes_fails_before_anything_is_sent(refusing, core):
    old = refusing.add("a.txt", b"old bytes")
    core.cache.access.refused("assistants", REFUSED)
    a = await lookup(core, "assistants", "a.txt")
    refusing.calls.clear()
    for flags in (os.O_WRONLY | os.O_APPEND, os.O_RDWR):
        assert await fuse_errno(core.ops.open(a.st_ino, flags, Ctx())) == errno.EACCES
    fields = type("F", (), {name: False for name in (
        "update_atime", "update_mtime", "update_ctime", "update_mode", "update_uid",
        "update_gid")} | {"update_size": True})()
    wanted = pyfuse3.EntryAttributes()
    wanted.st_size = 3
    assert await fuse_errno(core.ops.setattr(a.st_ino, wanted, fields, None, Ctx())) \
        == errno.EACCES
    # a plain O_WRONLY open needs no bytes yet (GIO opens the file it replaces so): what it
    # then does to the old bytes fails, and its close sends nothing
    info = await core.ops.open(a.st_ino, os.O_WRONLY, Ctx())
    assert await fuse_errno(core.ops.write(info.fh, 0, b"x")) == errno.EACCES
    assert await fuse_errno(core.ops.setattr(a.st_ino, wanted, fields, info.fh, Ctx())) \
        == errno.EACCES
    await core.ops.flush(info.fh)
    await core.ops.release(info.fh)
    assert await fuse_errno(core.ops.rename(core.dir("assistants").inode, b"a.txt",
                                            core.dir("vision").inode, b"a.txt", 0, Ctx())) \
        == errno.EACCES
    assert refusing.calls == [] and set(refusing.files) == {old["id"]}

    # a full overwrite needs no old bytes: uploaded, then the old file goes
    info = await core.ops.open(a.st_ino, os.O_WRONLY | os.O_TRUNC, Ctx())
    await core.ops.write(info.fh, 0, b"new")
    await core.ops.flush(info.fh)
    await core.ops.release(info.fh)
    [new] = refusing.files.values()
    assert refusing.blobs[new["id"]] == b"new" and refusing.kinds() == ["create_file", "delete"]


async def test_a_file_written_here_stays_readable_from_the_local_copy(refusing, core):
    core.cache.access.refused("assistants", REFUSED)
    writer = await new_file(core, "assistants", "mine.txt", b"my own bytes")
    await flush(core, writer)
    await core.files.release(writer)
    attr = await lookup(core, "assistants", "mine.txt")
    assert stat.S_IMODE(attr.st_mode) == 0o644
    info = await core.ops.open(attr.st_ino, os.O_RDONLY, Ctx())
    assert await core.ops.read(info.fh, 0, 100) == b"my own bytes"
    await core.ops.release(info.fh)
    # and moving it needs no download either
    await core.ops.rename(core.dir("assistants").inode, b"mine.txt",
                          core.dir("assistants").inode, b"ours.txt", 0, Ctx())
    assert refusing.count("content") == 0
    assert [f["filename"] for f in refusing.files.values()] == ["ours.txt"]


async def test_rm_needs_no_content_even_for_a_file_open_for_reading(refusing, core):
    made = refusing.add("a.txt", b"aaa")
    a = await lookup(core, "assistants", "a.txt")
    info = await core.ops.open(a.st_ino, os.O_RDONLY, Ctx())    # before anything is known
    await core.ops.unlink(core.dir("assistants").inode, b"a.txt", Ctx())
    assert made["id"] not in refusing.files
    assert await fuse_errno(core.ops.read(info.fh, 0, 10)) == errno.EACCES
    await core.ops.release(info.fh)


async def test_a_refused_download_of_an_unknown_purpose_is_eacces_not_einval(refusing, core):
    refusing.add("a.txt", b"aaa")
    a = await core.namespace.lookup(core.dir("assistants").inode, "a.txt")
    with pytest.raises(FSError) as caught:
        await core.cache.read(a.file, 0, 3)
    assert caught.value.errno == errno.EACCES
    assert core.cache.access.as_dict() == {"assistants": "no"}
    assert (OWNER.uid, OWNER.gid) == (1234, 5678)
