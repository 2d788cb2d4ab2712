"""The one family of failures the core reports, each with the errno it means and how loudly
it is logged (docs/SEMANTICS.md, "What else succeeds or fails").

Every refusal of the core is an :class:`FSError`. Failures that reach the core from below (the
API client's :class:`~openai_fs.api.errors.APIError`, an ``OSError`` of the local disk, a bug)
become one in :func:`as_fs_error`, the only place where an HTTP status turns into an errno. The
FUSE adapter calls it in its one ``except`` and answers with the errno.
"""

from __future__ import annotations

import errno
import logging

from openai_fs.api.errors import (
    APIError,
    APIStatusError,
    DownloadRefusedError,
    QuotaExceededError,
)


class FSError(Exception):
    """A failure of the mount, with the errno it means and a message for the log."""

    def __init__(self, errno_: int, message: str, *, level: int = logging.WARNING) -> None:
        super().__init__(message)
        self.errno = errno_
        self.message = message
        self.level = level


class NoSuchEntry(FSError):
    """No file or directory of that name or inode: an everyday answer, logged at DEBUG."""

    def __init__(self, what: object) -> None:
        super().__init__(errno.ENOENT, f"{what}: no such file or directory",
                         level=logging.DEBUG)


class AlreadyExists(FSError):
    """A name that is taken, where a new one was asked for."""

    def __init__(self, what: object) -> None:
        super().__init__(errno.EEXIST, f"{what} exists", level=logging.DEBUG)


class RuleViolation(FSError):
    """A file that breaks a purpose's rules (type, size): refused before any upload."""


class UploadFailed(FSError):
    """An upload did not reach the server; the message says why and where the bytes are."""


class Unexpected(FSError):
    """A failure nobody foresaw (a bug): EIO, logged with its traceback."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(errno.EIO, f"failed unexpectedly: {cause!r}", level=logging.ERROR)
        self.cause = cause


_STATUS_ERRNO = {
    400: errno.EINVAL,
    401: errno.EACCES,
    403: errno.EACCES,
    404: errno.ENOENT,
    408: errno.ETIMEDOUT,
    409: errno.EBUSY,
    413: errno.EFBIG,
    415: errno.EINVAL,
    422: errno.EINVAL,
    429: errno.EAGAIN,
}


def errno_for(exc: BaseException) -> int:
    """The errno a failure means to a program using the mount."""
    return as_fs_error(exc).errno


def as_fs_error(exc: BaseException) -> FSError:
    """Any failure as an :class:`FSError`: itself, or what an API answer, a local disk error or
    a bug means to a program using the mount. An API error keeps its own text (status, the
    server's message, request id)."""
    if isinstance(exc, FSError):
        return exc
    if isinstance(exc, QuotaExceededError):
        # billing, not rate: no retry helps, and "Disk quota exceeded" says what it is
        return FSError(errno.EDQUOT, str(exc))
    if isinstance(exc, DownloadRefusedError):
        # the server keeps this purpose's content to itself: not an invalid request
        return FSError(errno.EACCES, str(exc))
    if isinstance(exc, APIStatusError):
        if exc.status >= 500:
            return FSError(errno.EIO, str(exc), level=logging.ERROR)
        # 404 is an everyday answer (a name that does not exist any more)
        level = logging.INFO if exc.status == 404 else logging.WARNING
        return FSError(_STATUS_ERRNO.get(exc.status, errno.EIO), str(exc), level=level)
    if isinstance(exc, APIError):           # no (complete) answer, or an unusable one
        return FSError(errno.EIO, str(exc), level=logging.ERROR)
    if isinstance(exc, OSError) and exc.errno:
        return FSError(exc.errno, str(exc))
    return Unexpected(exc)
