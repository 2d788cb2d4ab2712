"""``openai-fs status``: what a mount is doing, read from its status file.

A mount answers with a JSON snapshot when its hidden file ``MOUNTPOINT/.openai-fs-status`` is
read (the file is not listed, so ``ls``, ``find`` and ``rsync`` never see it).
"""

from __future__ import annotations

import errno
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from openai_fs.core.names import CONTROL_NAME

DESCRIPTION = """\
Show what the mount on MOUNTPOINT is doing: uploads in flight (bytes sent of total, rate),
recently failed uploads with the server's reason and where their bytes were kept, cache use,
request counts, and recent warnings. --json prints the raw snapshot.
"""


class StatusError(Exception):
    """The mount's status cannot be read; the message says why."""


class MountGone(StatusError):
    """The mount is still in the table, but the process that served it has died."""


def add_arguments(parser) -> None:
    parser.add_argument("mountpoint", type=Path, help="where openai-fs is mounted")
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")


def run(args) -> int:
    try:
        status = read_status(args.mountpoint)
    except StatusError as exc:
        print(f"openai-fs status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def is_openai_fs_mount(mountpoint: Path) -> bool:
    target = str(mountpoint.resolve())
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and _unescape(fields[1]) == target:
                    return fields[2] == "fuse.openai-fs"
    except OSError:
        pass
    return False


def read_status(mountpoint: Path, *, timeout: float = 10.0) -> dict[str, Any]:
    """The mount's snapshot; a mount that does not answer within ``timeout`` is an error
    (reading a hung FUSE mount would otherwise block forever)."""
    if not is_openai_fs_mount(mountpoint):
        raise StatusError(f"{mountpoint} is not an openai-fs mount")
    box: dict[str, Any] = {}

    def read() -> None:
        try:
            box["text"] = (mountpoint / CONTROL_NAME).read_text(encoding="utf-8")
        except OSError as exc:
            box["error"] = exc

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise StatusError(f"the mount on {mountpoint} does not answer (for a hung mount: "
                          f"fusermount3 -u -z {mountpoint})")
    if "error" in box:
        error = box["error"]
        if error.errno == errno.ENOTCONN:
            raise MountGone(f"the mount process is gone; {mountpoint} is mounted with nothing "
                            f"behind it (run: fusermount3 -u {mountpoint}, or openai-fs "
                            "unmount)")
        raise StatusError(f"cannot read the status of {mountpoint}: {error.strerror or error}")
    try:
        return json.loads(box["text"])
    except ValueError:
        raise StatusError(f"the status of {mountpoint} is not readable JSON") from None


def render(status: dict[str, Any]) -> str:
    lines = [f"openai-fs {status.get('version', '?')} (pid {status.get('pid')}): "
             f"{status.get('server')} on {status.get('mountpoint')}"
             f"{' (read-only)' if status.get('read_only') else ''}, up "
             f"{_duration(time.time() - float(status.get('started', time.time())))}"]
    if status.get("log"):
        lines.append(f"Log: {status['log']}")
    uploads = status.get("uploads", {})
    in_flight = uploads.get("in_flight", [])
    early = uploads.get("while_written", [])
    # the header counts every line below it: uploads of closed files and those that began
    # while their file is still being written
    count = len(in_flight) + len(early)
    detail = f" ({len(early)} of them still being written)" if early and in_flight else \
        " (still being written)" if early else ""
    lines.append(f"Uploads in flight: {count or 'none'}{detail}")
    for transfer in in_flight:
        lines.append("  " + describe_transfer(transfer))
    for started in early:
        lines.append(f"  {started['path']}: {_size(started['bytes_sent'])} sent while it is "
                     "still being written")
    held = uploads.get("held", [])
    if held:
        lines.append(f"Temporary files to upload once renamed (or 5 s after their last "
                     f"close): {len(held)}")
        lines.extend(f"  {path}" for path in held)
    lines.extend(describe_queue(uploads.get("queue")))
    kept = uploads.get("kept_local") or {}
    if kept.get("files"):
        lines.append(f"Files kept local (editor and desktop temporaries, never uploaded): "
                     f"{kept['files']} ({_size(kept.get('bytes', 0))})")
    lines.append(f"Uploads completed: {uploads.get('completed', 0)}")
    failed = uploads.get("failed", [])
    if failed:
        lines.append("Recently failed:")
        for failure in failed:
            when = time.strftime("%H:%M:%S", time.localtime(float(failure.get("time", 0))))
            kept = f" (bytes kept in {failure['kept_in']})" if failure.get("kept_in") else ""
            lines.append(f"  {when} {failure.get('path')}: {failure.get('reason')}{kept}")
    cache = status.get("cache", {})
    downloading = cache.get("downloading", [])
    if downloading:
        lines.append(f"Downloads running: {len(downloading)}")
        for download in downloading:
            lines.append(f"  {download.get('path')}: "
                         + _progress(download.get("bytes_received", 0),
                                     download.get("bytes_total", 0),
                                     download.get("bytes_per_second", 0)))
    lines.extend(describe_memory(cache))
    lines.append(f"Cache on disk: {_size(cache.get('disk_bytes', 0))} of "
                 f"{_size(cache.get('disk_limit', 0))} (whole files, kept across mounts); "
                 f"{cache.get('downloads', 0)} downloads, {cache.get('disk_hits', 0)} disk "
                 f"hits, {cache.get('block_fetches', 0)} ranged fetches")
    if status.get("read_ahead") is not None:
        lines.append(f"Kernel read-ahead: {_size(status['read_ahead'])}")
    requests = status.get("requests", {})
    counts = ", ".join(f"{kind} {count}" for kind, count in
                       sorted(requests.get("requests", {}).items())) or "none"
    lines.append(f"Requests: {counts}; retries {requests.get('retries', 0)}, "
                 f"errors {requests.get('errors', 0)}; downloaded "
                 f"{_size(requests.get('bytes_downloaded', 0))}, uploaded "
                 f"{_size(requests.get('bytes_uploaded', 0))}")
    lines.append(f"Open files: {status.get('open_files', 0)}")
    problems = status.get("problems", [])
    if problems:
        lines.append("Recent warnings and errors:")
        for problem in problems[-10:]:
            lines.append(f"  {problem.get('time')} {problem.get('level')} {problem.get('message')}")
    return "\n".join(lines)


class ProgressLine:
    """One line of progress on standard error: kept up to date in place on a terminal, shown
    once elsewhere (a log does not want a line a second)."""

    def __init__(self) -> None:
        self.shown = False

    def show(self, line: str) -> None:
        if sys.stderr.isatty():
            print("\r\033[K" + line[:200], end="", file=sys.stderr, flush=True)
        elif not self.shown:
            print(line, file=sys.stderr, flush=True)
        self.shown = True

    def end(self) -> None:
        """Done: the next output starts on a line of its own."""
        if self.shown and sys.stderr.isatty():
            print(file=sys.stderr)
            self.shown = False


def describe_queue(queue: dict[str, Any] | None) -> list[str]:
    """The write-back queue: what waits, what is being sent, what failed, the rate and the
    time left (nothing when it is off and empty)."""
    if not queue or not queue.get("enabled") and not queue.get("jobs") \
            and not queue.get("failed"):
        return []
    waiting, sending = int(queue.get("waiting", 0)), int(queue.get("sending", 0))
    if not waiting and not sending:
        lines = ["Write-back queue: empty (every change is on the server)"]
    else:
        rate = int(queue.get("bytes_per_second") or 0)
        eta = queue.get("eta_seconds")
        lines = [f"Write-back queue: {waiting} waiting ({_size(queue.get('waiting_bytes', 0))}),"
                 f" {sending} being sent ({_size(queue.get('sending_bytes', 0))})"
                 + (f", {queue['retrying']} retrying" if queue.get("retrying") else "")
                 + (f"; {_size(rate)}/s" if rate else "")
                 + (f", about {_duration(float(eta))} left" if eta else "")]
    for job in queue.get("jobs", [])[:20]:
        state = job.get("state")
        detail = f" (trying again in {job['retry_in']:.0f} s: {job.get('error')})" \
            if state == "retrying" else ""
        lines.append(f"  {job.get('kind')} {job.get('path')}: {state}{detail}")
    for job in queue.get("failed", []):
        lines.append(f"  failed: {job.get('kind')} {job.get('path')}: {job.get('error')}")
    return lines


def describe_memory(cache: dict[str, Any]) -> list[str]:
    """The memory cache: what it uses of ``--cache-size`` and what that is, counted the way
    the mount counts it (blocks plus download rings, see ContentCache.statistics)."""
    blocks = int(cache.get("memory_blocks", 0))
    files = int(cache.get("memory_block_files", 0))
    rings = int(cache.get("memory_rings_max", 0))
    lines = [f"Cache in memory: {_size(cache.get('memory_bytes', 0))} of "
             f"{_size(cache.get('memory_limit', 0))} (--cache-size)"]
    if blocks:
        lines.append(f"  {_size(cache.get('memory_blocks_bytes', 0))} in {blocks} "
                     f"block{'s' if blocks != 1 else ''} of {files} "
                     f"file{'s' if files != 1 else ''} read in pieces (far into a large file, "
                     "or with no room on disk), kept for the next reads")
    else:
        lines.append("  no blocks (pieces of files read far into a large file, or with no "
                     "room on disk, are kept here)")
    if rings:
        lines.append(f"  {_size(cache.get('memory_rings_bytes', 0))} in download rings, "
                     f"{cache.get('memory_rings_in_use', 0)} of {rings} in use (each "
                     f"{_size(cache.get('memory_ring_size', 0))}: downloads of large files "
                     "pass through one on their way to the disk)")
    return lines


def describe_transfer(transfer: dict[str, Any]) -> str:
    return (f"{transfer.get('path')}: "
            + _progress(transfer.get("bytes_sent", 0), transfer.get("bytes_total", 0),
                        transfer.get("bytes_per_second", 0))
            + f" [{transfer.get('method')}]")


def _progress(done: Any, total: Any, rate: Any) -> str:
    """``12.0 MiB of 400.0 MiB (3%) at 110.0 MiB/s``"""
    whole = int(total) or 1
    return (f"{_size(int(done))} of {_size(whole)} ({100 * int(done) // whole}%) at "
            f"{_size(rate)}/s")


def _size(count: float) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"


def _unescape(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")
