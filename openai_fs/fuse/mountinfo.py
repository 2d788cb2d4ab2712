"""Where the kernel lists a mount: /proc/self/mountinfo, read without touching the mount.

Anything that asks the mount itself (``stat`` of the mount point, ``os.path.ismount``) is a
request to the process that serves it; asked by that process, it deadlocks. This table is
answered by the kernel alone.
"""

from __future__ import annotations

from dataclasses import dataclass

#: how mountinfo escapes the characters that would break its space-separated fields
_ESCAPES = (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\"))


@dataclass(frozen=True)
class MountEntry:
    mount_id: int      # as in /proc/*/fdinfo "mnt_id"
    device: str        # "major:minor", also the name of its /sys/class/bdi entry


def find(resolved_mountpoint: str, table: str = "/proc/self/mountinfo") -> MountEntry | None:
    """The mount on ``resolved_mountpoint`` (the one on top when several are stacked), or None.

    The path must be resolved *before* mounting: resolving it afterwards would stat the
    mount point."""
    found = None
    try:
        with open(table, encoding="utf-8") as rows:
            for row in rows:
                fields = row.split()
                point = fields[4]
                for escaped, plain in _ESCAPES:
                    point = point.replace(escaped, plain)
                if point == resolved_mountpoint:
                    found = MountEntry(int(fields[0]), fields[2])
    except (OSError, ValueError, IndexError):
        return None
    return found
