"""``openai-fs sync``: wait until every change the mount has queued (``--write-back``) is on
the server, showing the progress, and say what failed.

The wait is an ``fsync`` of the mount's hidden status file: the mount answers it once its queue
is empty, or with the first failure. (``sync`` and ``sync -f`` do not reach a FUSE mount on
Linux; ``sync DIR`` and ``fsync`` of a file do, for what they cover.)
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from openai_fs.commands.status import ProgressLine, StatusError, describe_queue, read_status
from openai_fs.core.names import CONTROL_NAME

DESCRIPTION = """\
Wait until every upload and delete that the mount on MOUNTPOINT has queued (--write-back) is
on the server, showing what is left; then exit 0, or 1 with what failed (the bytes of a failed
upload are kept in the unsent folder; see openai-fs status).
"""


def add_arguments(parser) -> None:
    parser.add_argument("mountpoint", type=Path, help="where openai-fs is mounted")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="give up waiting after this long (default: wait)")


def run(args) -> int:
    try:
        read_status(args.mountpoint)
    except StatusError as exc:
        print(f"openai-fs sync: {exc}", file=sys.stderr)
        return 1
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    return 0 if wait_for_queue(args.mountpoint, deadline, program="sync") else 1


def wait_for_queue(mountpoint: Path, deadline: float | None, *, program: str) -> bool:
    """Wait for the mount's write-back queue, with a line of progress (on a terminal, kept up
    to date); True when everything is on the server."""
    outcome: dict[str, BaseException] = {}

    def wait() -> None:
        try:
            fd = os.open(mountpoint / CONTROL_NAME, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            outcome["error"] = exc

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    progress = ProgressLine()
    while True:
        waiter.join(0.5)
        if not waiter.is_alive():
            break
        queue = _queue(mountpoint)
        if queue and (queue.get("waiting") or queue.get("sending")):
            progress.show(describe_queue(queue)[0])
        if deadline is not None and time.monotonic() > deadline:
            progress.end()
            print(f"openai-fs {program}: changes still queued after the time given; they go on "
                  "in the background (openai-fs status shows them)", file=sys.stderr)
            return False
    progress.end()
    error = outcome.get("error")
    if error is None:
        return True
    print(f"openai-fs {program}: not every change reached the server "
          f"({os.strerror(error.errno) if isinstance(error, OSError) and error.errno else error}):",
          file=sys.stderr)
    queue = _queue(mountpoint) or {}
    for line in describe_queue(queue)[1:]:
        print(line, file=sys.stderr)
    try:
        failed = read_status(mountpoint).get("uploads", {}).get("failed", [])
    except StatusError:
        failed = []
    for failure in failed[-10:]:
        kept = f" (bytes kept in {failure['kept_in']})" if failure.get("kept_in") else ""
        print(f"  {failure.get('path')}: {failure.get('reason')}{kept}", file=sys.stderr)
    return False


def _queue(mountpoint: Path) -> dict[str, Any] | None:
    try:
        return read_status(mountpoint).get("uploads", {}).get("queue")
    except StatusError:
        return None
