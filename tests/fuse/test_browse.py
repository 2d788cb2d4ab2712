"""Browsing a real mount: layout, listings and what they cost, names, attributes, xattrs, df."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from fusetools import content_requests, delete_on_server, list_requests, run, wait_for

WRITABLE = ["assistants", "batch", "evals", "fine-tune", "user_data", "vision"]
READ_ONLY = ["assistants_output", "batch_output", "fine-tune-results"]


def test_one_directory_per_purpose_with_the_right_modes(mount):
    mounted = mount()
    entries = sorted(os.listdir(mounted.path))
    assert entries == sorted([".by-id"] + WRITABLE + READ_ONLY)
    for name in WRITABLE:
        assert stat.S_IMODE(os.stat(mounted / name).st_mode) == 0o755
    for name in READ_ONLY + [".by-id"]:
        assert stat.S_IMODE(os.stat(mounted / name).st_mode) == 0o555
    assert os.stat(mounted / "assistants").st_uid == os.getuid()


def test_a_purpose_the_server_reports_but_we_do_not_know_gets_a_read_only_directory(
        mount, seed, emulator):
    """The root lists the known purposes without asking; one it does not know shows once a
    lookup of its name (here: stat), a listing of .by-id or df's count has seen it."""
    seed("report.txt", "weird_new_purpose", b"x")
    seed("other.txt", "another_new_purpose", b"y")
    emulator.control.set_downloadable(["vision", "weird_new_purpose"])
    mounted = mount()
    assert "weird_new_purpose" not in os.listdir(mounted.path)
    mode = os.stat(mounted / "weird_new_purpose").st_mode
    assert stat.S_ISDIR(mode) and stat.S_IMODE(mode) == 0o555
    assert "weird_new_purpose" in os.listdir(mounted.path)
    assert (mounted / "weird_new_purpose" / "report.txt").read_bytes() == b"x"
    # df counts every file of the account (in the background) and finds the other one
    os.statvfs(mounted.path)
    wait_for(lambda: "another_new_purpose" in os.listdir(mounted.path),
             message="df's count to show another_new_purpose")


def test_ls_l_shows_full_attributes_from_the_listing_pages_alone(mount, seed, emulator):
    created = 1_700_000_000
    files = [seed(f"doc-{n:03}.txt", "assistants", b"y" * n, created_at=created + n)
             for n in range(1, 26)]
    emulator.control.set_config(page_cap=10)
    mounted = mount()
    emulator.control.clear_requests()
    listing = run("ls", "-l", "--time-style=+%s", str(mounted / "assistants")).stdout
    rows = [line.split() for line in listing.splitlines()[1:]]
    assert len(rows) == 25
    for row, made in zip(sorted(rows, key=lambda r: r[-1]), files):
        mode, _, _, _, size, mtime, name = row
        assert (mode, int(size), int(mtime), name) == (
            "-rw-r--r--", made["bytes"], made["created_at"], made["filename"])
    requests = emulator.control.requests()
    # 25 files with at most 10 per page: exactly three listing pages and nothing else
    assert [r["path"] for r in requests] == ["/v1/files"] * 3
    assert all(r["query"].get("purpose") == "assistants" for r in requests)
    assert [r["query"].get("after") for r in requests][0] is None


def test_repeated_readdir_calls_of_one_listing_share_one_fetch_and_the_ttl(mount, seed,
                                                                            emulator):
    emulator.control.seed_files([{"filename": f"f{n:04}-{'x' * 40}.txt",
                                  "purpose": "user_data", "content": b"z"} for n in range(700)])
    mounted = mount("--dir-ttl", "3600")
    emulator.control.clear_requests()
    names = os.listdir(mounted / "user_data")      # ~700 long names: many readdir calls
    assert len(names) == 700
    assert len(list_requests(emulator.control)) == 1
    os.listdir(mounted / "user_data")
    run("ls", "-l", str(mounted / "user_data"))
    assert len(list_requests(emulator.control)) == 1  # within --dir-ttl: no new listing
    assert not content_requests(emulator.control)


def test_an_expired_listing_is_fetched_again(mount, seed, emulator):
    seed("one.txt", "evals")
    mounted = mount("--dir-ttl", "0.3")
    assert os.listdir(mounted / "evals") == ["one.txt"]
    seed("two.txt", "evals")
    wait_for(lambda: sorted(os.listdir(mounted / "evals")) == ["one.txt", "two.txt"],
             timeout=5, message="the new file to show")


def test_names_a_path_cannot_hold_are_mapped_reversibly(mount, seed):
    seed("notes/2024/plan.txt", "vision", b"slash")
    seed(".", "vision", b"dot")
    seed("..", "vision", b"dotdot")
    seed("nul\0byte.txt", "vision", b"nul")
    seed("literal\uff0fslash.txt", "vision", b"literal")
    long_name = "long-" + "é" * 200 + ".txt"        # 5 + 400 + 4 bytes: over 255
    long_file = seed(long_name, "vision", b"long")
    mounted = mount()
    shown = set(os.listdir(mounted / "vision"))
    expected = {"notes\uff0f2024\uff0fplan.txt": b"slash", "\uff0e": b"dot",
                "\uff0e\uff0e": b"dotdot", "nul\u2400byte.txt": b"nul",
                "literal\u201b\uff0fslash.txt": b"literal"}
    for name, content in expected.items():
        assert name in shown
        assert (mounted / "vision" / name).read_bytes() == content
    long_shown = [name for name in shown if long_file["id"] in name]
    assert len(long_shown) == 1 and long_shown[0].endswith(".txt")
    assert len(long_shown[0].encode()) <= 255
    assert (mounted / "vision" / long_shown[0]).read_bytes() == b"long"
    # the server's name is always one getfattr away
    got = run("getfattr", "--only-values", "-n", "user.openai.filename",
              str(mounted / "vision" / "notes\uff0f2024\uff0fplan.txt")).stdout
    assert got == "notes/2024/plan.txt"


