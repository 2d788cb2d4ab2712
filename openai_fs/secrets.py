"""The API key: loading it, keeping it out of reprs, and scrubbing it from text.

The key is held in a :class:`Secret`, whose ``repr``/``str`` never show it; only
:meth:`Secret.reveal` returns it, and only the HTTP auth hook calls that.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

#: Anything that looks like an OpenAI key (``sk-...``, ``sk-proj-...``), masked or not.
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*]{3,}")


class Secret:
    """A string that does not show itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self):  # never pickle the value into some file by accident
        raise TypeError("a Secret cannot be pickled")


class KeyFileError(Exception):
    """The key file cannot be used (missing, empty, or readable by others)."""


def redact(text: str, secret: Secret | None = None) -> str:
    """``text`` with the key, and anything shaped like a key, replaced by ``***``."""
    if secret is not None and secret.reveal():
        text = text.replace(secret.reveal(), "***")
    return _KEY_LIKE.sub("sk-***", text)


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
