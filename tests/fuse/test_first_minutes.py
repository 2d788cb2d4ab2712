"""What a newcomer and an operator run into (issue 19): mounting over a non-empty folder, a
wrong server, output piped into head, usage errors, the demo's log, status that agrees with
itself, df and df -i, the root and statfs on a large account, and how long unmount takes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checktools import openai_fs
from fusetools import KEY, run, wait_for

ROOT = Path(__file__).resolve().parents[2]


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text and "Exception ignored" not in text, text


@pytest.fixture
def silent_server():
    """A loopback address that accepts no connection and refuses none, like a host that
    drops packets: a listening socket whose accept queue is full, so the kernel drops every
    new SYN and a connect waits until it times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    time.sleep(0.1)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    for filler in fillers:
        filler.close()
    listener.close()


# ----------------------------------------------------------------- 1. a folder that is not empty

def test_a_folder_that_is_not_empty_is_refused_unless_asked(emulator, tmp_path):
    folder = tmp_path / "full"
    folder.mkdir()
    (folder / "precious.txt").write_text("mine\n")
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": emulator.base_url}
    for foreground in ([], ["-f"]):
        result = openai_fs("mount", *foreground, str(folder), "--cache-dir",
                           str(tmp_path / "c"), env=env)
        assert result.returncode == 1
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "is not empty" in lines[0] and "--allow-non-empty" in \
            lines[0] and "-o nonempty" in lines[0], result.stderr
        assert not os.path.ismount(folder)
        assert (folder / "precious.txt").read_text() == "mine\n"
    # asked for, with the flag or with fuse 2's and rclone's -o nonempty: mounted over it
    for spelling in (["--allow-non-empty"], ["-o", "nonempty"]):
        result = openai_fs("mount", str(folder), *spelling, "--cache-dir", str(tmp_path / "c"),
                           "--log-file", str(tmp_path / "log"), env=env)
        try:
            assert result.returncode == 0, result.stderr
            assert "assistants" in os.listdir(folder)       # what it held is hidden
        finally:
            assert openai_fs("unmount", str(folder)).returncode == 0
        assert (folder / "precious.txt").read_text() == "mine\n"   # and back


def test_nonempty_reaches_the_mount_through_the_mount_helper_form(emulator, tmp_path):
    folder = tmp_path / "full"
    folder.mkdir()
    (folder / "keep").touch()
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    env = {"OPENAI_BASE_URL": emulator.base_url}
    options = f"rw,api_key_file={key_file},cache_dir={tmp_path / 'c'},log_file={tmp_path / 'l'}"
    refused = openai_fs("openai", str(folder), "-o", options, env=env)
    assert refused.returncode == 1 and "is not empty" in refused.stderr
    done = openai_fs("openai", str(folder), "-o", options + ",nonempty", env=env)
    try:
        assert done.returncode == 0, done.stderr
        assert os.path.ismount(folder)
    finally:
        assert openai_fs("unmount", str(folder)).returncode == 0
    assert (folder / "keep").exists()


# -------------------------------------------------------------------------- 2. a wrong server

@pytest.mark.parametrize("foreground", [False, True], ids=["background", "foreground"])
def test_a_refused_connection_fails_at_once_with_one_line_naming_the_url(tmp_path, foreground):
    (tmp_path / "mnt").mkdir()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"      # bound, not listening
    started = time.monotonic()
    result = openai_fs("mount", *(["-f"] if foreground else []), str(tmp_path / "mnt"),
                       "--cache-dir", str(tmp_path / "c"), "--log-file", str(tmp_path / "log"),
                       env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url})
    took = time.monotonic() - started
    closed.close()
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"openai-fs mount: cannot connect to {url}: connection refused (is the URL right, and "
        "the server running?)"], result.stderr
    assert took < 2.0, f"took {took:.1f} s"
    no_traceback(result.stderr, (tmp_path / "log").read_text())


