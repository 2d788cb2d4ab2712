"""A mount of a server that refuses content as the real service does (the emulator's default:
assistants, user_data, fine-tune and evals content answers 400 "Not allowed to download files of
purpose: ..."), driven with real programs (docs/SEMANTICS.md, section 5a)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess

import pytest

from checktools import live_files
from fusetools import content_requests, run

REFUSAL_LOG = r"WARNING openai_fs\.core\.content_access: the server does not hand out the content of {}"


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def xattr(path, name: str) -> str:
    return run("getfattr", "--only-values", "-n", f"user.openai.{name}", str(path)).stdout


def changes(emulator) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in emulator.control.requests()
            if r["method"] in ("POST", "DELETE")]


def test_cat_of_a_refused_file_is_permission_denied_and_learned_for_the_purpose(
        mount, seed, emulator):
    first = seed("a.txt", "assistants", b"secret a")
    seed("b.txt", "assistants", b"secret b")
    seed("v.txt", "vision", b"visible")
    mounted = mount("--dir-ttl", "300")
    mounted.expect_log(REFUSAL_LOG.format("assistants"))
    a, b = mounted / "assistants" / "a.txt", mounted / "assistants" / "b.txt"
    assert mode_of(a) == mode_of(b) == 0o644           # nothing is known yet
    assert xattr(a, "downloadable") == "unknown"

    done = run("cat", str(a), check=False)
    assert done.returncode == 1 and "Permission denied" in done.stderr
    assert len(content_requests(emulator.control, first["id"])) == 1
    # learned for the purpose: shown at once (the attribute timeout is 300 s), no more requests
    assert mode_of(a) == mode_of(b) == 0o200
    assert xattr(b, "downloadable") == "no"
    assert "--w-------" in run("ls", "-l", str(mounted / "assistants")).stdout
    emulator.control.clear_requests()
    for program in (["cat", str(b)], ["cp", str(b), str(mounted.path.parent / "out.txt")]):
        done = run(*program, check=False)
        assert done.returncode == 1 and "Permission denied" in done.stderr, done
    with pytest.raises(PermissionError):
        os.open(b, os.O_RDONLY)                        # root too: the mount refuses itself
    assert content_requests(emulator.control) == []
    assert mounted.status()["content_served"] == {"assistants": "no"}
    # another purpose: served, and said so
    assert (mounted / "vision" / "v.txt").read_bytes() == b"visible"
    assert xattr(mounted / "vision" / "v.txt", "downloadable") == "yes"
    assert mode_of(mounted / "vision" / "v.txt") == 0o644
    assert [line for line in mounted.log().splitlines() if " WARNING " in line].__len__() == 1


def test_what_needs_the_bytes_fails_cleanly_and_deletes_nothing(mount, seed, emulator):
    made = seed("notes.txt", "user_data", b"old notes")
    mounted = mount("--not-downloadable", "user_data")
    mounted.expect_log(r"WARNING .*rename: cannot move user_data/notes\.txt: the API cannot rename")
    path = mounted / "user_data" / "notes.txt"
    assert mode_of(path) == 0o200
    assert xattr(path, "downloadable") == "no"
    emulator.control.clear_requests()

    append = subprocess.run(["sh", "-c", f"echo more >> '{path}'"], capture_output=True,
                            text=True)
    assert append.returncode != 0 and "Permission denied" in append.stderr
    assert run("truncate", "-s", "3", str(path), check=False).returncode != 0
    move = run("mv", str(path), str(mounted / "vision" / "notes.txt"), check=False)
    assert move.returncode != 0 and "Permission denied" in move.stderr
    assert os.listdir(mounted / "user_data") == ["notes.txt"]
    assert os.listdir(mounted / "vision") == []
    assert [f["id"] for f in live_files(emulator)] == [made["id"]]
    assert emulator.control.requests() == [] or all(
        r["method"] == "GET" and not r["path"].endswith("/content")
        for r in emulator.control.requests())

    # a full overwrite needs no old bytes, and rm needs none either
    subprocess.run(["sh", "-c", f"printf 'new notes' > '{path}'"], check=True)
    [new] = live_files(emulator)
    assert new["id"] != made["id"] and emulator.control.stored_content(new["id"]) == b"new notes"
    assert (mounted / "user_data" / "notes.txt").read_bytes() == b"new notes"   # written here
    os.unlink(path)
    assert live_files(emulator) == []
    assert content_requests(emulator.control) == []


def test_a_file_manager_replaces_a_refused_file_and_in_place_writes_are_refused(
        mount, seed, emulator, tmp_path):
    """GIO (file managers, `gio copy`, `gio save`) opens the file it replaces O_WRONLY without
    O_TRUNC, then renames a temporary file over it: that needs no old bytes and works; a write
    into the old bytes (`dd conv=notrunc`) is refused at the write, and nothing is sent."""
    made = seed("notes.txt", "user_data", b"old notes")
    mounted = mount("--not-downloadable", "user_data")
    path = mounted / "user_data" / "notes.txt"
    emulator.control.clear_requests()

    done = run("dd", "if=/dev/zero", f"of={path}", "bs=1", "count=1", "conv=notrunc",
               check=False)
    assert done.returncode != 0 and "Permission denied" in done.stderr
    assert [f["id"] for f in live_files(emulator)] == [made["id"]]
    assert changes(emulator) == []

    local = tmp_path / "notes.txt"
    local.write_bytes(b"dragged in\n")
    run("gio", "copy", str(local), str(path))
    [copied] = live_files(emulator)
    assert emulator.control.stored_content(copied["id"]) == b"dragged in\n"
    assert [method for method, _ in changes(emulator)] == ["POST", "DELETE"]

    emulator.control.clear_requests()
    subprocess.run(["gio", "save", str(path)], input=b"saved by GIO\n", check=True,
                   timeout=60)
    [saved] = live_files(emulator)
    assert emulator.control.stored_content(saved["id"]) == b"saved by GIO\n"
    assert [method for method, _ in changes(emulator)] == ["POST", "DELETE"]
    assert os.listdir(mounted / "user_data") == ["notes.txt"]
    assert content_requests(emulator.control) == []


def test_a_file_written_here_stays_readable_and_movable(mount, emulator):
    mounted = mount("--not-downloadable", "assistants")
    path = mounted / "assistants" / "report.txt"
    path.write_bytes(b"my report")
    assert mode_of(path) == 0o644
    assert path.read_bytes() == b"my report"
    run("mv", str(path), str(mounted / "assistants" / "final.txt"))
    assert (mounted / "assistants" / "final.txt").read_bytes() == b"my report"
    [made] = live_files(emulator)
    assert made["filename"] == "final.txt"
    assert emulator.control.stored_content(made["id"]) == b"my report"
    assert content_requests(emulator.control) == []


def test_rm_of_a_file_open_for_reading_needs_no_content(mount, seed, emulator):
    seed("open.txt", "evals", b"unreadable")
    mounted = mount()
    mounted.expect_log(REFUSAL_LOG.format("evals"))
    with open(mounted / "evals" / "open.txt", "rb") as handle:
        os.unlink(mounted / "evals" / "open.txt")
        assert live_files(emulator) == []
        with pytest.raises(PermissionError):
            handle.read()


def test_a_lost_answer_to_an_upload_is_judged_by_name_size_and_time(mount, emulator):
    # The server makes the file, then the connection drops before its answer. Its content
    # cannot be compared (refused), so exactly one file of that name, size and purpose made
    # during the upload is taken for it: no duplicate, and close() succeeds.
    emulator.control.add_fault("drop_after_commit", method="POST", path="/v1/files$", count=1)
    mounted = mount()
    mounted.expect_log(REFUSAL_LOG.format("fine-tune"))
    (mounted / "fine-tune" / "train.jsonl").write_bytes(b'{"prompt": 1}\n')
    [made] = live_files(emulator)
    assert (made["filename"], made["purpose"]) == ("train.jsonl", "fine-tune")
    assert "judged by name, size, purpose and time" in mounted.log()
    assert os.listdir(mounted / "fine-tune") == ["train.jsonl"]


def test_output_purposes_that_are_refused_show_no_bits(mount, seed, emulator):
    seed("result.jsonl", "assistants_output", b"{}\n")
    emulator.control.set_downloadable(["batch", "vision"])    # outputs refused too
    mounted = mount()
    mounted.expect_log(REFUSAL_LOG.format("assistants_output"))
    path = mounted / "assistants_output" / "result.jsonl"
    with pytest.raises(OSError) as caught:
        path.read_bytes()
    assert caught.value.errno == errno.EACCES
    assert mode_of(path) == 0o000
