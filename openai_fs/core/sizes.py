"""Sizes as people write them: ``512``, ``64K``, ``1.5G``, ``256MiB`` (binary units), for the
mount's options and the emulator's alike."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


def parse_size(text: str) -> int:
    """Bytes; a ``ValueError`` whose text can be shown to the user as is when ``text`` is not
    a size."""
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"not a size: {text!r} (use a number with an optional K, M, G or T)")
    number, unit, _ = match.groups()
    return int(float(number) * _UNITS[unit.lower()])
