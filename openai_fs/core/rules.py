"""The rules a file must follow to be uploaded, checked before anything is sent.

Each refusal is a :class:`~openai_fs.core.errors.RuleViolation` (or an ``EACCES``/``EROFS``
:class:`~openai_fs.core.errors.FSError` for a directory that takes no files) whose message
names the rule (docs/SEMANTICS.md, "Rules checked before anything is sent").
"""

from __future__ import annotations

import errno
import logging
import mimetypes
import re

from openai_fs.core import names, purposes
from openai_fs.core.errors import FSError, RuleViolation
from openai_fs.core.namespace import PurposeDir

#: characters that httpx cannot carry unchanged in a multipart filename (it percent-encodes
#: them), so such files go through the Uploads API, whose filename travels in JSON
MULTIPART_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')


def check_new_file(directory: PurposeDir, name: str) -> None:
    """Refuse a new file that could never be uploaded, before any byte is written."""
    if not directory.writable:
        raise not_writable(directory)
    check_name(directory, name)
    filename = server_filename(name)
    problem = purposes.filename_problem(directory.purpose or "", filename)
    if problem:
        raise RuleViolation(errno.EINVAL, f"{directory.name}/{name}: refused, {problem}")
    if MULTIPART_UNSAFE.search(filename) and \
            directory.purpose not in purposes.UPLOADS_API_PURPOSES:
        raise RuleViolation(errno.EINVAL, f"{directory.name}/{name}: refused, a name with "
                                          "quotes, backslashes or control characters "
                                          "cannot be uploaded unchanged for this purpose")


def check_name(directory: PurposeDir, name: str) -> None:
    """Refuse a name that the name rule could not bring back unchanged."""
    if not names.is_canonical(name):
        raise RuleViolation(errno.EINVAL, f"{directory.name}/{name}: refused, the name uses "
                                          "the escape mark \u201b in a way the name rule "
                                          "cannot keep (see docs/SEMANTICS.md)")


def rule_violation(purpose: str, filename: str, size: int, where: str) -> RuleViolation | None:
    """The rule of the purpose this file breaks (EINVAL for its type, EFBIG for its size)."""
    problem = purposes.filename_problem(purpose, filename)
    if problem:
        return RuleViolation(errno.EINVAL, f"{where}: refused, {problem}")
    problem = purposes.size_problem(purpose, size)
    if problem:
        return RuleViolation(errno.EFBIG, f"{where}: refused, {problem}")
    return None


def not_writable(directory: PurposeDir) -> FSError:
    """Why nothing can be written in ``directory``."""
    if directory.purpose in purposes.OUTPUT_PURPOSES or not purposes.is_uploadable(
            directory.purpose or ""):
        return FSError(errno.EACCES, f"{directory.name}: files of this purpose are made by the "
                                     "platform and cannot be uploaded", level=logging.INFO)
    return FSError(errno.EROFS, "the mount is read-only", level=logging.INFO)


def server_filename(name: str) -> str:
    """The filename the server gets for a name shown in the mount."""
    return names.decode(name)


def mime_type(filename: str) -> str:
    if filename.lower().endswith(".jsonl"):
        return "text/jsonl"
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or "application/octet-stream"
