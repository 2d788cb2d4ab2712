"""Real mounts for tests: ``openai-fs mount -f`` in a subprocess against the emulator.

The ``mount`` fixture mounts with the given options and returns a :class:`Mounted`. At the end
of the test every mount is unmounted with ``fusermount3 -u``, its process must exit with 0, and
its log must hold no WARNING, ERROR or traceback that the test did not declare with
``Mounted.expect_log(pattern)``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from openai_fs.core.names import CONTROL_NAME

from fusetools import KEY, upload_on_server, wait_for

PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback")


class Mounted:
    """One running mount."""

    def __init__(self, path: Path, process: subprocess.Popen, log_file: Path, cache_dir: Path,
                 emulator) -> None:
        self.path = path
        self.process = process
        self.log_file = log_file
        self.cache_dir = cache_dir
        self.emulator = emulator
        self.expected: list[re.Pattern[str]] = []
        self.stopped = False

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    @property
    def control(self):
        return self.emulator.control

    def log(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        """What the mount process wrote to stdout/stderr (normally nothing)."""
        try:
            return self.output_file.read_text(encoding="utf-8", errors="replace")
        except (AttributeError, FileNotFoundError):
            return ""

    def expect_log(self, pattern: str) -> None:
        """Declare that a WARNING/ERROR line matching ``pattern`` is part of the test."""
        self.expected.append(re.compile(pattern))

    def status(self) -> dict:
        return json.loads((self.path / CONTROL_NAME).read_text())

    def unexpected_problems(self) -> list[str]:
        lines = self.log().splitlines() + self.output().splitlines()
        problems = []
        for index, line in enumerate(lines):
            if not PROBLEM.search(line):
                continue
            if line.startswith("Traceback") or line.startswith(" "):
                # a traceback belongs to the line before it
                context = lines[index - 1] if index else line
                if any(p.search(context) for p in self.expected):
                    continue
            if any(pattern.search(line) for pattern in self.expected):
                continue
            problems.append(line)
        return problems

    def unmount(self, *, check: bool = True) -> int:
        """``fusermount3 -u`` and wait for the process; returns its exit status."""
        if self.stopped:
            return self.process.returncode
        result = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True,
                                text=True)
        if result.returncode != 0 and check:
            raise AssertionError(f"fusermount3 -u failed: {result.stderr}")
        code = self.process.wait(timeout=30)
        self.stopped = True
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        self.stopped = True


class Mounter:
    def __init__(self, tmp_path: Path, emulator) -> None:
        self.tmp_path = tmp_path
        self.emulator = emulator
        self.mounts: list[Mounted] = []

    def __call__(self, *options: str, env: dict[str, str] | None = None,
                 cache_dir: Path | None = None, name: str = "mnt",
                 wait: bool = True) -> Mounted:
        path = self.tmp_path / f"{name}{len(self.mounts)}"
        path.mkdir()
        cache_dir = cache_dir or self.tmp_path / f"cache{len(self.mounts)}"
        log_file = self.tmp_path / f"mount{len(self.mounts)}.log"
        full_env = {**os.environ, "OPENAI_API_KEY": KEY,
                    "OPENAI_BASE_URL": self.emulator.base_url, **(env or {})}
        for unset in [k for k, v in full_env.items() if v is None]:
            del full_env[unset]
        command = [sys.executable, "-m", "openai_fs", "mount", "-f", str(path),
                   "--cache-dir", str(cache_dir), "--log-file", str(log_file), *options]
        # the process's own output goes to a file (a pipe nobody reads could fill and block
        # it); it is checked for problems like the log
        output = open(self.tmp_path / f"mount{len(self.mounts)}.out", "w")  # noqa: SIM115
        process = subprocess.Popen(command, env=full_env, stdout=output,
                                   stderr=subprocess.STDOUT, text=True)
        output.close()
        mounted = Mounted(path, process, log_file, cache_dir, self.emulator)
        mounted.output_file = Path(output.name)
        self.mounts.append(mounted)
        if wait:
            def live() -> bool:
                if process.poll() is not None:
                    raise AssertionError(f"the mount exited with {process.returncode}: "
                                         f"{mounted.output()}\n{mounted.log()}")
                return os.path.ismount(path)
            wait_for(live, message=f"{path} to be mounted")
        return mounted

    def cleanup(self) -> list[str]:
        failures = []
        for mounted in self.mounts:
            if not mounted.stopped and mounted.process.poll() is not None:
                # nobody stopped it: the mount process ended by itself
                failures.append(f"{mounted.path}: the mount process exited by itself with "
                                f"{mounted.process.returncode}\n{mounted.output()}\n"
                                f"{mounted.log()[-3000:]}")
            if not mounted.stopped:
                if mounted.process.poll() is None and os.path.ismount(mounted.path):
                    try:
                        code = mounted.unmount(check=False)
                    except subprocess.TimeoutExpired:
                        mounted.kill()
                        failures.append(f"{mounted.path}: did not exit after unmount")
                        continue
                    if code != 0:
                        failures.append(f"{mounted.path}: exited with {code}\n{mounted.log()}")
                else:
                    mounted.kill()
            problems = mounted.unexpected_problems()
            if problems:
                failures.append(f"{mounted.path}: unexpected log lines:\n" + "\n".join(problems))
            if os.path.ismount(mounted.path):
                subprocess.run(["fusermount3", "-u", "-z", str(mounted.path)])
        return failures


def _fuse_available() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (apt-get install fuse3)"
    return None


@pytest.fixture
def mount(tmp_path, emulator, request):
    """Mount the emulator: ``mounted = mount("--dir-ttl", "5")``."""
    problem = _fuse_available()
    if problem:
        # FUSE is a hard requirement of this suite: say so loudly instead of skipping
        pytest.fail(f"FUSE tests need FUSE: {problem}")
    mounter = Mounter(tmp_path, emulator)
    yield mounter
    failures = mounter.cleanup()
    if failures:
        pytest.fail("\n\n".join(failures))


@pytest.fixture
def seed(emulator):
    """``seed(name, purpose, content)`` -> the file object, seeded straight into the emulator."""
    def seed_one(filename: str, purpose: str = "assistants", content: bytes = b"hello\n",
                 **extra) -> dict:
        if len(content) > 4 * 1024 * 1024 and not extra:
            return upload_on_server(emulator, filename, purpose, content)
        return emulator.control.seed_file(filename, purpose, content, **extra)
    return seed_one
