"""--write-back (openai_fs/core/write_back.py and the journal of core/spool.py): close() and rm
return once journaled, the queue sends in the background, failures are kept and reported, and
a later mount of the same account finishes what a dead one journaled, exactly once."""

from __future__ import annotations

import errno
import json

import pytest
import trio
import trio.testing

from openai_fs.core.errors import FSError

from .helpers import flush, new_file


@pytest.fixture
async def queued(make_core, nursery):
    """``await queued(**options)``: a core with --write-back and its workers running."""
    async def build(**options):
        core = await make_core(write_back=True, **options)
        nursery.start_soon(core.write_back.run)
        return core
    return build


def records(core) -> list[dict]:
    found = []
    for path in sorted(core.spool.folder.glob("*.json")):
        data = json.loads(path.read_text())
        if "journal" in data:
            found.append(data)
    return found


async def test_close_returns_once_journaled_and_the_upload_follows(fake, queued):
    core = await queued()
    gate = fake.hold("create_file")
    writer = await new_file(core, "assistants", "notes.txt", b"queued bytes")
    await flush(core, writer)                       # returns with the upload still held
    [record] = records(core)
    assert record["journal"]["op"] == "upload" and record["name"] == "notes.txt"
    assert record["journal"]["account"] == core.client.account
    entry = writer.entry
    assert core.dir("assistants").by_name["notes.txt"] is entry and entry.size == 12
    assert await core.files.read(writer, 0, 100) == b"queued bytes"
    await core.files.release(writer)
    assert entry.local is not None                  # the queue still holds the spool
    gate.set()
    await core.files.sync_all()
    [made] = fake.files.values()
    assert fake.blobs[made["id"]] == b"queued bytes" and entry.file.id == made["id"]
    assert records(core) == [] and entry.local is None
    assert core.disk.holds(entry.file)              # kept as the cache's copy


async def test_rm_returns_once_journaled_and_the_name_is_gone_at_once(fake, queued):
    made = fake.add("old.txt", b"old")
    core = await queued()
    entry = await core.namespace.lookup(core.dir("assistants").inode, "old.txt")
    gate = fake.hold("delete")
    await core.files.unlink(entry)
    assert "old.txt" not in core.dir("assistants").by_name
    assert [r["journal"]["op"] for r in records(core)] == ["delete"]
    await core.namespace.refresh(core.dir("assistants"), force=True)
    assert "old.txt" not in core.dir("assistants").by_name    # hidden while pending
    gate.set()
    await core.files.sync_directory(core.dir("assistants"))
    assert made["id"] not in fake.files and records(core) == []


async def test_a_new_file_removed_before_its_upload_is_never_sent(fake, queued, nursery):
    core = await queued(settings=None)
    gate = fake.hold("create_file")
    first = await new_file(core, "assistants", "first.txt", b"1")
    await flush(core, first)                        # the worker takes it and waits
    await trio.testing.wait_all_tasks_blocked()
    core.write_back.concurrency = 1
    second = await new_file(core, "assistants", "second.txt", b"2")
    await flush(core, second)
    await core.files.release(second)
    await core.files.unlink(second.entry)
    await core.files.release(first)
    gate.set()
    await core.files.sync_all()
    assert [f["filename"] for f in fake.files.values()] == ["first.txt"] or \
        sorted(f["filename"] for f in fake.files.values()) == ["first.txt"]
    assert "second.txt" not in core.dir("assistants").by_name


async def test_a_failure_that_may_pass_is_retried_and_reported_meanwhile(
        fake, queued, autojump_clock):
    core = await queued()
    fake.fail("create_file", 503, times=2)
    writer = await new_file(core, "assistants", "later.txt", b"later")
    with pytest.raises(FSError) as caught:
        await core.files.fsync(writer)              # reports the failure, does not hang
    assert caught.value.errno == errno.EIO
    assert core.write_back.statistics()["retrying"] == 1
    for _ in range(10):                             # the waits before trying again pass
        try:
            await core.files.sync_all()
            break
        except FSError as exc:
            assert exc.errno == errno.EIO
            await trio.sleep(30)
    assert fake.count("create_file") == 3
    [made] = fake.files.values()
    assert fake.blobs[made["id"]] == b"later"
    await core.files.release(writer)


