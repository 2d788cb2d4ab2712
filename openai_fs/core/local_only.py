"""Names of files that stay local to the mount: the temporaries that editors, office suites and
file managers write beside the files they work on (docs/SEMANTICS.md, "Files kept local").

Sync clients keep such files off the server; an object-store mount that uploads them leaves the
user's OpenAI files littered with swap files, backups and lock files. A file whose name matches
:data:`DEFAULT_PATTERNS` (extended by ``--local-only GLOB``, or emptied by ``--no-local-only``)
behaves as an ordinary file while the mount lives, and is never sent. Bare numbers are not in
the list (real files use them); the one exception is vim's writability probe (``4913``,
``5036``, ...), and only when it is made the way vim makes it (see :func:`is_vim_probe`).
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Iterable

#: shell patterns (fnmatch, case-sensitive) of the names kept local by default
DEFAULT_PATTERNS: tuple[str, ...] = (
    ".*.swp", ".*.swo", ".*.swn", ".*.swx",     # vim's swap files
    "*~",                                         # backups: vim, emacs, gedit, nano, kate
    "#*#", ".#*",                                 # emacs auto-save and lock files
    "*.kate-swp",                                 # kate's swap files
    ".~lock.*#",                                  # LibreOffice lock files
    "~$*",                                        # Microsoft Office owner files
    ".DS_Store", "._*",                           # macOS Finder
    "Thumbs.db", "ehthumbs.db", "desktop.ini",    # Windows Explorer
    ".directory",                                 # KDE Dolphin
)
#: vim tries 4913, then adds 123 until the name is free
_VIM_PROBE_FIRST = 4913
_VIM_PROBE_STEP = 123


class LocalOnly:
    """Which names stay local: the default patterns (unless ``defaults`` is off) and
    ``extra`` ones."""

    def __init__(self, extra: Iterable[str] = (), *, defaults: bool = True) -> None:
        self.patterns = (DEFAULT_PATTERNS if defaults else ()) + tuple(extra)
        self.vim_probe = defaults
        translated = "|".join(fnmatch.translate(pattern) for pattern in self.patterns)
        self._match = re.compile(translated).match if translated else None

    def matches(self, name: str) -> bool:
        return self._match is not None and self._match(name) is not None

    def is_vim_probe(self, name: str, flags: int) -> bool:
        """vim's check that it may write into a directory: an exclusive create of ``4913``
        (or ``5036``, ``5159``, ...) that it closes at once, empty, and removes."""
        return (self.vim_probe and bool(flags & os.O_EXCL) and name.isdigit()
                and len(name) < 8 and int(name) >= _VIM_PROBE_FIRST
                and (int(name) - _VIM_PROBE_FIRST) % _VIM_PROBE_STEP == 0)