@pytest.mark.parametrize("foreground", [False, True], ids=["background", "foreground"])
def test_a_silent_server_gets_progress_lines_then_one_reason(tmp_path, silent_server,
                                                            foreground):
    (tmp_path / "mnt").mkdir()
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "openai_fs", "mount", *(["-f"] if foreground else []),
         str(tmp_path / "mnt"), "--retries", "1", "--cache-dir", str(tmp_path / "c"),
         "--log-file", str(tmp_path / "log")],
        env={**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": silent_server},
        stderr=subprocess.PIPE, text=True)
    seen = []
    for line in process.stderr:
        seen.append((time.monotonic() - started, line.rstrip("\n")))
    process.wait(timeout=30)
    assert process.returncode == 1
    lines = [line for _, line in seen]
    # nobody stares at a frozen prompt: a line within about a second, one per new attempt
    assert lines[0] == f"openai-fs mount: connecting to {silent_server} ..."
    assert seen[0][0] < 2.5, seen
    assert lines[1].startswith(f"openai-fs mount: connecting to {silent_server} (attempt 2/2 ")
    assert "no connection within 3 s" in lines[1]
    assert lines[2] == (f"openai-fs mount: cannot list files at {silent_server}: no connection "
                        "within 3 s (2 attempts)")
    assert len(lines) == 3, lines
    assert "connecting to" in (tmp_path / "log").read_text()       # the log has them too
    no_traceback("\n".join(lines), (tmp_path / "log").read_text())


def test_ctrl_c_while_the_daemon_connects_stops_it_without_a_traceback(tmp_path,
                                                                        silent_server):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "openai_fs", "mount", str(mnt), "--cache-dir",
         str(tmp_path / "c"), "--log-file", str(tmp_path / "log")],
        env={**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": silent_server},
        stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    assert "connecting to" in first
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=10) == 130
    assert rest.strip() == "openai-fs mount: interrupted; not mounted"
    no_traceback(rest)
    wait_for(lambda: str(mnt) not in run("ps", "axww", "-o", "args").stdout, timeout=10,
             message="the daemon to stop")
    assert not os.path.ismount(mnt)


# ------------------------------------------------------------ 3. no traceback, one usage format

def test_status_into_a_closed_pipe_ends_quietly(mount):
    mounted = mount()
    for command in (f"openai-fs status {mounted.path} | true",
                    f"openai-fs status --json {mounted.path} | head -1",
                    f"openai-fs status {mounted.path} | head -1"):
        script = f"set -o pipefail; {command.replace('openai-fs', sys.executable + ' -m openai_fs')}"
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                timeout=60)
        assert result.stderr == "", (command, result.stderr)
        assert result.returncode in (0, 141), (command, result.returncode)
    first = run("bash", "-c", f"{sys.executable} -m openai_fs status {mounted.path} | head -1")
    assert first.stdout.startswith("openai-fs ") and first.stderr == ""


def test_usage_errors_look_alike_across_commands(tmp_path):
    cases = [
        (["mount", "--cache-size", "lots", str(tmp_path)], "argument --cache-size: not a size"),
        (["mount", "-o", "cache_size=lots", str(tmp_path)], "not a size"),
        (["mount", "-o", "frobnicate", str(tmp_path)], "unknown mount option -o frobnicate"),
        (["mount", "--part-size", "1G", str(tmp_path)], "--part-size must be between"),
        (["unmount", "--timeout", "soon", str(tmp_path)], "argument --timeout"),
        (["status"], "the following arguments are required: mountpoint"),
        (["serve", "--port", "high"], "argument --port"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ]
    for args, expected in cases:
        result = openai_fs(*args, env={"OPENAI_API_KEY": KEY})
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("openai-fs: error: "), (args, lines)
        assert expected in lines[0] and "--help)" in lines[0], (args, lines)
        assert result.stdout == ""


def test_a_missing_or_dead_mount_is_one_line_not_a_traceback(tmp_path, mount):
    for command in ("status", "unmount"):
        result = openai_fs(command, str(tmp_path / "nowhere"))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"openai-fs {command}: {tmp_path / 'nowhere'} is not an openai-fs mount"]
    mounted = mount()
    mounted.process.kill()                  # the mount stays, with nobody serving it
    mounted.process.wait(timeout=10)
    mounted.stopped = True
    result = openai_fs("status", str(mounted.path))
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "the mount process is gone" in result.stderr and "fusermount3 -u" in result.stderr
    no_traceback(result.stderr)
    result = openai_fs("unmount", str(mounted.path))        # what the user then runs
    assert result.returncode == 0 and "had died" in result.stderr, result.stderr
    assert not os.path.ismount(mounted.path)


