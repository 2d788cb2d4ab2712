"""How a server filename becomes a path component, and back.

A filename on the server is any string; a path component cannot contain ``/`` or NUL, cannot be
``.`` or ``..``, and holds at most 255 bytes. The rule (documented in docs/SEMANTICS.md):

* ``/`` is shown as ``／`` (U+FF0F FULLWIDTH SOLIDUS) and NUL as ``␀`` (U+2400).
* A name that is exactly ``.`` or ``..`` is shown as ``．`` or ``．．`` (U+FF0E).
* A character that this rule itself produces (``／``, ``␀``, and ``．`` in a name that consists
  only of them), and the escape mark ``‛`` (U+201B), are shown with a ``‛`` before them when
  the server name really contains them, so the mapping stays one-to-one.

:func:`encode` and :func:`decode` are exact inverses (``decode(encode(s)) == s``). A name that
is still too long, or that several files in one directory share, is shown with the file's id
in it (:func:`with_id`); such names resolve through the directory listing, and the server
name is always in the ``user.openai.filename`` attribute.
"""

from __future__ import annotations

import os

MAX_NAME_BYTES = 255
ESCAPE = "\u201b"          # ‛
SLASH = "\uff0f"           # ／
NUL = "\u2400"             # ␀
DOT = "\uff0e"             # ．
_ESCAPED = {SLASH, NUL, ESCAPE}


def name_bytes(name: str) -> bytes:
    """The bytes of a path component (server names may hold lone surrogates)."""
    return name.encode("utf-8", "surrogatepass")


def encode(filename: str) -> str:
    """The path component for a server filename (possibly still over 255 bytes)."""
    if filename in (".", ".."):
        return DOT * len(filename)
    if filename in (DOT, DOT * 2):
        return (ESCAPE + DOT) * len(filename)
    out = []
    for char in filename:
        if char == "/":
            out.append(SLASH)
        elif char == "\0":
            out.append(NUL)
        elif char in _ESCAPED:
            out.append(ESCAPE + char)
        else:
            out.append(char)
    return "".join(out)


def decode(component: str) -> str:
    """The server filename a path component stands for (inverse of :func:`encode`)."""
    if component in (DOT, DOT * 2):
        return "." * len(component)
    out = []
    chars = iter(component)
    for char in chars:
        if char == ESCAPE:
            out.append(next(chars, ESCAPE))
        elif char == SLASH:
            out.append("/")
        elif char == NUL:
            out.append("\0")
        else:
            out.append(char)
    return "".join(out)


def fits(component: str) -> bool:
    return 0 < len(name_bytes(component)) <= MAX_NAME_BYTES


def with_id(component: str, file_id: str) -> str:
    """``stem (file-id).ext``: a name that carries the file's id, cut to fit 255 bytes.

    Used for every file of a name that several files in one directory share, and for a name
    too long to show. The extension is kept (programs choose by it); the stem is shortened.
    """
    stem, ext = os.path.splitext(component)
    if len(name_bytes(ext)) > 32:           # not a real extension, just a dot in a long name
        stem, ext = component, ""
    tag = f" ({file_id})"
    budget = MAX_NAME_BYTES - len(name_bytes(tag + ext))
    stem = _cut(stem, budget)
    return (stem + tag).lstrip() + ext


def _cut(text: str, budget: int) -> str:
    if len(name_bytes(text)) <= budget:
        return text
    cut = name_bytes(text)[:max(0, budget)]
    # do not split a character: drop a trailing partial UTF-8 sequence
    return cut.decode("utf-8", "ignore")
