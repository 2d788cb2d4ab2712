"""Uploads, replacements, deletes and moves (openai_fs/core/open_files.py and the modules it
drives: uploader.py, changes.py, spool.py, rules.py), against the fake API."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import random

import pytest
import trio
import trio.testing

from openai_fs.core import purposes, rules
from openai_fs.core.errors import FSError, RuleViolation, UploadFailed
from openai_fs.core.names import SLASH
from openai_fs.core.uploader import UploadSettings

from .helpers import flush, new_file, rewrite, write_and_commit

PARTS = UploadSettings(multipart_threshold=1000, part_size=300, concurrency=8)


def unsent_files(core) -> dict[str, bytes]:
    folder = core.spool.unsent_dir
    if not folder.exists():
        return {}
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def leave_dead_spool(cache_dir, name: str):
    """The spool folder of a mount that died while writing ``assistants/<name>``."""
    dead = cache_dir / "spool" / "mount-1-dead"
    dead.mkdir(parents=True)
    (cache_dir / "spool" / "mount-1-dead.lock").write_bytes(b"")   # its lock died with it
    (dead / "0123abcd").write_bytes(b"half-written bytes")
    (dead / "0123abcd.json").write_text(json.dumps({"purpose": "assistants", "name": name,
                                                    "created": 1}))
    return dead


async def listed(core, purpose: str, name: str):
    return await core.namespace.lookup(core.dir(purpose).inode, name)


async def test_a_small_file_is_one_post_files_with_its_name_and_purpose(fake, core):
    data = b"line\n" * 200
    writer = await new_file(core, "assistants", "notes.txt", data)
    entry, local = writer.entry, writer.local
    await flush(core, writer)

    assert fake.kinds() == ["create_file"]
    [call] = fake.of("create_file")
    assert call.fields["purpose"] == "assistants"
    assert call.file == ("notes.txt", data, "text/plain")
    [made] = fake.by_name("notes.txt")
    assert fake.blobs[made["id"]] == data
    assert entry.file.id == made["id"] and entry.size == len(data)
    assert core.dir("assistants").by_name["notes.txt"] is entry
    assert not local.dirty and local.failure is None
    await flush(core, writer)                       # a second flush sends nothing
    assert fake.kinds() == ["create_file"]


async def test_a_large_file_goes_through_the_uploads_api_with_ordered_parts_and_md5(
        fake, make_core, autojump_clock):
    core = await make_core(settings=PARTS)
    data = random.Random(5).randbytes(2000)            # 7 parts of at most 300 bytes
    fake.part_latency = lambda arrival: 10.0 - arrival     # the first to arrive ends last
    writer = await new_file(core, "assistants", "big.bin", data)
    entry = writer.entry
    await flush(core, writer)

    assert fake.count("create_file") == 0
    assert fake.kinds()[0] == "create_upload" and fake.kinds()[-1] == "complete_upload"
    assert fake.count("upload_part") == 7
    created = fake.of("create_upload")[0].fields
    assert (created["filename"], created["purpose"], created["bytes"]) == (
        "big.bin", "assistants", 2000)
    complete = fake.of("complete_upload")[0].fields
    assert complete["md5"] == hashlib.md5(data).hexdigest()
    by_part = {part_id: fake.parts[part_id] for part_id in complete["part_ids"]}
    assert [len(by_part[p]) for p in complete["part_ids"]] == [300] * 6 + [200]
    assert b"".join(by_part[p] for p in complete["part_ids"]) == data
    [made] = fake.by_name("big.bin")
    assert fake.blobs[made["id"]] == data and entry.file.id == made["id"]


async def test_a_failed_upload_is_cancelled_and_its_bytes_kept_in_unsent(fake, make_core):
    core = await make_core(settings=PARTS)
    data = random.Random(6).randbytes(2000)
    fake.fail("upload_part", 400, message="part refused", skip=2)
    writer = await new_file(core, "assistants", "big.bin", data)
    entry, local = writer.entry, writer.local
    with pytest.raises(UploadFailed) as caught:
        await flush(core, writer)

    assert caught.value.errno == errno.EINVAL
    assert "part refused" in caught.value.message
    [upload] = fake.uploads.values()
    assert upload["status"] == "cancelled"
    assert fake.count("cancel_upload") == 1 and fake.count("complete_upload") == 0
    assert fake.files == {}
    assert local.failure is caught.value
    assert list(unsent_files(core).values()) == [data]
    assert str(core.spool.unsent_dir) in caught.value.message
    assert entry.removed and "big.bin" not in core.dir("assistants").by_name
    assert [f["path"] for f in core.uploader.failures] == ["assistants/big.bin"]
    with pytest.raises(UploadFailed):                    # a later flush says so again
        await flush(core, writer)


async def test_a_failed_replacement_leaves_the_old_file_under_its_name(fake, core):
    old = fake.add("keep.txt", b"old")
    entry = await listed(core, "assistants", "keep.txt")
    writer = await rewrite(core, entry, b"brand new content")
    assert entry.size == len(b"brand new content")
    fake.fail("create_file", 413, message="too large")
    with pytest.raises(UploadFailed) as caught:
        await flush(core, writer)

    assert caught.value.errno == errno.EFBIG
    assert fake.count("delete") == 0 and set(fake.files) == {old["id"]}
    assert core.dir("assistants").by_name["keep.txt"] is entry
    assert entry.file.id == old["id"] and entry.size == 3 and entry.local is None
    assert list(unsent_files(core).values()) == [b"brand new content"]


@pytest.mark.parametrize("name", [
    "notes.txt", "data.json",
    pytest.param("日" * 80 + ".txt", id="long-multibyte-name"),     # 244 bytes: valid
])
async def test_unsent_bytes_survive_the_close_after_a_failed_upload(fake, core, name):
    writer = await new_file(core, "assistants", name, b"precious")
    fake.fail("create_file", 400)
    with pytest.raises(UploadFailed):
        await flush(core, writer)
    await core.files.release(writer)                # the release that follows the flush
    assert list(unsent_files(core).values()) == [b"precious"]


@pytest.mark.parametrize(("purpose", "name", "code"), [
    ("batch", "requests.txt", errno.EINVAL),
    ("fine-tune", "train.json", errno.EINVAL),
    ("batch_output", "x.jsonl", errno.EACCES),
])
async def test_files_that_break_a_purposes_rules_are_refused_before_any_request(
        fake, core, purpose, name, code):
    with pytest.raises(FSError) as caught:
        rules.check_new_file(core.dir(purpose), name)
    assert caught.value.errno == code
    rules.check_new_file(core.dir("batch"), "requests.jsonl")
    rules.check_new_file(core.dir("fine-tune"), "TRAIN.JSONL")
    assert fake.calls == []


async def test_writing_past_the_purposes_limit_is_efbig(fake, core, monkeypatch):
    monkeypatch.setattr(purposes, "max_file_bytes", lambda purpose: 1000)
    writer = await new_file(core, "assistants", "big.bin", b"x" * 1000)
    with pytest.raises(RuleViolation) as caught:
        await core.files.write(writer, 1000, b"y")
    assert caught.value.errno == errno.EFBIG
    with pytest.raises(RuleViolation):               # the file stays refused
        await core.files.write(writer, 0, b"z")
    with pytest.raises(RuleViolation):
        await flush(core, writer)
    spare = await new_file(core, "assistants", "other.bin")
    with pytest.raises(RuleViolation) as caught:
        await core.files.truncate(spare.entry, 1001, spare)
    assert caught.value.errno == errno.EFBIG
    assert fake.calls == []


async def test_a_replacement_is_uploaded_before_the_old_file_is_deleted(fake, core):
    old = fake.add("r.txt", b"old bytes")
    entry = await listed(core, "assistants", "r.txt")
    inode = entry.inode
    fake.calls.clear()
    writer = await rewrite(core, entry, b"new bytes!")
    await flush(core, writer)

    assert fake.kinds() == ["create_file", "delete"]
    assert fake.of("delete")[0].path == f"/v1/files/{old['id']}"
    [new] = fake.files.values()
    assert fake.blobs[new["id"]] == b"new bytes!" and new["filename"] == "r.txt"
    assert core.dir("assistants").by_name["r.txt"] is entry
    assert entry.file.id == new["id"] and entry.inode == inode


async def test_delete_removes_the_file_and_a_second_delete_is_enoent(fake, core):
    first = fake.add("a.txt", b"a")
    second = fake.add("b.txt", b"b")
    entry = await listed(core, "assistants", "a.txt")
    await core.files.unlink(entry)
    assert fake.of("delete")[0].path == f"/v1/files/{first['id']}"
    assert "a.txt" not in core.dir("assistants").by_name and first["id"] not in fake.files

    gone = await listed(core, "assistants", "b.txt")
    fake.remove(second["id"])                              # deleted elsewhere meanwhile
    with pytest.raises(FSError) as caught:
        await core.files.unlink(gone)
    assert caught.value.errno == errno.ENOENT
    assert "b.txt" not in core.dir("assistants").by_name


async def test_moving_an_uploaded_file_uploads_it_under_the_new_name_then_deletes(fake, core):
    data = b"moving content"
    old = fake.add("a.txt", data)
    entry = await listed(core, "assistants", "a.txt")
    inode = entry.inode
    fake.calls.clear()
    await core.files.rename(entry, core.dir("user_data"), "b.txt")

    kinds = [kind for kind in fake.kinds() if kind != "content"]
    assert kinds == ["create_file", "delete"]
    [post] = fake.of("create_file")
    assert post.fields["purpose"] == "user_data" and post.file[:2] == ("b.txt", data)
    assert fake.of("delete")[0].path == f"/v1/files/{old['id']}"
    [new] = fake.files.values()
    assert (new["filename"], new["purpose"], fake.blobs[new["id"]]) == ("b.txt", "user_data",
                                                                         data)
    assert core.dir("user_data").by_name["b.txt"] is entry and entry.inode == inode
    assert "a.txt" not in core.dir("assistants").by_name


async def test_moving_a_file_not_yet_uploaded_sends_nothing(fake, core):
    writer = await new_file(core, "assistants", "draft.txt", b"d")
    entry = writer.entry
    await core.files.rename(entry, core.dir("vision"), "final.txt")
    assert fake.calls == []
    assert core.dir("vision").by_name["final.txt"] is entry
    assert "draft.txt" not in core.dir("assistants").by_name
    await flush(core, writer)
    [post] = fake.of("create_file")
    assert post.fields["purpose"] == "vision" and post.file[0] == "final.txt"


@pytest.mark.parametrize("name", ["plain.txt", f"a{SLASH}b.txt", "it\u201bs.txt"])
async def test_a_new_file_keeps_the_name_it_was_created_under(fake, core, name):
    entry = await write_and_commit(core, "assistants", name, b"hello")
    assert core.dir("assistants").by_name.get(name) is entry, sorted(
        core.dir("assistants").by_name)
    assert await listed(core, "assistants", name) is entry


async def test_a_dead_mounts_spool_is_moved_to_unsent(fake, tmp_path, make_core):
    cache_dir = tmp_path / "cache"
    dead = leave_dead_spool(cache_dir, "notes.txt")
    live = cache_dir / "spool" / "mount-2-live"
    live.mkdir()
    lock_fd = os.open(cache_dir / "spool" / "mount-2-live.lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)     # a mount that is still running
    (live / "feedbeef").write_bytes(b"in progress")
    try:
        core = await make_core(cache_dir=cache_dir)
        assert unsent_files(core) == {
            "recovered-assistants-notes.txt": b"half-written bytes"}
        assert not (cache_dir / "spool" / "mount-1-dead.lock").exists()
        assert not dead.exists()
        assert (live / "feedbeef").read_bytes() == b"in progress"
        assert core.spool.folder.parent == cache_dir / "spool"
    finally:
        os.close(lock_fd)
    assert fake.calls == []


async def test_a_dead_mounts_spool_of_a_long_name_is_recovered(fake, tmp_path, make_core):
    cache_dir = tmp_path / "cache"
    dead = leave_dead_spool(cache_dir, "n" * 250 + ".txt")
    core = await make_core(cache_dir=cache_dir)
    assert list(unsent_files(core).values()) == [b"half-written bytes"]
    assert not dead.exists()


def close_with_upload_held(fake, core, writer, nursery):
    """Starts closing `writer` with its upload held at the server; returns the gate that lets
    the upload through and the event set once the close returned."""
    gate = fake.hold("create_file")
    closed = trio.Event()

    async def close():
        await flush(core, writer)
        closed.set()

    nursery.start_soon(close)
    return gate, closed


async def test_a_rename_during_the_upload_does_not_wait_and_the_server_ends_with_it(
        fake, core, nursery):
    writer = await new_file(core, "assistants", "x.txt", b"payload")
    entry = writer.entry
    gate, closed = close_with_upload_held(fake, core, writer, nursery)
    await trio.testing.wait_all_tasks_blocked()         # the upload waits at the server
    await core.files.rename(entry, core.dir("vision"), "y.txt")     # returns meanwhile
    assert not closed.is_set()
    assert core.dir("vision").by_name["y.txt"] is entry
    gate.set()
    await closed.wait()
    assert [(f["purpose"], f["filename"], fake.blobs[f["id"]]) for f in fake.files.values()] \
        == [("vision", "y.txt", b"payload")]
    assert entry.file.filename == "y.txt" and core.dir("vision").by_name["y.txt"] is entry
    assert "x.txt" not in core.dir("assistants").by_name
    assert fake.kinds() == ["create_file", "create_file", "delete"]


async def test_an_rm_during_the_upload_does_not_wait_and_the_server_ends_without_it(
        fake, core, nursery):
    writer = await new_file(core, "assistants", "x.txt", b"payload")
    gate, closed = close_with_upload_held(fake, core, writer, nursery)
    await trio.testing.wait_all_tasks_blocked()
    await core.files.unlink(writer.entry)
    assert not closed.is_set() and "x.txt" not in core.dir("assistants").by_name
    gate.set()
    await closed.wait()
    assert fake.files == {} and fake.kinds() == ["create_file", "delete"]
    assert "x.txt" not in core.dir("assistants").by_name


async def test_when_the_upload_under_the_new_name_fails_nothing_is_lost(fake, core, nursery):
    writer = await new_file(core, "assistants", "x.txt", b"payload")
    gate = fake.hold("create_file")
    failure = []

    async def close():
        try:
            await flush(core, writer)
        except UploadFailed as exc:
            failure.append(exc)

    nursery.start_soon(close)
    await trio.testing.wait_all_tasks_blocked()
    await core.files.rename(writer.entry, core.dir("assistants"), "y.txt")
    fake.fail("create_file", 400, message="no more")     # the next one: the new name
    gate.set()
    await trio.testing.wait_all_tasks_blocked()
    [error] = failure
    assert error.errno == errno.EINVAL and "under its old name" in error.message
    [kept] = fake.files.values()
    assert (kept["filename"], fake.blobs[kept["id"]]) == ("x.txt", b"payload")
    assert core.dir("assistants").by_name["x.txt"].file.id == kept["id"]
    assert "y.txt" not in core.dir("assistants").by_name
    assert list(unsent_files(core).values()) == [b"payload"]