# --------------------------------------------------------------------------- 4. what is masked

def test_the_demo_log_masks_nothing_and_a_short_key_does_not_mask_words(mount, tmp_path):
    mnt = tmp_path / "demo"
    mnt.mkdir()
    result = openai_fs("mount", "--demo", str(mnt), "--log-file", str(tmp_path / "demo.log"),
                       env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
    try:
        assert result.returncode == 0, result.stderr
    finally:
        assert openai_fs("unmount", str(mnt)).returncode == 0
    log = (tmp_path / "demo.log").read_text()
    assert "demo: emulator with sample files" in log and f"mounted on {mnt}" in log
    assert "***" not in log
    # a key of a few characters (an emulator takes any) is no key: words that contain it stay
    mounted = mount(env={"OPENAI_API_KEY": "note"})
    mounted.expect_log("refused, batch files must be JSON Lines")
    with pytest.raises(OSError):
        (mounted / "batch" / "notes.txt").write_text("x")     # refused: .jsonl only
    mounted.unmount()
    log = mounted.log()
    assert "notes.txt" in log and "***" not in log


# ----------------------------------------------------------------------- 5. status agrees with itself

def test_the_uploads_header_counts_what_it_lists(mount, emulator):
    mounted = mount()
    path = mounted / "assistants" / "big.bin"
    with open(path, "wb") as handle:
        handle.write(b"x" * (9 * 1024 * 1024))       # past 8M: the upload starts now
        handle.flush()
        status = wait_for(lambda: (s := run(sys.executable, "-m", "openai_fs", "status",
                                            str(mounted.path)).stdout)
                          and "sent while it is still being written" in s and s,
                          message="the early upload to show")
        lines = status.splitlines()
        header = next(line for line in lines if line.startswith("Uploads in flight:"))
        assert header == "Uploads in flight: 1 (still being written)", status
        below = lines[lines.index(header) + 1]
        assert below.startswith("  assistants/big.bin: ") and "still being written" in below
    final = run(sys.executable, "-m", "openai_fs", "status", str(mounted.path)).stdout
    assert "Uploads in flight: none" in final and "Uploads completed: 1" in final


# ------------------------------------------------------------------------ 6. getfattr and df -i

def test_the_setup_command_of_the_readme_installs_getfattr():
    script = (ROOT / ".ci" / "setup").read_text()
    base = re.search(r"^packages=\(([^)]*)\)", script, re.M).group(1).split()
    assert "attr" in base, base          # getfattr, which the README's example runs


def test_df_i_shows_files_and_folders_used_of_a_space_larger_than_them(mount, seed):
    for n in range(3):
        seed(f"f{n}.txt", "assistants", b"x" * 1000)
    seed("g.txt", "batch_output", b"y")
    mounted = mount()
    os.listdir(mounted / "assistants")
    info = wait_for(lambda: (s := os.statvfs(mounted.path)).f_files - s.f_ffree == 4 + 11
                    and s, message="df -i to count 4 files and 11 folders")
    assert info.f_ffree <= info.f_files and info.f_favail == info.f_ffree
    output = run("df", "-i", str(mounted.path)).stdout.splitlines()[1].split()
    assert output[2] == "15" and int(output[3]) > 0 and "-" not in output[2], output


# -------------------------------------------------------------- 9. the root and statfs, large

def test_ls_of_the_root_and_df_do_not_list_a_large_account(mount, emulator):
    emulator.control.seed_files([{"filename": f"f{n:05}.txt", "purpose": "assistants",
                                  "content": b"z" * 10} for n in range(10_000)])
    emulator.control.set_config(page_cap=100, latency=0.05)     # 100 pages, 5 s to list it all
    mounted = mount()
    emulator.control.clear_requests()
    started = time.monotonic()
    listed = run("ls", str(mounted.path)).stdout.split()
    assert "assistants" in listed and len(listed) == 9
    assert time.monotonic() - started < 1.0
    assert emulator.control.requests() == []                      # no request at all
    started = time.monotonic()
    first = os.statvfs(mounted.path)
    assert time.monotonic() - started < 2.0                       # waits at most 0.5 s
    started = time.monotonic()
    for _ in range(20):                                          # a file manager's polling
        os.statvfs(mounted.path)
    assert time.monotonic() - started < 1.0
    assert first.f_blocks > 0
    # the count goes on in the background, one listing at a time, and df shows it when done
    done = wait_for(lambda: (s := os.statvfs(mounted.path)).f_files - s.f_ffree == 10_000 + 11
                    and s, timeout=60, message="the background count")
    assert (done.f_blocks - done.f_bfree) * done.f_frsize >= 100_000
    pages = [r for r in emulator.control.requests() if r["path"].endswith("/files")]
    assert len(pages) == 100, len(pages)       # one listing of everything, not one per statfs


# ------------------------------------------------------------------------------ 10. unmount

def test_an_idle_unmount_is_immediate(emulator, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": emulator.base_url}
    assert openai_fs("mount", str(mnt), "--cache-dir", str(tmp_path / "c"), "--log-file",
                     str(tmp_path / "log"), env=env).returncode == 0
    time.sleep(0.5)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "openai_fs", "unmount", str(mnt)],
                          capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert not os.path.ismount(mnt)
    assert took < 1.0, f"an idle unmount took {took:.2f} s"


def test_relative_paths_are_taken_from_where_the_command_was_run(emulator, tmp_path):
    """The mount goes on in the background from "/": a mount point, cache folder and log file
    named relative to the folder the command ran in still mean that folder."""
    (tmp_path / "mnt").mkdir()
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": emulator.base_url}
    done = openai_fs("mount", "mnt", "--cache-dir", "c", "--log-file", "mount.log", env=env,
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    try:
        assert os.path.ismount(tmp_path / "mnt")
        assert f"mounted on {tmp_path / 'mnt'}; log: {tmp_path / 'mount.log'}" in done.stderr
        (tmp_path / "mnt" / "vision" / "a.txt").write_bytes(b"relative")
        assert (tmp_path / "c" / "spool").is_dir()
        assert "uploaded vision/a.txt" in (tmp_path / "mount.log").read_text()
    finally:
        done = openai_fs("unmount", "mnt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def test_a_failure_to_mount_is_one_line_not_an_exception_group():
    """A failure inside the mount's nursery (fuse_session_mount refused) reaches the user as
    its own message."""
    import trio

    from openai_fs.commands import mount

    async def serve():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise mount.MountFailed("cannot mount on /x: fuse_session_mount failed")

    with pytest.raises(mount.MountFailed, match="fuse_session_mount failed"):
        mount._run(serve)


# ----------------------------------------------------------------------- 11. the memory cache

def test_status_says_what_the_memory_cache_holds_of_cache_size(mount, seed, emulator):
    data = os.urandom(1024 * 1024) * 40
    seed("big.bin", "vision", data)
    emulator.control.set_config(honour_range=True)    # the blocks through memory need Range
    mounted = mount("--cache-size", "64M", "--disk-cache-size", "0")
    with open(mounted / "vision" / "big.bin", "rb") as handle:
        handle.seek(20 * 1024 * 1024)
        assert handle.read(3 * 1024 * 1024) == data[20 * 1024 * 1024:23 * 1024 * 1024]

    def settled():      # read-ahead may still be bringing blocks: the same twice in a row
        before = mounted.status()["cache"]
        text = run(sys.executable, "-m", "openai_fs", "status", str(mounted.path)).stdout
        return before == mounted.status()["cache"] and (before, text)

    cache, text = wait_for(settled, message="the cache to settle")
    assert cache["memory_limit"] == 64 * 1024 * 1024           # --cache-size, as given
    assert cache["memory_bytes"] == cache["memory_blocks_bytes"] + cache["memory_rings_bytes"]
    assert cache["memory_blocks"] >= 3 and cache["memory_block_files"] == 1
    used = cache["memory_bytes"] / 1024 / 1024
    assert f"Cache in memory: {used:.1f} MiB of 64.0 MiB (--cache-size)" in text, text
    assert f"in {cache['memory_blocks']} blocks of 1 file read in pieces" in text
    assert "download rings, 0 of 2 in use" in text
