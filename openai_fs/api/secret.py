"""The API key in memory: a :class:`Secret` whose ``repr``/``str`` never show it (only
:meth:`Secret.reveal` returns it, and only the HTTP auth hook calls that), and :func:`redact`,
which scrubs it from any text before that text is logged or raised."""

from __future__ import annotations

import re

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


def redact(text: str, secret: Secret | None = None) -> str:
    """``text`` with the key, and anything shaped like a key, replaced by ``***``."""
    if secret is not None and secret.reveal():
        text = text.replace(secret.reveal(), "***")
    return _KEY_LIKE.sub("sk-***", text)
