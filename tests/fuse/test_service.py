"""Running the mount as a daily service: its own log, the example systemd unit, and /etc/fstab
through mount(8) and fuse3's mount.fuse3 (as root, at boot, and as a user)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from checktools import openai_fs
from fusetools import KEY, run

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "openai-fs@.service"
SCRIPT = Path(sys.executable).parent / "openai-fs"
NOBODY = 65534


def unmount(path: Path) -> None:
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


# ----------------------------------------------------------------------------------- the log

def test_each_mount_logs_to_a_private_file_of_its_own_that_status_names(emulator, seed,
                                                                        tmp_path):
    seed("a.txt", "vision", b"a")
    state = tmp_path / "state"
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": emulator.base_url,
           "XDG_STATE_HOME": str(state)}
    mounts = [tmp_path / "one" / "openai", tmp_path / "two" / "openai"]
    logs = []
    try:
        for mnt in mounts:
            mnt.mkdir(parents=True)
            result = openai_fs("mount", str(mnt), "--cache-dir", str(tmp_path / "c"), env=env)
            assert result.returncode == 0, result.stderr
            expected = state / "openai-fs" / ("-".join(mnt.parts[1:]) + ".log")
            # the one line a successful mount prints says where its log is
            assert result.stderr.splitlines() == [
                f"openai-fs mount: {emulator.base_url} mounted on {mnt}; log: {expected}"]
            logs.append(expected)
            assert (mnt / "vision" / "a.txt").read_bytes() == b"a"
            status = run(sys.executable, "-m", "openai_fs", "status", str(mnt)).stdout
            assert f"\nLog: {expected}\n" in status
        assert logs[0] != logs[1]
        for log in logs:
            assert stat.S_IMODE(log.stat().st_mode) == 0o600
            assert "mounted on" in log.read_text()
        assert stat.S_IMODE((state / "openai-fs").stat().st_mode) == 0o700
    finally:
        for mnt in mounts:
            if os.path.ismount(mnt):
                assert openai_fs("unmount", str(mnt)).returncode == 0
    assert all("unmounted" in log.read_text() for log in logs)


def test_a_log_file_others_could_read_is_made_private(emulator, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "logs" / "old.log"
    log.parent.mkdir()
    log.write_text("from an older version\n")
    log.chmod(0o644)
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": emulator.base_url}
    result = openai_fs("mount", str(mnt), "--cache-dir", str(tmp_path / "c"), "--log-file",
                       str(log), env=env)
    try:
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert log.read_text().startswith("from an older version\n")
    finally:
        assert openai_fs("unmount", str(mnt)).returncode == 0


def test_log_file_dash_sends_a_background_mounts_log_to_its_standard_error(emulator, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    stderr = tmp_path / "stderr"
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": emulator.base_url}
    with open(stderr, "w") as sink:
        result = subprocess.run([sys.executable, "-m", "openai_fs", "mount", str(mnt),
                                 "--cache-dir", str(tmp_path / "c"), "--log-file", "-"],
                                stderr=sink, env={**os.environ, **env}, timeout=60)
    try:
        assert result.returncode == 0, stderr.read_text()
        assert f"mounted on {mnt}; log: standard error" in stderr.read_text()
    finally:
        assert openai_fs("unmount", str(mnt)).returncode == 0
    # the daemon kept the standard error it was started with, to its last line
    text = stderr.read_text()
    assert re.search(r" INFO openai_fs.commands.mount: unmounted ", text), text


# ---------------------------------------------------------------------------- systemd unit

def unit_settings() -> tuple[dict[str, str], list[str]]:
    """The unit's Environment= and ExecStart=, as written."""
    environment, exec_start = {}, []
    for line in UNIT.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            name, _, text = value.partition("=")
            environment[name] = text
        elif key == "ExecStart":
            exec_start = shlex.split(value)
    return environment, exec_start


def test_the_example_unit_is_valid_for_systemd(tmp_path):
    instance = run("systemd-escape", "--path", "--template", "openai-fs@.service",
                   str(tmp_path / "openai")).stdout.strip()
    copy = tmp_path / "units" / instance
    copy.parent.mkdir()
    shutil.copy(UNIT, copy)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(["systemd-analyze", "verify", "--user", "--man=no", str(copy)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime),
                                 "HOME": str(tmp_path)})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text = UNIT.read_text()
    assert "Type=notify" in text and "--foreground" in text and "--log-file -" in text


