"""Who still holds a file open: read from /proc, never through the mount itself.

pyfuse3 does not tell ``flush`` which process is closing. The process that opened a file is
known from ``open``; if it still holds a descriptor of the file when a ``flush`` arrives,
that close came from a copy of the descriptor (a forked child or program that inherited it,
or a ``dup``), not from the writer finishing. ``/proc/PID/fdinfo/FD`` names the mount and the
inode of each descriptor, so this never touches the mount (which would deadlock).
"""

from __future__ import annotations

import os
from pathlib import Path


def process_of(thread: int) -> int:
    """The process (thread group) a thread id belongs to; FUSE reports the calling thread."""
    try:
        with open(f"/proc/{thread}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return thread


def holds_open(pid: int, mount: int, inode: int) -> bool | None:
    """Whether process ``pid`` has a descriptor open *for writing* of ``inode`` on ``mount``;
    None when it cannot be told (not ours to look at). Read-only descriptors do not count: a
    process that reads a file while it writes it is done writing when its writer closes."""
    fds = Path(f"/proc/{pid}/fdinfo")
    try:
        names = os.listdir(fds)
    except FileNotFoundError:
        return False                    # the process is gone: it holds nothing
    except OSError:
        return None
    wanted = (f"mnt_id:\t{mount}", f"ino:\t{inode}")
    for name in names:
        try:
            info = (fds / name).read_text()
        except OSError:
            continue                    # closed meanwhile
        lines = info.splitlines()
        if wanted[0] in lines and wanted[1] in lines and _writable(lines):
            return True
    return False


def _writable(lines: list[str]) -> bool:
    for line in lines:
        if line.startswith("flags:"):
            try:
                return int(line.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY
            except (IndexError, ValueError):
                return True
    return True