async def test_a_refusal_ends_the_job_keeps_the_bytes_and_is_reported(fake, queued):
    core = await queued()
    fake.fail("create_file", 400, message="no such thing")
    writer = await new_file(core, "user_data", "bad.txt", b"precious")
    await flush(core, writer)
    await core.files.release(writer)
    with pytest.raises(FSError) as caught:
        await core.files.sync_all()
    assert caught.value.errno == errno.EINVAL and "no such thing" in caught.value.message
    assert fake.files == {}
    kept = list(core.spool.unsent_dir.iterdir())
    assert [path.read_bytes() for path in kept] == [b"precious"]
    assert [f["path"] for f in core.uploader.failures] == ["user_data/bad.txt"]
    assert records(core) == []
    await core.files.sync_all()                     # reported once: the queue is clear


async def test_a_later_mount_of_the_account_finishes_what_a_dead_one_journaled(
        fake, make_core, tmp_path, nursery):
    cache_dir = tmp_path / "shared"
    dead = await make_core(write_back=True, cache_dir=cache_dir)     # its workers never run
    gone = fake.add("gone.txt", b"bye")
    writers = [await new_file(dead, "vision", f"f{n}.txt", f"file {n}".encode())
               for n in range(20)]
    for writer in writers:
        await flush(dead, writer)
    entry = await dead.namespace.lookup(dead.dir("assistants").inode, "gone.txt")
    await dead.files.unlink(entry)
    assert fake.kinds() == ["list"]                  # nothing sent: it stops now
    assert len(records(dead)) == 21
    dead.spool.close()                               # (unmounted with its queue not empty)

    later = await make_core(write_back=False, cache_dir=cache_dir)
    await later.fs.start()
    listed = later.dir("vision").by_name
    assert sorted(listed) == sorted(f"f{n}.txt" for n in range(20))   # shown meanwhile
    await later.files.sync_all()
    assert sorted(f["filename"] for f in fake.files.values()) == \
        sorted(f"f{n}.txt" for n in range(20))
    assert fake.count("create_file") == 20 and gone["id"] not in fake.files
    assert records(later) == []


async def test_an_upload_that_had_reached_the_server_is_not_sent_again(
        fake, make_core, tmp_path):
    cache_dir = tmp_path / "shared"
    dead = await make_core(write_back=True, cache_dir=cache_dir)
    writer = await new_file(dead, "vision", "once.txt", b"exactly once")
    await flush(dead, writer)
    [path] = [p for p in dead.spool.folder.glob("*.json")
              if "journal" in json.loads(p.read_text())]
    # it died right after the server made the file, before the answer arrived
    data = json.loads(path.read_text())
    data["journal"].update(state="sending", since=data["created"])
    path.write_text(json.dumps(data))
    fake.add("once.txt", b"exactly once", purpose="vision", created_at=int(data["created"]) + 1)
    fake.calls.clear()
    dead.spool.close()

    later = await make_core(cache_dir=cache_dir)
    await later.fs.start()
    await later.files.sync_all()
    assert fake.count("create_file") == 0
    assert len(fake.files) == 1 and later.dir("vision").by_name["once.txt"].file is not None


async def test_another_accounts_journal_is_left_alone(fake, make_core, tmp_path):
    cache_dir = tmp_path / "shared"
    dead = await make_core(write_back=True, cache_dir=cache_dir)
    writer = await new_file(dead, "vision", "theirs.txt", b"x")
    await flush(dead, writer)
    for path in dead.spool.folder.glob("*.json"):
        data = json.loads(path.read_text())
        data["journal"]["account"] = "another account"
        path.write_text(json.dumps(data))
    folder = dead.spool.folder
    dead.spool.close()

    later = await make_core(cache_dir=cache_dir)
    await later.fs.start()
    await later.files.sync_all()
    assert fake.count("create_file") == 0
    assert any(path.suffix == ".json" for path in folder.iterdir())