def test_the_example_unit_mounts_in_the_foreground_logs_to_the_journal_and_stops(emulator,
                                                                                 seed,
                                                                                 tmp_path):
    """What systemd would run for openai-fs@ESCAPED.service: the ExecStart line with its
    specifiers expanded (%h the home, %f the unescaped instance), in the unit's environment,
    standard error a stream the journal would recognise, and a notify socket to hear READY=1
    on; then the SIGTERM that `systemctl stop` sends."""
    seed("unit.txt", "vision", b"served by the unit")
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "openai-fs").symlink_to(SCRIPT)      # pip install --user
    config = home / ".config" / "openai-fs"
    config.mkdir(parents=True)
    (config / "api-key").write_text(KEY + "\n")
    (config / "api-key").chmod(0o600)
    (config / "environment").write_text(f"OPENAI_BASE_URL={emulator.base_url}\n")
    mnt = home / "openai"
    mnt.mkdir()
    instance = run("systemd-escape", "--path", str(mnt)).stdout.strip()
    unescaped = run("systemd-escape", "--unescape", "--path", instance).stdout.strip()
    assert unescaped == str(mnt)

    def expand(text: str) -> str:
        return text.replace("%h", str(home)).replace("%f", unescaped)

    environment, exec_start = unit_settings()
    env = {"HOME": str(home), "LANG": "C.UTF-8", "XDG_CACHE_HOME": str(tmp_path / "cache"),
           **{name: expand(value) for name, value in environment.items()}}
    for line in (config / "environment").read_text().splitlines():   # EnvironmentFile=
        name, _, value = line.partition("=")
        env[name] = value
    notify = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(30)
    env["NOTIFY_SOCKET"] = str(notify)
    journal = open(tmp_path / "journal", "w")
    info = os.fstat(journal.fileno())
    env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
    process = subprocess.Popen([expand(word) for word in exec_start], env=env,
                               stdin=subprocess.DEVNULL, stdout=journal, stderr=journal)
    journal.close()
    try:
        message = listener.recv(4096).decode()
        assert message.startswith("READY=1\n"), message
        assert f"mounted on {mnt}" in message
        assert os.path.ismount(mnt)            # live when systemd is told
        assert (mnt / "vision" / "unit.txt").read_bytes() == b"served by the unit"
        process.send_signal(signal.SIGTERM)   # systemctl --user stop
        assert process.wait(timeout=30) == 0
        assert not os.path.ismount(mnt)
    finally:
        listener.close()
        if process.poll() is None:
            process.kill()
        unmount(mnt)
    lines = (tmp_path / "journal").read_text().splitlines()
    # each line carries its priority for the journal, which adds the time itself
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), lines
    assert any(line.startswith("<6>openai_fs.commands.mount: openai-fs ") for line in lines)
    assert any("unmounted" in line for line in lines)


# ------------------------------------------------------------------- /etc/fstab and mount(8)

@pytest.fixture
def public_dir():
    """A folder other users can reach (pytest's are 0700), for a mount run as nobody."""
    folder = Path(tempfile.mkdtemp(prefix="openai-fs-fstab-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def in_own_mount_namespace(script: str, tmp_path: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run ``script`` with ``openai-fs`` in /usr/local/bin, which is on the PATH that mount(8)
    gives its helpers, in a mount namespace of its own: the machine's /usr/local/bin and
    /etc/fstab stay as they are for everyone else."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "openai-fs").exists():
        (bin_dir / "openai-fs").symlink_to(SCRIPT)
    bin_dir.chmod(0o755)
    prologue = f"set -e\nmount --bind {shlex.quote(str(bin_dir))} /usr/local/bin\n"
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           prologue + script], capture_output=True, text=True, timeout=120,
                          **kwargs)


def key_file(folder: Path, owner: int = 0) -> Path:
    path = folder / "api-key"
    path.write_text(KEY)
    os.chown(path, owner, owner)
    path.chmod(0o600)
    return path


def test_mount_t_fuse_openai_fs_with_o_options(emulator, seed, tmp_path):
    """mount(8) -> mount.fuse3 -> `openai-fs openai MNT -o rw,...,dev,suid` from root's PATH."""
    seed("fstab.txt", "vision", b"mounted by mount(8)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    options = (f"api_key_file={key_file(tmp_path)},base_url={emulator.base_url},dir_ttl=5,"
               f"cache_dir={tmp_path / 'c'},log_file={tmp_path / 'log'},_netdev,ro")
    python = shlex.quote(sys.executable)
    result = in_own_mount_namespace(f"""
mount -t fuse.openai-fs -o {options} openai {mnt}
trap 'fusermount3 -u -z {mnt} 2>/dev/null || true' EXIT
cat {mnt}/vision/fstab.txt; echo
{python} -m openai_fs status --json {mnt} | grep -c '"read_only": true'
touch {mnt}/assistants/new.txt 2>&1 || true
{python} -m openai_fs unmount {mnt}
""", tmp_path, env={**os.environ, "OPENAI_BASE_URL": "", "OPENAI_API_KEY": ""})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "mounted by mount(8)"
    assert lines[1] == "1"                              # -o ro reached the mount
    assert "Read-only file system" in lines[2]
    assert "Traceback" not in (tmp_path / "log").read_text()