def test_files_sharing_a_name_all_get_names_with_their_id(mount, seed, emulator):
    first = seed("data.csv", "vision", b"first")
    second = seed("data.csv", "vision", b"second")
    seed("other.csv", "vision", b"other")
    mounted = mount("--dir-ttl", "0")
    names = sorted(os.listdir(mounted / "vision"))
    assert names == sorted([f"data ({first['id']}).csv", f"data ({second['id']}).csv",
                            "other.csv"])
    assert (mounted / "vision" / f"data ({second['id']}).csv").read_bytes() == b"second"
    # the plain name means no file while it is ambiguous...
    assert not (mounted / "vision" / "data.csv").exists()
    # ...and the unique file again once the other one is gone
    delete_on_server(emulator, first["id"])
    wait_for(lambda: (mounted / "vision" / "data.csv").exists(), timeout=5)
    assert (mounted / "vision" / "data.csv").read_bytes() == b"second"


def test_stat_and_getfattr_show_the_file_object(mount, seed):
    made = seed("train.jsonl", "fine-tune", b'{"a": 1}\n', created_at=1_700_000_123,
                expires_at=1_900_000_000)
    seed("out.jsonl", "batch_output", b"{}")
    mounted = mount()
    path = mounted / "fine-tune" / "train.jsonl"
    info = os.stat(path)
    assert info.st_size == made["bytes"] and int(info.st_mtime) == 1_700_000_123
    assert int(info.st_ctime) == 1_700_000_123 and stat.S_IMODE(info.st_mode) == 0o644
    dump = run("getfattr", "-d", str(path)).stdout
    for line in (f'user.openai.id="{made["id"]}"', 'user.openai.purpose="fine-tune"',
                 'user.openai.filename="train.jsonl"', 'user.openai.created_at="1700000123"',
                 'user.openai.expires_at="1900000000"', 'user.openai.status="processed"'):
        assert line in dump
    assert stat.S_IMODE(os.stat(mounted / "batch_output" / "out.jsonl").st_mode) == 0o444


def test_kernel_xattr_probes_are_answered_without_http(mount, seed, emulator):
    seed("a.txt", "vision", b"img")
    mounted = mount()
    path = mounted / "vision" / "a.txt"
    os.stat(path)
    emulator.control.clear_requests()
    for name, expected in (("security.selinux", errno.ENOTSUP),
                           ("security.capability", errno.ENOTSUP),
                           ("system.posix_acl_access", errno.ENOTSUP),
                           ("user.something.else", errno.ENODATA)):
        with pytest.raises(OSError) as caught:
            os.getxattr(path, name)
        assert caught.value.errno == expected
    with pytest.raises(OSError) as caught:
        os.setxattr(path, "user.openai.id", b"file-fake")
    assert caught.value.errno == errno.ENOTSUP
    assert emulator.control.requests() == []


def test_ls_l_of_a_large_directory_probes_xattrs_once_not_per_file(mount, emulator):
    emulator.control.seed_files([{"filename": f"f{n:04}.txt", "purpose": "user_data",
                                  "content": b"x"} for n in range(300)])
    mounted = mount("--debug")
    run("ls", "-l", str(mounted / "user_data"))
    probes = [line for line in mounted.log().splitlines()
              if "getxattr(" in line and ("security." in line or "system." in line)]
    # GNU ls asks once per device after an ENOTSUP, instead of twice per file
    assert 1 <= len(probes) <= 4, probes


def test_df_reports_the_project_quota_and_the_bytes_listed(mount, seed):
    seed("a.bin", "assistants", b"a" * 100_000)
    seed("b.bin", "batch_output", b"b" * 50_000)
    mounted = mount()
    info = os.statvfs(mounted.path)
    assert info.f_frsize * info.f_blocks == (int(2.5 * 1024 ** 4) // 4096) * 4096
    used = (info.f_blocks - info.f_bfree) * info.f_frsize
    assert 150_000 <= used <= 150_000 + 4096
    assert info.f_namemax == 255
    assert "openai-fs" in run("df", "-h", str(mounted.path)).stdout


def test_by_id_resolves_any_file_with_one_retrieve_and_no_listing(mount, seed, emulator):
    made = seed("deep.txt", "batch_output", b"found by id")
    mounted = mount()
    emulator.control.clear_requests()
    assert (mounted / ".by-id" / made["id"]).read_bytes() == b"found by id"
    paths = [(r["method"], r["path"]) for r in emulator.control.requests()]
    assert paths == [("GET", f"/v1/files/{made['id']}"),
                     ("GET", f"/v1/files/{made['id']}/content")]
    with pytest.raises(FileNotFoundError):
        (mounted / ".by-id" / "file-doesnotexist").read_bytes()
    assert made["id"] in os.listdir(mounted / ".by-id")


def test_a_file_deleted_behind_the_mounts_back_is_enoent_after_the_listing_refreshes(
        mount, seed, emulator):
    made = seed("gone.txt", "assistants", b"soon gone")
    mounted = mount("--dir-ttl", "0.2")
    path = mounted / "assistants" / "gone.txt"
    assert path.exists()
    delete_on_server(emulator, made["id"])
    wait_for(lambda: "gone.txt" not in os.listdir(mounted / "assistants"), timeout=5)
    with pytest.raises(FileNotFoundError):
        path.read_bytes()
