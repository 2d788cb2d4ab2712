"""``openai-fs unmount``: wait for uploads in flight, then unmount and wait for the mount
process to finish. Nothing whose ``close()`` already succeeded can be lost by unmounting;
this command also spares the uploads that are still running."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from openai_fs.commands.status import (
    MountGone,
    ProgressLine,
    StatusError,
    describe_transfer,
    read_status,
)
from openai_fs.commands.sync import wait_for_queue

DESCRIPTION = """\
Unmount MOUNTPOINT once the uploads in flight there have finished, and with --write-back once
the changes it queued are on the server (their progress is shown while it waits; a failure is
reported), then wait for the mount process to exit. --lazy detaches the mount even
while programs still use it.
"""


def add_arguments(parser) -> None:
    parser.add_argument("mountpoint", type=Path, help="where openai-fs is mounted")
    parser.add_argument("--lazy", action="store_true",
                        help="detach now even if files are open (fusermount3 -u -z)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="give up waiting for uploads after this long (default: wait)")


def run(args) -> int:
    mountpoint: Path = args.mountpoint
    try:
        status = read_status(mountpoint)
    except MountGone:
        # nothing can be pending in a dead process: only the kernel's mount is left
        result = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            print(f"openai-fs unmount: {result.stderr.strip()}", file=sys.stderr)
            return 1
        print(f"openai-fs unmount: the mount process had died; {mountpoint} is unmounted",
              file=sys.stderr)
        return 0
    except StatusError as exc:
        print(f"openai-fs unmount: {exc}", file=sys.stderr)
        return 1
    pid = int(status["pid"])
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    failed = False
    queue = status.get("uploads", {}).get("queue") or {}
    if queue.get("jobs") or queue.get("failed"):
        # --write-back: what is queued goes to the server first; a failure is reported, and
        # what is left stays journaled for the next mount of the account
        failed = not wait_for_queue(mountpoint, deadline, program="unmount")
        if failed:
            print("openai-fs unmount: unmounting anyway; what is left is kept in the journal "
                  "and the next mount of this account with this cache folder finishes it",
                  file=sys.stderr)
    for attempt in range(20):
        if not _wait_for_uploads(mountpoint, status, deadline):
            print(f"openai-fs unmount: uploads still running after {args.timeout} s; "
                  "not unmounting", file=sys.stderr)
            return 1
        command = ["fusermount3", "-u"] + (["-z"] if args.lazy else []) + [str(mountpoint)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            break
        try:
            status = read_status(mountpoint)
        except StatusError:
            status = {"uploads": {}}
        if status.get("uploads", {}).get("in_flight"):
            continue            # an upload started meanwhile: wait for it too
        message = result.stderr.strip() or f"fusermount3 exited with {result.returncode}"
        hint = " (files are open there; close them, or use --lazy)" if "busy" in message else ""
        print(f"openai-fs unmount: {message}{hint}", file=sys.stderr)
        return 1
    return 0 if _wait_for_exit(pid) and not failed else 1


def _wait_for_uploads(mountpoint: Path, status: dict, deadline: float | None) -> bool:
    progress = ProgressLine()
    while status.get("uploads", {}).get("in_flight"):
        transfers = status["uploads"]["in_flight"]
        progress.show(f"waiting for {len(transfers)} upload(s): " + "; ".join(
            describe_transfer(t) for t in transfers))
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.5)
        try:
            status = read_status(mountpoint)
        except StatusError:
            break
    progress.end()
    return True


def _wait_for_exit(pid: int, timeout: float = 60.0) -> bool:
    """Wait until the mount process has ended: told by the kernel the moment it does (a
    pidfd), not found by polling. A process that has ended but that nobody has reaped yet (a
    daemon's parent is init, which may take its time) has ended: ``kill(pid, 0)`` alone would
    wait for the reaping."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:             # a kernel without pidfds (before 5.3): ask now and then
        return _poll_for_exit(pid, timeout)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if ready:
        return True
    print(f"openai-fs unmount: unmounted, but the mount process {pid} is still running",
          file=sys.stderr)
    return False


def _poll_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return True       # not ours to watch; the unmount itself succeeded
        if _ended(pid):
            return True
        time.sleep(0.02)
    print(f"openai-fs unmount: unmounted, but the mount process {pid} is still running",
          file=sys.stderr)
    return False


def _ended(pid: int) -> bool:
    """A zombie: ended, not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[:1] == ["Z"]
    except OSError:
        return True
