"""Logging for the mount: one format, the key scrubbed from every line, recent problems kept.

Library loggers that log per request (httpx, httpcore) stay at WARNING unless ``--debug``.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import deque
from pathlib import Path

from openai_fs.api.secret import Secret, redact

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


class RedactingFilter(logging.Filter):
    """Renders each record's message and removes the key (and anything key-shaped) from it."""

    def __init__(self, secret: Secret | None) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        # a filename may hold a newline or an escape sequence: shown escaped, it cannot forge
        # a log line or move the terminal's cursor
        record.msg = _CONTROL.sub(_escape, redact(record.getMessage(), self._secret))
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info),
                                     self._secret)
            record.exc_info = None
        return True


class KernelGoneFilter(logging.Filter):
    """pyfuse3 logs an ERROR when it cannot reply because the kernel already dropped the
    request (it was interrupted, or the mount is going away): ENOENT from fuse_reply_*. Nothing
    failed on our side; it is shown at DEBUG level, under --debug only."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self._debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "fuse_reply_" in message and "No such file or directory" in message:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self._debug
        return True


class RecentProblems(logging.Handler):
    """The last warnings and errors, for ``openai-fs status``."""

    def __init__(self, size: int = 20) -> None:
        super().__init__(level=logging.WARNING)
        self.records: deque[dict[str, object]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({"time": time.strftime("%Y-%m-%d %H:%M:%S",
                                                   time.localtime(record.created)),
                             "level": record.levelname, "message": record.getMessage()})


def setup(*, log_file: Path | None, debug: bool, secret: Secret | None) -> RecentProblems:
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    problems = RecentProblems()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    redactor = RedactingFilter(secret)
    for sink in (handler, problems):
        sink.addFilter(redactor)
        root.addHandler(sink)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
    pyfuse3_log = logging.getLogger("pyfuse3")
    if not debug:
        pyfuse3_log.setLevel(logging.WARNING)
    pyfuse3_log.addFilter(KernelGoneFilter(debug))
    return problems
