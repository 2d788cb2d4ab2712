"""Checks shared by the stress, bad-input and secrets tests: what the server holds, what a
process uses, and running a command as another user."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path


MiB = 1024 * 1024


def live_files(emulator, purpose: str | None = None) -> list[dict]:
    """The files the emulator holds (not deleted), oldest first."""
    files = [f for f in emulator.control.state()["files"] if not f.get("deleted")]
    return [f for f in files if purpose is None or f["purpose"] == purpose]


def server_sha256(emulator, file_id: str) -> str:
    """SHA-256 of what the server holds for a file (whatever its purpose), streamed (never the
    whole file in memory)."""
    digest = hashlib.sha256()
    with emulator.control.stored_content_stream(file_id) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def server_range(emulator, file_id: str, start: int, length: int) -> bytes:
    """Bytes ``[start, start+length)`` of what the server holds for a file."""
    return emulator.control.stored_content(file_id, start, length)


def peak_rss(pid: int) -> int:
    """The peak resident memory (``VmHWM``) of a running process, in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def files_under(folder: Path) -> list[Path]:
    """Every regular file below ``folder``."""
    return sorted(path for path in Path(folder).rglob("*") if path.is_file())


def openai_fs(*args: str, env: dict[str, str | None] | None = None, timeout: float = 120,
              **kwargs) -> subprocess.CompletedProcess:
    """``openai-fs ARGS`` with the environment changed by ``env`` (None removes a variable);
    its output as text, whatever its exit status. ``kwargs`` go to :func:`subprocess.run`."""
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "openai_fs", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={k: v for k, v in full.items() if v is not None}, **kwargs)


def need(tool: str, package: str) -> str:
    """The path of a program the test needs; fails (never skips) when it is missing."""
    found = shutil.which(tool)
    if found is None:
        raise AssertionError(f"{tool} is missing: apt-get install {package}")
    return found


def as_user(uid: int, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``command`` as ``uid`` (group ``uid``, no supplementary groups), its output as text."""
    setpriv = need("setpriv", "util-linux")
    return subprocess.run([setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           *command], capture_output=True, text=True, timeout=timeout, cwd="/")


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """A tmpfs of ``size`` mounted on ``folder`` for the duration of the block."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(folder)], check=True, capture_output=True, timeout=30)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True, capture_output=True,
                       timeout=30)
