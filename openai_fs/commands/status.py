"""``openai-fs status``: what a mount is doing, read from its status file.

A mount answers with a JSON snapshot when its hidden file ``MOUNTPOINT/.openai-fs-status`` is
read (the file is not listed, so ``ls``, ``find`` and ``rsync`` never see it).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from openai_fs.core.namespace import CONTROL_NAME

DESCRIPTION = """\
Show what the mount on MOUNTPOINT is doing: uploads in flight (bytes sent of total, rate),
recently failed uploads with the server's reason and where their bytes were kept, cache use,
request counts, and recent warnings. --json prints the raw snapshot.
"""


class StatusError(Exception):
    """The mount's status cannot be read; the message says why."""


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
        raise StatusError(f"cannot read the status of {mountpoint}: {box['error']}")
    try:
        return json.loads(box["text"])
    except ValueError:
        raise StatusError(f"the status of {mountpoint} is not readable JSON") from None


def render(status: dict[str, Any]) -> str:
    lines = [f"openai-fs {status.get('version', '?')} (pid {status.get('pid')}): "
             f"{status.get('server')} on {status.get('mountpoint')}"
             f"{' (read-only)' if status.get('read_only') else ''}, up "
             f"{_duration(time.time() - float(status.get('started', time.time())))}"]
    uploads = status.get("uploads", {})
    in_flight = uploads.get("in_flight", [])
    lines.append(f"Uploads in flight: {len(in_flight) or 'none'}")
    for transfer in in_flight:
        lines.append("  " + describe_transfer(transfer))
    for early in uploads.get("while_written", []):
        lines.append(f"  {early['path']}: {_size(early['bytes_sent'])} sent while it is "
                     "still being written")
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
    lines.append(f"Cache: memory {_size(cache.get('memory_bytes', 0))} of "
                 f"{_size(cache.get('memory_limit', 0))}, disk {_size(cache.get('disk_bytes', 0))}"
                 f" of {_size(cache.get('disk_limit', 0))}; {cache.get('downloads', 0)} "
                 f"downloads, {cache.get('disk_hits', 0)} disk hits, "
                 f"{cache.get('block_fetches', 0)} ranged fetches")
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
