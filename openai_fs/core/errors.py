"""Which errno a failure becomes, and how loudly it is logged (DESIGN.md sec. 4).

The core raises API errors (:mod:`openai_fs.api.errors`) and the few errors of its own below;
the FUSE adapter turns each into one ``errno`` here, in one place.
"""

from __future__ import annotations

import errno
import logging

from openai_fs.api.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    MalformedResponseError,
)


class FSError(Exception):
    """A refusal of the mount itself, with the errno it means and a message for the log."""

    def __init__(self, errno_: int, message: str, *, level: int = logging.WARNING) -> None:
        super().__init__(message)
        self.errno = errno_
        self.message = message
        self.level = level


class RuleViolation(FSError):
    """A file that breaks a purpose's rules (type, size): refused before any upload."""


class UploadFailed(FSError):
    """An upload did not reach the server; ``reason`` is what went wrong."""


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
    if isinstance(exc, FSError):
        return exc.errno
    if isinstance(exc, APIStatusError):
        if exc.status >= 500:
            return errno.EIO
        return _STATUS_ERRNO.get(exc.status, errno.EIO)
    if isinstance(exc, (APIConnectionError, MalformedResponseError, APIError)):
        return errno.EIO
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO


def log_level_for(exc: BaseException) -> int:
    """404 is an everyday answer (a name that does not exist); the rest deserve attention."""
    if isinstance(exc, FSError):
        return exc.level
    if isinstance(exc, APIStatusError) and exc.status == 404:
        return logging.INFO
    if isinstance(exc, APIStatusError) and exc.status < 500:
        return logging.WARNING
    return logging.ERROR
