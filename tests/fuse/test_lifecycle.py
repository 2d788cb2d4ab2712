"""Starting and stopping a mount: credentials, daemon mode, unmount, signals, options, demo."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import pytest

from checktools import openai_fs
from fusetools import KEY, interrupt, run, wait_for

from openai_fs.emulator.control import EmulatorProcess


@pytest.fixture
def locked_emulator(tmp_path):
    """An emulator that accepts only one key."""
    with EmulatorProcess(tmp_path / "locked", api_key="sk-the-right-key-123456") as server:
        yield server


def test_a_wrong_key_fails_with_one_clear_line_and_no_traceback(locked_emulator, tmp_path):
    (tmp_path / "mnt").mkdir()
    wrong = "sk-wrong-key-SECRET-987654321"
    result = openai_fs("mount", str(tmp_path / "mnt"), "--cache-dir", str(tmp_path / "c"),
                       env={"OPENAI_API_KEY": wrong, "OPENAI_BASE_URL": locked_emulator.base_url})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "refused the API key" in lines[0] and "401" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert "SECRET" not in result.stderr + result.stdout and wrong not in result.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def test_a_missing_key_or_unreachable_server_fails_clearly(tmp_path):
    (tmp_path / "mnt").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run([sys.executable, "-m", "openai_fs", "mount", "-f",
                             str(tmp_path / "mnt")], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode != 0 and "no API key" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = openai_fs("mount", "-f", str(tmp_path / "mnt"), "--retries", "0",
                       env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert result.returncode != 0 and "cannot connect to http://127.0.0.1:9/v1: connection " \
        "refused" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_world_readable_key_file_is_refused(emulator, tmp_path):
    (tmp_path / "mnt").mkdir()
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-a-file-0000")
    key_file.chmod(0o644)
    result = openai_fs("mount", "-f", str(tmp_path / "mnt"), "--api-key-file", str(key_file),
                       env={"OPENAI_BASE_URL": emulator.base_url})
    assert result.returncode != 0 and "readable by other users" in result.stderr
    assert "chmod 600" in result.stderr


def test_the_daemon_returns_once_the_mount_is_live_and_unmount_stops_it(emulator, seed,
                                                                       tmp_path):
    seed("daemon.txt", "vision", b"served by a daemon")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": emulator.base_url}
    result = openai_fs("mount", str(mnt), "--cache-dir", str(tmp_path / "c"),
                       "--log-file", str(tmp_path / "log"), env=env)
    try:
        assert result.returncode == 0, result.stderr
        assert os.path.ismount(mnt)          # live the moment the command returned
        assert (mnt / "vision" / "daemon.txt").read_bytes() == b"served by a daemon"
        status = run(sys.executable, "-m", "openai_fs", "status", str(mnt)).stdout
        assert "Uploads in flight: none" in status and emulator.base_url in status
        pid = int(run(sys.executable, "-m", "openai_fs", "status", "--json", str(mnt))
                  .stdout.split('"pid": ')[1].split(",")[0])
        stopped = openai_fs("unmount", str(mnt))
        assert stopped.returncode == 0, stopped.stderr
        assert not os.path.ismount(mnt)
        assert ended(pid)
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
    log = (tmp_path / "log").read_text()
    assert "mounted on" in log and "unmounted" in log and KEY not in log


def test_sigterm_in_the_foreground_unmounts_cleanly(mount):
    mounted = mount()
    assert interrupt(mounted, signal.SIGTERM) == 0
    assert not os.path.ismount(mounted.path)
    mounted2 = mount()
    assert interrupt(mounted2, signal.SIGINT) == 0
    assert not os.path.ismount(mounted2.path)


def test_read_only_refuses_every_change(mount, seed):
    seed("keep.txt", "vision", b"keep")
    mounted = mount("--read-only")
    assert stat_mode(mounted / "vision") == 0o555
    for attempt in (lambda: (mounted / "vision" / "new.txt").write_bytes(b"x"),
                    lambda: os.unlink(mounted / "vision" / "keep.txt"),
                    lambda: os.rename(mounted / "vision" / "keep.txt",
                                      mounted / "vision" / "moved.txt")):
        with pytest.raises(OSError) as caught:
            attempt()
        assert caught.value.errno == errno.EROFS
    assert (mounted / "vision" / "keep.txt").read_bytes() == b"keep"


def test_dash_o_options_work_like_flags(mount, seed):
    seed("keep.txt", "assistants", b"keep")
    mounted = mount("-o", "ro,dir_ttl=60,cache-size=16M,_netdev")
    with pytest.raises(OSError) as caught:
        (mounted / "assistants" / "new.txt").write_bytes(b"x")
    assert caught.value.errno == errno.EROFS
    assert mounted.status()["cache"]["memory_limit"] == 16 * 1024 * 1024


def test_an_unknown_option_is_a_usage_error(tmp_path):
    (tmp_path / "mnt").mkdir()
    result = openai_fs("mount", str(tmp_path / "mnt"), "-o", "frobnicate=1")
    assert result.returncode == 2 and "unknown mount option -o frobnicate" in result.stderr


def test_demo_mounts_sample_files_in_every_purpose(tmp_path):
    mnt = tmp_path / "demo"
    mnt.mkdir()
    result = openai_fs("mount", "--demo", str(mnt), "--log-file", str(tmp_path / "log"),
                       env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
    try:
        assert result.returncode == 0, result.stderr
        purposes = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals",
                    "assistants_output", "batch_output", "fine-tune-results"]
        for purpose in purposes:
            assert os.listdir(mnt / purpose), purpose
        listing = run("ls", "-lR", str(mnt)).stdout
        assert ".jsonl" in listing
    finally:
        done = openai_fs("unmount", str(mnt))
        assert done.returncode == 0, done.stderr
    # the demo's emulator goes away with the mount
    wait_for(lambda: "openai-fs-demo-" not in run("ps", "axww", "-o", "args").stdout,
             timeout=10, message="the demo emulator to stop")


def ended(pid: int) -> bool:
    """The process has exited (gone, or a zombie that init has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def stat_mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_the_mount_helper_form_with_demo(tmp_path):
    mnt = tmp_path / "demo"
    mnt.mkdir()
    result = openai_fs("demo", str(mnt), "-o", f"rw,dev,suid,log_file={tmp_path / 'log'}")
    try:
        assert result.returncode == 0, result.stderr
        assert os.listdir(mnt / "fine-tune")
    finally:
        assert openai_fs("unmount", str(mnt)).returncode == 0