def test_an_fstab_line_works_without_any_environment(emulator, seed, tmp_path):
    """The man page's boot-time line, mounted by `mount MNT` with nothing in the environment
    (as systemd's mount units run it): key, server and options all come from the line."""
    seed("boot.txt", "batch_output", b"from fstab")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"openai  {mnt}  fuse.openai-fs  noauto,x-systemd.automount,_netdev,"
        f"api_key_file={key_file(tmp_path)},base_url={emulator.base_url},"
        f"cache_dir={tmp_path / 'c'},log_file={tmp_path / 'log'}  0 0\n")
    result = in_own_mount_namespace(f"""
env -i mount -T {fstab} {mnt}
trap 'fusermount3 -u -z {mnt} 2>/dev/null || true' EXIT
cat {mnt}/batch_output/boot.txt; echo
env -i {shlex.quote(sys.executable)} -m openai_fs unmount {mnt}
""", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "from fstab"
    log = (tmp_path / "log").read_text()
    assert "mounted on" in log and "unmounted" in log and "Traceback" not in log


def test_a_user_mounts_an_fstab_line_marked_user_as_themselves(emulator, seed, public_dir,
                                                                tmp_path):
    """`user` in fstab lets a user run `mount MNT`; mount(8) then runs the helper, and so
    openai-fs, as that user (nobody here), with the options of the line plus the ones `user`
    implies (noexec, nosuid, nodev). The first half is done for real with a stand-in that
    records how it was run, because the Python of this machine lives under /root, where other
    users cannot enter; the recorded command line is then run for real (as root), so the
    options mount(8) passes must be ones openai-fs accepts and mounts with."""
    seed("mine.txt", "vision", b"a user's mount")
    mnt = public_dir / "openai"
    mnt.mkdir()
    os.chown(mnt, NOBODY, NOBODY)
    record = public_dir / "record"
    record.touch()
    os.chown(record, NOBODY, NOBODY)
    stand_in = public_dir / "bin" / "openai-fs"
    stand_in.parent.mkdir()
    stand_in.write_text(f'#!/bin/sh\n{{ id -u; for arg; do echo "$arg"; done; }} > {record}\n')
    stand_in.chmod(0o755)
    stand_in.parent.chmod(0o755)
    key = key_file(public_dir)
    line = (f"openai  {mnt}  fuse.openai-fs  noauto,user,api_key_file={key},"
            f"base_url={emulator.base_url}  0 0\n")
    fstab = public_dir / "fstab"
    fstab.write_text(line)
    fstab.chmod(0o644)
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"set -e; mount --bind {stand_in.parent} /usr/local/bin; mount --bind {fstab} "
         f"/etc/fstab; setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups mount {mnt}"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    uid, *argv = record.read_text().splitlines()
    assert uid == str(NOBODY)                               # run as the user, not root
    assert argv[:2] == ["openai", str(mnt)] and argv[2] == "-o"
    assert {"noexec", "nosuid", "nodev", f"api_key_file={key}"} <= set(argv[3].split(","))
    # the same command line, for real: openai-fs takes every option mount(8) passed
    options = argv[3] + f",cache_dir={tmp_path / 'c'},log_file={tmp_path / 'log'}"
    done = subprocess.run([str(SCRIPT), argv[0], argv[1], "-o", options], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    try:
        assert done.returncode == 0, done.stderr
        assert (mnt / "vision" / "mine.txt").read_bytes() == b"a user's mount"
    finally:
        assert openai_fs("unmount", str(mnt)).returncode == 0
        unmount(mnt)


def test_the_program_path_form_needs_openai_fs_on_no_path(emulator, seed, tmp_path):
    """When openai-fs is not on root's PATH (a clone's .venv): type fuse, with the program's
    path before a # in the source field."""
    seed("venv.txt", "vision", b"found by its path")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = subprocess.run(
        ["mount", "-t", "fuse", "-o",
         f"api_key_file={key_file(tmp_path)},base_url={emulator.base_url},"
         f"cache_dir={tmp_path / 'c'},log_file={tmp_path / 'log'}",
         f"{SCRIPT}#openai", str(mnt)],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    try:
        assert result.returncode == 0, result.stderr
        assert (mnt / "vision" / "venv.txt").read_bytes() == b"found by its path"
    finally:
        done = openai_fs("unmount", str(mnt))
        unmount(mnt)
    assert done.returncode == 0, done.stderr
