"""How a server filename becomes a path component, and back.

A filename on the server is any string; a path component cannot contain ``/`` or NUL, cannot be
``.`` or ``..``, and holds at most 255 bytes. The rule (documented in docs/SEMANTICS.md):

* ``/`` is shown as ``／`` (U+FF0F FULLWIDTH SOLIDUS) and NUL as ``␀`` (U+2400).
* A name that is exactly ``.`` or ``..`` is shown as ``．`` or ``．．`` (U+FF0E).
* A character that this rule itself produces (``／``, ``␀``, and ``．`` in a name that consists
  only of them) is shown with the escape mark ``‛`` (U+201B) before it when the server name
  really contains it, and a ``‛`` of the server name that comes right before such a character
  (or before another ``‛``) is doubled, so the mapping stays one-to-one. Any other ``‛`` is
  shown as it is.

:func:`encode` and :func:`decode` are exact inverses (``decode(encode(s)) == s``). A name typed
by a user that :func:`encode` could not have produced (:func:`is_canonical` is false) would not
survive the round trip, so the mount refuses to create it. A name that is still too long, or
that several files in one directory share, is shown with the file's id in it
(:func:`with_id`); such names resolve through the directory listing, and the server name is
always in the ``user.openai.filename`` attribute.
"""

from __future__ import annotations

import os

MAX_NAME_BYTES = 255
#: the hidden file of the root that answers with the mount's status (``openai-fs status``),
#: which no listing shows; here rather than in the namespace so that ``openai-fs status`` and
#: ``unmount`` know it without loading the HTTP client (they start in a tenth of the time)
CONTROL_NAME = ".openai-fs-status"
ESCAPE = "\u201b"          # ‛
SLASH = "\uff0f"           # ／
NUL = "\u2400"             # ␀
DOT = "\uff0e"             # ．
_ESCAPED = (SLASH, NUL, ESCAPE)


def name_bytes(name: str) -> bytes:
    """The bytes of a path component (server names may hold lone surrogates)."""
    return name.encode("utf-8", "surrogatepass")


def encode(filename: str) -> str:
    """The path component for a server filename (possibly still over 255 bytes)."""
    if filename in (".", ".."):
        return DOT * len(filename)
    if filename in (DOT, DOT * 2):
        return (ESCAPE + DOT) * len(filename)
    if filename in (ESCAPE + DOT, (ESCAPE + DOT) * 2):
        # would read as an escaped dot name: double the marks
        return filename.replace(ESCAPE, ESCAPE * 2)
    out = []
    for index, char in enumerate(filename):
        if char == "/":
            out.append(SLASH)
        elif char == "\0":
            out.append(NUL)
        elif char in (SLASH, NUL):
            out.append(ESCAPE + char)
        elif char == ESCAPE and filename[index + 1:index + 2] in ("/", "\0", SLASH, NUL,
                                                                  ESCAPE):
            out.append(ESCAPE + ESCAPE)     # else decode would read it as an escape
        else:
            out.append(char)
    return "".join(out)


def decode(component: str) -> str:
    """The server filename a path component stands for (inverse of :func:`encode`)."""
    if component in (DOT, DOT * 2):
        return "." * len(component)
    if component in (ESCAPE + DOT, (ESCAPE + DOT) * 2):
        return DOT * (len(component) // 2)
    out = []
    index = 0
    while index < len(component):
        char = component[index]
        following = component[index + 1:index + 2]
        if char == ESCAPE and following in _ESCAPED:
            out.append(following)
            index += 2
            continue
        out.append({SLASH: "/", NUL: "\0"}.get(char, char))
        index += 1
    return "".join(out)


def is_canonical(component: str) -> bool:
    """Whether this name is one :func:`encode` produces (so it survives a round trip)."""
    return encode(decode(component)) == component


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
    tag = f" ({file_id})" if stem else f"({file_id})"
    budget = MAX_NAME_BYTES - len(name_bytes(tag + ext))
    return cut(stem, budget) + tag + ext


def cut(text: str, budget: int) -> str:
    """``text`` shortened to at most ``budget`` bytes without splitting a character."""
    raw = name_bytes(text)
    if len(raw) <= budget:
        return text
    raw = raw[:max(0, budget)]
    for trim in range(4):          # a character takes at most 4 bytes
        try:
            return raw[:len(raw) - trim].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", "ignore")  # pragma: no cover - not reachable for valid input
