"""Local files only the mounting user can read (docs/SEMANTICS.md, "Security").

Everything the mount writes (spool files and their sidecars, cached content, unsent bytes) is
``0600``, in ``0700`` folders that the mount itself creates. The folder the user names with
``--cache-dir`` (or the default ``~/.cache/openai-fs``) is never chmod-ed unless the mount
created it: a folder that other users can write to is refused (they could swap what the mount
writes there), and one that they can only read (``--cache-dir ~``) gets a ``0700`` folder of
the mount's own inside it, :data:`OWN_FOLDER`, that holds everything.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: the mount's own folder inside a --cache-dir that other users can read
OWN_FOLDER = "openai-fs-cache"


class UnsafeFolder(Exception):
    """A folder the mount will not keep private files in; the message says why and what to
    do, in one line."""


def cache_root(chosen: Path) -> Path:
    """Where the mount keeps its files, given the cache folder the user chose (see the
    module docstring). Blocking."""
    try:
        info = os.stat(chosen)
    except FileNotFoundError:
        chosen.parent.mkdir(parents=True, exist_ok=True)
        try:
            chosen.mkdir(mode=0o700)
        except FileExistsError:
            pass            # made meanwhile: judged below like any folder that exists
        else:
            return chosen   # the mount's own
        info = os.stat(chosen)
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFolder(f"the cache folder {chosen} is not a folder")
    if info.st_uid != os.geteuid():
        raise UnsafeFolder(f"the cache folder {chosen} belongs to another user (uid "
                           f"{info.st_uid}); choose a folder of your own with --cache-dir")
    if mode & 0o022:
        raise UnsafeFolder(f"other users can write to the cache folder {chosen} (mode "
                           f"{mode:04o}), where the mount keeps the bytes of files being "
                           f"written; choose a folder only you can write to with --cache-dir "
                           f"(or: chmod go-w {chosen})")
    if mode & 0o077 == 0:
        return chosen
    # others may read it (a home folder): the mount's files go in a folder of its own
    return private_dir(chosen / OWN_FOLDER)


def private_dir(path: Path) -> Path:
    """A folder of the mount's own, ``0700``: made if missing; if it exists it must be a
    real folder of this user (then its mode is set to ``0700``, as the mount made it).
    Its parent must exist. Blocking."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise UnsafeFolder(f"{path} is not a folder of yours; the mount keeps its files "
                               f"there and will not use it") from None
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(path, 0o700)
    return path


def private_dirs(root: Path, *parts: str) -> Path:
    """``root/parts[0]/parts[1]/...``, each level a :func:`private_dir` (``root`` exists)."""
    path = root
    for part in parts:
        path = private_dir(path / part)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a small text file that only this user can read (``0600`` whatever the umask,
    also when it existed with another mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
