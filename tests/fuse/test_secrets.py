"""Secrets and access: the API key stays out of everything the mount shows or writes, a key
file others can read is refused, and the mount is private to its user unless --allow-other."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from checktools import MiB, as_user, files_under, live_files, openai_fs
from fusetools import run
from openai_fs.emulator.control import EmulatorProcess

NOBODY = 65534


@pytest.mark.parametrize("key", ["sk-proj-Zq7LEAKCHECKa9Xw2Rt5Yu8Io3Pm6Nb1",
                                 "opaque-LEAKCHECK-4f9c2e7a1b8d6053"],
                         ids=["sk-shaped", "any-shape"])
def test_the_key_is_in_no_argv_log_status_or_cache_file(mount, seed, emulator, tmp_path,
                                                         key):
    """One mount with --debug does what a user does: lists, reads, uploads, and meets server
    errors whose message echoes the key (as the real API echoes part of a wrong one). The key
    must then be nowhere: argv, the mount's environment, the log, the mount's own output,
    `openai-fs status`, the status JSON, or any byte of any file under the cache folder."""
    small = seed("notes.txt", "vision", b"hello")
    seed("big.bin", "vision", os.urandom(3 * MiB))
    denied = seed("denied.txt", "vision", b"no")
    broken = seed("broken.txt", "vision", b"no")
    echo = f"the key {key} is not allowed here"
    emulator.control.add_fault("status", status=401, message=echo,
                               path=f"/files/{denied['id']}/content")
    emulator.control.add_fault("status", status=500, message=echo,
                               path=f"/files/{broken['id']}/content")
    emulator.control.add_fault("status", status=500, message=echo, method="POST",
                               path=r"^/v1/files$", skip=1)    # the second upload fails
    mounted = mount("--debug", "--retries", "0", env={"OPENAI_API_KEY": key})
    mounted.expect_log(r"is not allowed here")
    source = tmp_path / "upload.txt"
    source.write_bytes(b"uploaded through the mount")

    run("ls", "-laR", str(mounted.path))
    assert (mounted / "vision" / "notes.txt").read_bytes() == b"hello"
    assert len((mounted / "vision" / "big.bin").read_bytes()) == 3 * MiB
    assert (mounted / ".by-id" / small["id"]).read_bytes() == b"hello"
    run("cp", str(source), str(mounted / "user_data" / "upload.txt"))
    for name, code in (("denied.txt", errno.EACCES), ("broken.txt", errno.EIO)):
        with pytest.raises(OSError) as caught:
            (mounted / "vision" / name).read_bytes()
        assert caught.value.errno == code
    failed = run("cp", str(source), str(mounted / "user_data" / "fails.txt"), check=False)
    assert failed.returncode != 0
    assert {f["filename"] for f in live_files(emulator, "user_data")} == {"upload.txt"}

    with open(f"/proc/{mounted.process.pid}/cmdline", "rb") as cmdline:
        argv = cmdline.read()
    # the key came in OPENAI_API_KEY: the mount runs without it in the environment that
    # /proc shows to every process of the user for the mount's whole life
    with open(f"/proc/{mounted.process.pid}/environ", "rb") as first_environment:
        environ = first_environment.read()
    assert b"OPENAI_BASE_URL=" in environ
    status_text = openai_fs("status", str(mounted.path)).stdout
    status_json = openai_fs("status", "--json", str(mounted.path)).stdout
    assert "Recently failed" in status_text and "is not allowed here" in status_json
    assert mounted.unmount() == 0
    log = mounted.log()
    # the echoes did reach the log, scrubbed: the test saw what it looks for
    assert "is not allowed here" in log and " DEBUG " in log
    secret = key.encode()
    core = key.split("-", 1)[1].encode()           # the key without its prefix
    for where, text in (("argv", argv), ("environ", environ), ("log", log.encode()),
                        ("output", mounted.output().encode()),
                        ("status", status_text.encode()), ("status --json",
                                                           status_json.encode())):
        assert secret not in text and core not in text, where
    cached = files_under(mounted.cache_dir)
    assert any("unsent" in str(path) for path in cached)      # the failed upload's bytes
    for path in cached:
        data = path.read_bytes()
        assert secret not in data and core not in data, path
    # and what is there is the user's alone (SEMANTICS section 14)
    assert stat.S_IMODE(mounted.cache_dir.stat().st_mode) == 0o700
    for folder in ("spool", "unsent"):
        assert stat.S_IMODE((mounted.cache_dir / folder).stat().st_mode) == 0o700, folder
    for path in cached:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


KEY_FILE_KEY = "sk-from-the-key-file-31337"


@pytest.fixture
def locked(tmp_path):
    """An emulator of our own that accepts only KEY_FILE_KEY."""
    with EmulatorProcess(tmp_path / "locked", api_key=KEY_FILE_KEY) as server:
        yield server


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_a_key_file_others_can_use_is_refused_with_the_fix(locked, tmp_path, mode):
    (tmp_path / "mnt").mkdir()
    key_file = tmp_path / "key"
    key_file.write_text(KEY_FILE_KEY + "\n")
    key_file.chmod(mode)
    result = openai_fs("mount", "-f", str(tmp_path / "mnt"), "--api-key-file", str(key_file),
                       "--cache-dir", str(tmp_path / "cache"),
                       env={"OPENAI_API_KEY": None, "OPENAI_BASE_URL": locked.base_url})
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert "readable by other users" in line and f"run: chmod 600 {key_file}" in line
    assert KEY_FILE_KEY not in result.stdout + result.stderr
    assert not os.path.ismount(tmp_path / "mnt")


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_key_file_only_its_owner_can_read_works(mount, locked, tmp_path, mode):
    locked.control.seed_file("through-the-file.txt", "vision", b"the key file works")
    key_file = tmp_path / "key"
    key_file.write_text(KEY_FILE_KEY + "\n")
    key_file.chmod(mode)
    mounted = mount("--api-key-file", str(key_file),
                    env={"OPENAI_API_KEY": None, "OPENAI_BASE_URL": locked.base_url})
    assert (mounted / "vision" / "through-the-file.txt").read_bytes() == \
        b"the key file works"
    (mounted / "vision" / "new.txt").write_bytes(b"uploaded with the file's key")
    assert {f["filename"] for f in live_files(locked)} == {"through-the-file.txt", "new.txt"}


@pytest.fixture
def public_dir():
    """A folder another user can reach (pytest's own temporary folders are 0700), for mount
    points that user must be able to try."""
    folder = Path(tempfile.mkdtemp(prefix="openai-fs-access-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_mount_is_private_to_its_user_unless_allow_other(public_dir, mount, seed,
                                                             emulator):
    seed("shared.txt", "vision", b"for everyone with --allow-other")
    mount.tmp_path = public_dir             # mount points, caches and logs under public_dir
    private = mount()
    shared = mount("--allow-other")
    assert (private / "vision" / "shared.txt").read_bytes() == \
        b"for everyone with --allow-other"           # its own user: root
    for command in (["ls", str(private.path)], ["cat", str(private / "vision/shared.txt")],
                    ["stat", str(private / "vision")]):
        refused = as_user(NOBODY, *command)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, \
            (command, refused.stdout, refused.stderr)
    listed = as_user(NOBODY, "ls", str(shared / "vision"))
    assert listed.returncode == 0 and listed.stdout.split() == ["shared.txt"], listed.stderr
    read = as_user(NOBODY, "cat", str(shared / "vision" / "shared.txt"))
    assert read.returncode == 0 and read.stdout == "for everyone with --allow-other"
    # with default_permissions the mode bits apply: 0755 root's folders are not NOBODY's
    written = as_user(NOBODY, "sh", "-c", f"echo x > '{shared / 'assistants' / 'nobody.txt'}'")
    assert written.returncode != 0 and "Permission denied" in written.stderr
    assert {f["filename"] for f in live_files(emulator)} == {"shared.txt"}
