"""The namespace (openai_fs/core/namespace.py): listings cached for dir_ttl, collision names, inode
numbers, unknown purposes, .by-id, and the overlay of the mount's own changes."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from openai_fs.core.errors import NoSuchEntry
from openai_fs.core.namespace import BY_ID_INODE, BY_ID_NAME, ROOT_INODE

from .helpers import write_and_commit

TTL = 30.0


async def names_in(core, purpose: str) -> list[str]:
    return [name for name, _ in await core.namespace.list_directory(core.dir(purpose).inode)]


async def test_a_listing_of_several_pages_is_fetched_once_per_ttl(fake, make_core,
                                                                  autojump_clock):
    fake.page_size = 2
    for n in range(5):
        fake.add(f"f{n}.txt", b"x" * n)
    fake.add("elsewhere.jsonl", b"{}", purpose="batch")
    core = await make_core(dir_ttl=TTL)
    assistants = core.dir("assistants").inode

    for n in range(5):
        entry = await core.namespace.lookup(assistants, f"f{n}.txt")
        assert entry.size == n
    with pytest.raises(NoSuchEntry):
        await core.namespace.lookup(assistants, "elsewhere.jsonl")
    await core.namespace.list_directory(assistants)
    # 5 files at 2 per page: 3 pages, once, each asking for this purpose only
    pages = fake.of("list")
    assert len(pages) == 3
    assert all(call.params["purpose"] == "assistants" for call in pages)
    assert [call.params.get("after") for call in pages][0] is None

    await trio.sleep(TTL - 1)
    await core.namespace.lookup(assistants, "f0.txt")
    assert fake.count("list") == 3
    await trio.sleep(2)
    await core.namespace.lookup(assistants, "f0.txt")
    assert fake.count("list") == 6
    assert fake.count("content", "retrieve") == 0


async def test_a_stale_listing_is_fetched_again_and_shows_what_changed(fake, make_core,
                                                                       autojump_clock):
    core = await make_core(dir_ttl=TTL)
    assistants = core.dir("assistants").inode
    with pytest.raises(NoSuchEntry):
        await core.namespace.lookup(assistants, "late.txt")
    fake.add("late.txt", b"hello")
    await trio.sleep(TTL / 2)
    with pytest.raises(NoSuchEntry):                 # still trusting the listing
        await core.namespace.lookup(assistants, "late.txt")
    assert fake.count("list") == 1
    await trio.sleep(TTL / 2 + 1)
    entry = await core.namespace.lookup(assistants, "late.txt")
    assert entry.size == 5 and fake.count("list") == 2


async def test_concurrent_lookups_during_a_refresh_share_one_listing(fake, core):
    fake.page_size = 2
    for n in range(3):
        fake.add(f"f{n}.txt")
    release = fake.hold("list")
    assistants = core.dir("assistants").inode
    found: dict[str, int] = {}

    async def look(name: str) -> None:
        found[name] = (await core.namespace.lookup(assistants, name)).inode

    async with trio.open_nursery() as nursery:
        for n in [0, 1, 2, 0, 1, 2]:
            nursery.start_soon(look, f"f{n}.txt")
        await trio.testing.wait_all_tasks_blocked()
        assert fake.count("list") == 1          # one listing in flight, the others wait for it
        release.set()
    assert fake.count("list") == 2              # its two pages, and nothing more
    assert sorted(found) == ["f0.txt", "f1.txt", "f2.txt"]


async def test_files_sharing_a_name_all_get_names_with_their_id(fake, core):
    fake.add("dup.txt", b"a", file_id="file-aaa")
    fake.add("dup.txt", b"bb", file_id="file-bbb")
    fake.add("single.txt", b"c", file_id="file-ccc")
    assistants = core.dir("assistants").inode

    assert sorted(await names_in(core, "assistants")) == [
        "dup (file-aaa).txt", "dup (file-bbb).txt", "single.txt"]
    with pytest.raises(NoSuchEntry):
        await core.namespace.lookup(assistants, "dup.txt")
    first = await core.namespace.lookup(assistants, "dup (file-aaa).txt")
    second = await core.namespace.lookup(assistants, "dup (file-bbb).txt")
    assert (first.file.id, first.size, first.server_name) == ("file-aaa", 1, "dup.txt")
    assert (second.file.id, second.size, second.server_name) == ("file-bbb", 2, "dup.txt")


async def test_a_name_that_becomes_shared_stops_meaning_the_first_file(fake, make_core,
                                                                       autojump_clock):
    fake.add("dup.txt", b"a", file_id="file-aaa")
    core = await make_core(dir_ttl=TTL)
    assistants = core.dir("assistants").inode
    first = await core.namespace.lookup(assistants, "dup.txt")
    fake.add("dup.txt", b"bb", file_id="file-bbb")
    await trio.sleep(TTL + 1)

    with pytest.raises(NoSuchEntry):
        await core.namespace.lookup(assistants, "dup.txt")
    assert (assistants, "dup.txt") in core.invalidated
    again = await core.namespace.lookup(assistants, "dup (file-aaa).txt")
    assert again.inode == first.inode


async def test_every_file_stays_reachable_when_id_names_collide_with_real_names(fake, core):
    # names built so that each round of id-naming collides with another real filename
    fake.add("a", file_id="file-1")
    fake.add("a", file_id="file-2")
    fake.add("a (file-1)", file_id="file-3")
    fake.add("a (file-1) (file-1)", file_id="file-4")
    fake.add("a (file-1) (file-1) (file-1)", file_id="file-5")
    listing = await core.namespace.list_directory(core.dir("assistants").inode)
    shown = {node.file.id: name for name, node in listing}
    assert sorted(shown) == ["file-1", "file-2", "file-3", "file-4", "file-5"], listing
    assert len(set(shown.values())) == 5


async def test_a_file_deleted_elsewhere_disappears_after_refresh_and_is_invalidated(
        fake, make_core, autojump_clock):
    gone = fake.add("gone.txt", b"x")
    fake.add("stays.txt", b"y")
    core = await make_core(dir_ttl=TTL)
    assistants = core.dir("assistants").inode
    await core.namespace.lookup(assistants, "gone.txt")
    fake.remove(gone["id"])
    assert (assistants, "gone.txt") not in core.invalidated
    await trio.sleep(TTL + 1)

    assert await names_in(core, "assistants") == ["stays.txt"]
    with pytest.raises(NoSuchEntry):
        await core.namespace.lookup(assistants, "gone.txt")
    assert (assistants, "gone.txt") in core.invalidated
    assert (BY_ID_INODE, gone["id"]) in core.invalidated
    assert core.namespace.entry_for_id(gone["id"]) is None


async def test_inode_numbers_are_stable_per_file_id_across_refreshes(fake, make_core,
                                                                     autojump_clock):
    one = fake.add("one.txt", file_id="file-one")
    fake.add("two.txt", file_id="file-two")
    core = await make_core(dir_ttl=TTL)
    assistants = core.dir("assistants").inode
    before = {name: node.inode for name, node in await core.namespace.list_directory(assistants)}

    fake.add("zero.txt", created_at=one["created_at"] - 100)     # lists after (older)
    fake.add("three.txt")                                        # lists first (newer)
    fake.add("one.txt", file_id="file-one-bis")                  # one.txt now shared
    await trio.sleep(TTL + 1)
    after = {node.file.id: node.inode
             for _, node in await core.namespace.list_directory(assistants)}
    assert after["file-one"] == before["one.txt"]
    assert after["file-two"] == before["two.txt"]
    assert len(set(after.values())) == len(after) == 5
    by_id = await core.namespace.lookup(BY_ID_INODE, "file-two")
    assert by_id.inode == before["two.txt"]


async def test_the_root_is_listed_without_a_request(fake, core):
    fake.add("result.bin", b"r", purpose="assistants")
    root = await core.namespace.list_directory(ROOT_INODE)
    names = [name for name, _ in root]
    assert names[0] == BY_ID_NAME and "assistants" in names and "fine-tune-results" in names
    assert len(names) == 1 + 9
    assert fake.kinds() == []


async def test_unknown_purposes_become_read_only_directories_once_looked_up(fake, core):
    fake.add("result.bin", b"r", purpose="brand_new_output")
    names = [name for name, _ in await core.namespace.list_directory(ROOT_INODE)]
    assert "brand_new_output" not in names          # nothing has seen it yet
    # a lookup of its name (ls MOUNT/brand_new_output, cd) asks for one file of that purpose
    node = await core.namespace.lookup(ROOT_INODE, "brand_new_output")
    assert fake.kinds() == ["list"] and fake.of("list")[0].params.get("purpose") == \
        "brand_new_output"
    names = [name for name, _ in await core.namespace.list_directory(ROOT_INODE)]
    assert "brand_new_output" in names
    directory = core.namespace.purpose_dirs["brand_new_output"]
    assert node is directory
    assert directory.writable is False
    assert core.dir("assistants").writable is True
    assert core.dir("batch_output").writable is False
    assert await names_in(core, "brand_new_output") == ["result.bin"]


async def test_names_of_the_root_that_are_no_purpose_cost_one_request_per_ttl(fake, core):
    for _ in range(3):
        with pytest.raises(NoSuchEntry):
            await core.namespace.lookup(ROOT_INODE, "no_such_purpose")
    assert fake.kinds() == ["list"]                 # remembered as missing for dir_ttl
    for probe in (".git", ".Trash-0", "autorun.inf", "Desktop.ini"):
        with pytest.raises(NoSuchEntry):
            await core.namespace.lookup(ROOT_INODE, probe)
    assert fake.kinds() == ["list"]                 # cannot be a purpose: no request


async def test_a_listing_of_everything_shows_new_purposes_in_the_root(fake, core):
    fake.add("result.bin", b"r", purpose="brand_new_output")
    await core.namespace.list_directory(BY_ID_INODE)
    names = [name for name, _ in await core.namespace.list_directory(ROOT_INODE)]
    assert "brand_new_output" in names


async def test_a_purpose_first_seen_through_by_id_becomes_a_read_only_directory(fake, core):
    made = fake.add("odd.bin", b"1234", purpose="another_new_purpose")
    entry = await core.namespace.lookup(BY_ID_INODE, made["id"])
    directory = core.namespace.purpose_dirs["another_new_purpose"]
    assert entry.directory is directory and not directory.writable
    assert directory.by_name["odd.bin"] is entry
    assert fake.kinds() == ["retrieve"]


async def test_by_id_lookup_is_one_retrieve_and_no_listing(fake, core):
    made = fake.add("x.txt", b"12345", purpose="vision")
    entry = await core.namespace.lookup(BY_ID_INODE, made["id"])
    assert (entry.file.id, entry.size, entry.purpose) == (made["id"], 5, "vision")
    assert fake.kinds() == ["retrieve"]
    assert fake.of("retrieve")[0].path == f"/v1/files/{made['id']}"
    again = await core.namespace.lookup(BY_ID_INODE, made["id"])
    assert again is entry and fake.kinds() == ["retrieve"]
    with pytest.raises(NoSuchEntry):
        await core.namespace.lookup(BY_ID_INODE, "file-nope")
    assert fake.kinds() == ["retrieve", "retrieve"]


async def test_an_upload_stays_visible_when_a_listing_that_started_before_misses_it(
        fake, core):
    fake.add("old.txt", b"o")
    assistants = core.dir("assistants")
    release = fake.hold("list")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.namespace.refresh, assistants)
        await trio.testing.wait_all_tasks_blocked()
        assert fake.count("list") == 1          # the listing is computed, not yet answered
        entry = await write_and_commit(core, "assistants", "mine.txt", b"fresh")
        release.set()
    assert assistants.listed_at is not None
    assert assistants.by_name.get("mine.txt") is entry and entry.file is not None
    assert sorted(await names_in(core, "assistants")) == ["mine.txt", "old.txt"]


async def test_a_delete_stays_hidden_when_a_listing_that_started_before_shows_it(fake, core):
    fake.add("doomed.txt", b"d")
    fake.add("other.txt", b"o")
    assistants = core.dir("assistants")
    entry = await core.namespace.lookup(assistants.inode, "doomed.txt")
    release = fake.hold("list")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: core.namespace.refresh(assistants, force=True))
        await trio.testing.wait_all_tasks_blocked()
        assert fake.count("list") == 2
        await core.files.unlink(entry)
        release.set()
    assert fake.count("delete") == 1
    assert "doomed.txt" not in assistants.by_name
    assert await names_in(core, "assistants") == ["other.txt"]


async def test_the_overlay_also_covers_a_server_whose_listings_lag(fake, make_core,
                                                                   autojump_clock):
    fake.add("doomed.txt", b"d")
    core = await make_core(dir_ttl=TTL)
    assistants = core.dir("assistants")
    doomed = await core.namespace.lookup(assistants.inode, "doomed.txt")
    fake.lag_listings = True            # new files are not listed yet, deleted ones still are
    await core.files.unlink(doomed)
    await write_and_commit(core, "assistants", "new.txt", b"n")
    await trio.sleep(TTL + 1)
    assert await names_in(core, "assistants") == ["new.txt"]
    assert fake.count("list") == 2


async def test_list_directory_is_sorted_by_inode(fake, core):
    for name in ["c.txt", "a.txt", "b.txt"]:
        fake.add(name)
    fake.add("x.bin", purpose="zzz_unknown")
    assistants = core.dir("assistants")
    await core.namespace.list_directory(assistants.inode)

    class Local:
        size, mtime = 0, 0.0

    created = core.namespace.add_unsent(assistants, "0-first-by-name.txt", Local())
    listing = await core.namespace.list_directory(assistants.inode)
    inodes = [node.inode for _, node in listing]
    assert inodes == sorted(inodes) and listing[-1][1] is created
    await core.namespace.lookup(ROOT_INODE, "zzz_unknown")      # a purpose seen later
    root = await core.namespace.list_directory(ROOT_INODE)
    inodes = [node.inode for _, node in root]
    assert inodes == sorted(inodes) and root[-1][0] == "zzz_unknown"
