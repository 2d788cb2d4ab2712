"""Logging for the mount: where it goes, one format, the key scrubbed from every line, recent
problems kept.

Each mount has a log file of its own, named after its mount point, in the user's state folder
(``~/.local/state/openai-fs/home-me-openai.log`` for ``/home/me/openai``), made ``0600`` in a
``0700`` folder and rotated by size: it names files and the server's answers. ``-`` (and the
default in the foreground) is standard error; when that is the systemd journal (a unit with
``StandardError=journal``, the default), each line carries its priority for the journal
instead of a timestamp. Library loggers that log per request (httpx, httpcore) stay at WARNING
unless ``--debug``.
"""

from __future__ import annotations

import faulthandler
import logging
import logging.handlers
import os
import re
import signal
import stat
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from openai_fs.api.secret import Secret, redact
from openai_fs.commands.options import STDERR, state_folder

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
#: a log file is rotated when it reaches this size, and this many rotated files are kept
#: (``NAME.log.1`` the newest): at most 50M of log per mount
ROTATE_BYTES = 10 * 1024 * 1024
ROTATED_KEPT = 4
#: a key shorter than this is no real API key (those are dozens of characters), and masking
#: every occurrence of a few letters would mask ordinary words in the log; key-shaped text
#: (``sk-...``) is masked whatever the key
MIN_MASKED_KEY = 16


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


class RedactingFilter(logging.Filter):
    """Renders each record's message and removes the key (and anything key-shaped) from it."""

    def __init__(self, secret: Secret | None) -> None:
        super().__init__()
        long_enough = secret is not None and len(secret.reveal()) >= MIN_MASKED_KEY
        self._secret = secret if long_enough else None

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


# ------------------------------------------------------------------- where the log goes

class PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """A log file made ``0600`` (it names files and quotes the server), rotated by size.

    ``reopened`` is called with the new stream after each rotation, so the crash handler
    (:mod:`faulthandler`) keeps writing into the current file. A log file that is not a
    regular file (``/dev/null``, a fifo) is written to as it is, never rotated or chmod-ed."""

    def __init__(self, path: Path, *, reopened=None) -> None:
        self._reopened = reopened
        regular = not path.exists() or path.is_file()
        super().__init__(path, maxBytes=ROTATE_BYTES if regular else 0,
                         backupCount=ROTATED_KEPT, encoding="utf-8")

    def _open(self):    # the one hook logging has for how its file is opened
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            info = os.fstat(fd)
            # a log file an earlier version made readable by others is made private too
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() \
                    and info.st_mode & 0o077:
                os.fchmod(fd, 0o600)
        except OSError:
            os.close(fd)
            raise
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def doRollover(self) -> None:
        super().doRollover()
        if self._reopened is not None and self.stream is not None:
            self._reopened(self.stream)


class JournalFormatter(logging.Formatter):
    """For standard error connected to the systemd journal: ``<PRIORITY>name: message``, so
    ``journalctl -p warning`` works; the journal adds the time itself."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                  logging.CRITICAL: 2}

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITIES.get(record.levelno, 6)
        text = super().format(record)
        # every line of a traceback gets the priority too, or the journal shows them as INFO
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def stderr_is_journal() -> bool:
    """Whether standard error is the journal's stream (systemd sets ``JOURNAL_STREAM`` to its
    ``DEVICE:INODE``; a descriptor redirected since then no longer matches)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        info = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


@dataclass
class MountLog:
    """What :func:`setup` made: recent problems for ``status``, and where the log goes."""

    problems: RecentProblems
    #: a file, or None for standard error
    file: Path | None
    journal: bool = False

    @property
    def where(self) -> str:
        if self.file is not None:
            return str(self.file)
        return "the systemd journal" if self.journal else "standard error"


def _prepare_folder(folder: Path) -> None:
    """Make the log's folder ``0700``; the default folder (ours) is made private if it is
    not, a folder the user chose is left as it is."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if folder == state_folder():
        info = folder.stat()
        if info.st_uid == os.geteuid() and info.st_mode & 0o077:
            folder.chmod(0o700)


def _crash_output(stream) -> None:
    """A crash (a fatal signal) writes every thread's stack where the log goes, and so does
    SIGUSR1 at any time."""
    faulthandler.enable(file=stream)
    faulthandler.register(signal.SIGUSR1, file=stream, all_threads=True)


def setup(*, log_file: Path | None, debug: bool, secret: Secret | None) -> MountLog:
    """Send the log to ``log_file`` (None or ``-``: standard error), point the crash handler
    there too, and return what the mount needs to know of it."""
    journal = False
    file = None if log_file is None or log_file == STDERR else log_file
    if file is not None:
        file = Path(os.path.abspath(file))
        _prepare_folder(file.parent)

        handler: logging.Handler = PrivateRotatingFile(file, reopened=_crash_output)
        handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        _crash_output(handler.stream)
    else:
        handler = logging.StreamHandler(sys.stderr)
        journal = stderr_is_journal()
        handler.setFormatter(JournalFormatter() if journal else
                             logging.Formatter(FORMAT, DATE_FORMAT))
        _crash_output(sys.stderr)
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
    return MountLog(problems, file, journal)
