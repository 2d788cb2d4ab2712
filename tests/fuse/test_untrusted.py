"""A server whose answers cannot be trusted, through a real mount (docs/SEMANTICS.md, "What the
mount trusts"): hostile ids, damaged listing entries, huge names, a cursor that never
advances, a used-up quota."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import pytest

from checktools import live_files
from fusetools import run, wait_for

MiB = 1024 * 1024


def entry(file_id, **fields) -> dict:
    """A listing entry as the server sends one, with these fields changed."""
    return {"id": file_id, "object": "file", "bytes": 3, "created_at": 1_700_000_000,
            "filename": f"{file_id}.jsonl", "purpose": "batch", "status": "processed",
            **fields}


def warnings(mounted, pattern: str) -> list[str]:
    return [line for line in mounted.log().splitlines()
            if " WARNING " in line and re.search(pattern, line)]


def ls(path: Path) -> subprocess.CompletedProcess:
    return run("ls", "-1", str(path), check=False)


def test_ids_that_are_not_ids_never_become_paths_or_urls(mount, emulator, seed, tmp_path):
    # Relative to the disk cache's folder (CACHE/content/<server>/), "../../../escaped" is
    # tmp_path/escaped; and an id is also a .by-id name and part of a URL.
    hostile = ["../../../escaped", "../../escaped", "a/b", "nul\x00id", "", "x" * 10_240,
               ".", "..", "file-ok/../../escaped", " file-space", "file-ü", "file-a?b=c",
               "file-%2e%2e", 42, None, ["file-list"]]
    real = seed("real.jsonl", "batch", b'{"a": 1}\n')
    emulator.control.add_listing_extras([entry(i) for i in hostile], purpose="batch")
    mounted = mount("--dir-ttl", "1")
    mounted.expect_log(r"WARNING .*listing of (batch|\.by-id) is incomplete")

    # the listing shows what it can, then fails, so that no tool takes it for complete
    listed = ls(mounted / "batch")
    assert listed.stdout.splitlines() == ["real.jsonl"]
    assert listed.returncode != 0 and "Input/output error" in listed.stderr
    assert (mounted / "batch" / "real.jsonl").read_bytes() == b'{"a": 1}\n'
    # one warning line names the purpose and why, however often it is listed again
    wait_for(lambda: ls(mounted / "batch").returncode != 0 and
             len([r for r in emulator.control.requests() if r["path"] == "/v1/files"]) >= 3,
             timeout=10, interval=0.5, message="the listing to be fetched again")
    [line] = warnings(mounted, r"listing of batch is incomplete")
    assert "an entry whose id '../../../escaped' is not an id the mount accepts" in line
    assert len(line) < 2000                          # the 10 kB id is not copied whole

    # by id: names that cannot be ids are not found, without asking the server
    emulator.control.clear_requests()
    for name in ("a%2Fb", " file-space", "file-ü", "x" * 255, "file-a?b=c"):
        with pytest.raises(FileNotFoundError):
            os.stat(mounted / ".by-id" / name)
    assert emulator.control.requests() == []
    by_id = ls(mounted / ".by-id")
    assert by_id.stdout.splitlines() == [real["id"]] and by_id.returncode != 0
    # nothing outside the cache folder, and no request path but the real file's
    assert not (tmp_path / "escaped").exists() and not Path("/escaped").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(
        ("mnt", "cache", "mount"))) == []
    for request in emulator.control.requests():
        assert request["path"] in ("/v1/files", f"/v1/files/{real['id']}",
                                   f"/v1/files/{real['id']}/content"), request["path"]


def test_an_entry_with_bad_fields_is_shown_by_its_id_reads_eio_and_says_why(
        mount, emulator, seed, tmp_path):
    damaged = {
        "file-negative": (entry("file-negative", bytes=-5, filename="neg.jsonl"),
                          "neg (file-negative).jsonl", "'bytes' is out of range (-5)"),
        "file-yesterday": (entry("file-yesterday", created_at="yesterday",
                                 filename="old.jsonl"),
                           "old (file-yesterday).jsonl", "'created_at' is not a whole number"),
        "file-noname": (entry("file-noname", filename=None), "(file-noname)",
                        "'filename' is missing"),
        "file-float": (entry("file-float", bytes=1.5, created_at=1e300, filename="f.jsonl"),
                       "f (file-float).jsonl", "'bytes' is not a whole number"),
        "file-purpose": (entry("file-purpose", purpose={"not": "a string"}, filename="p.jsonl"),
                         "p (file-purpose).jsonl", "'purpose' has the wrong type"),
        "file-huge": (entry("file-huge", bytes=10 ** 20, filename="huge.jsonl"),
                      "huge (file-huge).jsonl", "'bytes' is out of range"),
        "file-status": (entry("file-status", status=["ok"], filename="s.jsonl"),
                        "s (file-status).jsonl", "'status' has the wrong type"),
    }
    real = seed("real.jsonl", "batch", b'{"a": 1}\n')
    # one of them claims the real file's name: the real one keeps its plain name
    emulator.control.add_listing_extras(
        [raw for raw, _, _ in damaged.values()] + [entry("file-twin", filename="real.jsonl",
                                                         bytes="3")], purpose="batch")
    mounted = mount()
    for file_id in list(damaged) + ["file-twin"]:
        mounted.expect_log(rf"WARNING .*the server's entry for {file_id} cannot be trusted")

    listed = ls(mounted / "batch")
    assert listed.returncode == 0, listed.stderr          # the directory is complete
    shown = {name for _, name, _ in damaged.values()} | {"real.jsonl", "real (file-twin).jsonl"}
    assert set(listed.stdout.splitlines()) == shown
    for file_id, (_, name, why) in damaged.items():
        path = mounted / "batch" / name
        assert why in os.getxattr(path, "user.openai.error").decode(), file_id
        assert os.getxattr(path, "user.openai.id").decode() == file_id
        with pytest.raises(OSError) as caught:
            path.read_bytes()
        assert caught.value.errno == errno.EIO, file_id
    # what can be trusted is shown: a sound size, a sound time
    assert os.stat(mounted / "batch" / "old (file-yesterday).jsonl").st_size == 3
    assert os.stat(mounted / "batch" / "neg (file-negative).jsonl").st_size == 0
    assert os.stat(mounted / "batch" / "neg (file-negative).jsonl").st_mtime == 1_700_000_000
    assert (mounted / "batch" / "real.jsonl").read_bytes() == b'{"a": 1}\n'
    with pytest.raises(OSError) as caught:
        os.getxattr(mounted / "batch" / "real.jsonl", "user.openai.error")
    assert caught.value.errno == errno.ENODATA

    # rsync meets read errors (and says so), not missing files
    backup = tmp_path / "backup"
    result = run("rsync", "-r", f"{mounted / 'batch'}/", f"{backup}/", check=False)
    assert result.returncode == 23, result.stderr
    assert "neg (file-negative).jsonl" in result.stderr
    assert (backup / "real.jsonl").read_bytes() == b'{"a": 1}\n'
    # each is logged once, however often it is met
    run("ls", "-l", str(mounted / "batch"))
    for file_id in damaged:
        assert len(warnings(mounted, rf"entry for {file_id} cannot")) == 1, file_id
    # mv needs the bytes: refused, nothing deleted; rm needs none
    with pytest.raises(OSError) as caught:
        os.rename(mounted / "batch" / "old (file-yesterday).jsonl", mounted / "batch" / "n.jsonl")
    assert caught.value.errno == errno.EIO
    assert [f["filename"] for f in live_files(emulator)] == ["real.jsonl"]
    assert real["id"]


def test_a_100_kb_name_is_shown_cut_and_its_attribute_is_e2big(mount, emulator):
    long_name = "n" * 100_000 + ".jsonl"
    emulator.control.add_listing_extras([entry("file-long", filename=long_name)],
                                        purpose="batch")
    mounted = mount()
    [shown] = os.listdir(mounted / "batch")
    assert shown.endswith(" (file-long).jsonl") and len(shown.encode()) <= 255
    path = mounted / "batch" / shown
    with pytest.raises(OSError) as caught:
        os.getxattr(path, "user.openai.filename")
    assert caught.value.errno == errno.E2BIG
    assert os.getxattr(path, "user.openai.id") == b"file-long"
    result = run("getfattr", "-d", str(path), check=False)
    assert 'user.openai.id="file-long"' in result.stdout
    assert mounted.process.poll() is None


def test_a_cursor_that_does_not_advance_ends_the_listing_as_incomplete(
        mount, emulator, tmp_path):
    control = emulator.control
    names = [f"f{n:02}.jsonl" for n in range(25)]
    control.seed_files([{"filename": name, "purpose": "batch", "content": b"{}\n"}
                        for name in names])
    control.set_config(page_cap=10)
    control.add_fault("stuck_cursor")
    # a backup of every file, that rsync --delete from the mount must leave whole
    backup = tmp_path / "backup"
    backup.mkdir()
    for name in names:
        (backup / name).write_bytes(b"{}\n")
    mounted = mount("--dir-ttl", "1")
    mounted.expect_log(r"WARNING .*listing of batch is incomplete: the server's listing "
                       r"\(purpose=batch\) repeats itself")

    listed = ls(mounted / "batch")
    assert listed.returncode != 0 and "Input/output error" in listed.stderr
    shown = listed.stdout.splitlines()
    assert len(shown) == 10 == len(set(shown)) and set(shown) < set(names)   # no duplicates
    result = run("rsync", "-a", "--delete", f"{mounted / 'batch'}/", f"{backup}/", check=False)
    assert result.returncode != 0
    assert sorted(p.name for p in backup.iterdir()) == names       # nothing deleted
    assert len(warnings(mounted, r"listing of batch is incomplete")) == 1

    # the server mends its ways: the listing is complete again
    control.clear_faults()

    def complete() -> bool:
        again = ls(mounted / "batch")
        return again.returncode == 0 and again.stdout.splitlines() == names
    wait_for(complete, timeout=10, interval=0.3, message="a complete listing")
    assert "the server's listing is complete again" in mounted.log()


def test_a_used_up_quota_is_edquot_at_once_and_says_billing(mount, emulator, tmp_path):
    control = emulator.control
    control.add_fault("insufficient_quota", method="POST", path="^/v1/files$")
    mounted = mount()
    mounted.expect_log(r"quota is used up \(a billing problem")
    source = tmp_path / "x.jsonl"
    source.write_bytes(b'{"a": 1}\n')
    fd = os.open(mounted / "batch" / "x.jsonl", os.O_CREAT | os.O_WRONLY)
    os.write(fd, source.read_bytes())
    with pytest.raises(OSError) as caught:
        os.close(fd)
    assert caught.value.errno == errno.EDQUOT
    posts = [r for r in control.requests() if r["method"] == "POST"]
    assert len(posts) == 1                  # not retried: waiting cannot fix billing
    assert live_files(emulator) == []
    lines = [line for line in mounted.log().splitlines() if "quota is used up" in line]
    assert lines and "insufficient_quota" in lines[0]
    # the bytes are kept, as after any failed upload
    [kept] = (mounted.cache_dir / "unsent").iterdir()
    assert kept.read_bytes() == source.read_bytes()
