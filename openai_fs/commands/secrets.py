"""The API key: read from a key file or the environment, and kept out of a mount's
``/proc/PID/environ`` (see :func:`restart_without_key`). Holding it and scrubbing it from
text is :mod:`openai_fs.api.secret`'s job."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from openai_fs.api.secret import Secret


class KeyFileError(Exception):
    """The key file cannot be used (missing, empty, or readable by others)."""


def read_key_file(path: str | os.PathLike[str]) -> Secret:
    """Read a key from a file that only its owner can read.

    A key file readable by group or others is refused: the key would be one ``cat`` away from
    every other user of the machine.
    """
    path = Path(path)
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyFileError(f"cannot read the API key file {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"the API key file {path} is readable by other users (mode "
            f"{stat.filemode(info.st_mode)}); run: chmod 600 {path}")
    key = text.strip()
    if not key:
        raise KeyFileError(f"the API key file {path} is empty")
    return Secret(key)


def key_from_environment(environ: os._Environ[str] | dict[str, str] | None = None) -> Secret | None:
    environ = os.environ if environ is None else environ
    value = environ.get("OPENAI_API_KEY", "").strip()
    return Secret(value) if value else None


# --------------------------------------------- the key out of a mount's environment

#: set in a mount run again by :func:`restart_without_key`: the descriptor holding its key
KEY_FD_VARIABLE = "OPENAI_FS_KEY_FD"


def restart_without_key() -> None:
    """Run this program again with ``OPENAI_API_KEY`` out of its environment, the key handed
    over through a pipe (see :func:`take_handed_over_key`).

    A process's first environment stays readable in ``/proc/PID/environ`` for its whole life,
    by every process of the same user (Yama's ptrace restrictions do not cover it), and a
    mount lives for days. Changing ``os.environ`` does not change what that file shows; only a
    new program image does. Returns (leaving the key where it was) when there is no key in the
    environment or the program cannot be run again.
    """
    value = os.environ.get("OPENAI_API_KEY", "")
    if not value.strip() or not sys.orig_argv or not sys.executable:
        return
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, value.encode())     # a key is far smaller than a pipe holds
    finally:
        os.close(write_end)
    environment = {name: text for name, text in os.environ.items() if name != "OPENAI_API_KEY"}
    environment[KEY_FD_VARIABLE] = str(read_end)
    os.set_inheritable(read_end, True)
    try:
        os.execve(sys.executable, sys.orig_argv, environment)
    except OSError:
        os.close(read_end)


def take_handed_over_key() -> bool:
    """In a program run by :func:`restart_without_key`: read the key from its descriptor and
    put it back in ``os.environ`` (the process's memory, not its first environment), so the
    rest of the program finds it where it always does. False in any other program."""
    fd_text = os.environ.pop(KEY_FD_VARIABLE, None)
    if fd_text is None:
        return False
    fd = int(fd_text)
    try:
        chunks = []
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    os.environ["OPENAI_API_KEY"] = b"".join(chunks).decode()
    return True
