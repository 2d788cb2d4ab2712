"""The API's objects as immutable dataclasses, parsed from JSON that is never trusted.

Every id, name, number and time in an answer comes from the server and is checked before it is
used (docs/SEMANTICS.md, "What the mount trusts"):

* An **id** (of a file, an Upload or a Part) is accepted only if it is 1 to
  :data:`MAX_ID_LENGTH` ASCII letters, digits, ``-`` or ``_`` (:func:`usable_id`). Ids become
  file names (``.by-id/``, the disk cache) and parts of request URLs, so nothing else is let
  through.
* A **purpose** becomes a directory name: 1 to :data:`MAX_PURPOSE_LENGTH` of the same
  characters.
* ``bytes`` is a whole number from 0 to :data:`MAX_FILE_BYTES`; ``created_at`` and
  ``expires_at`` are whole Unix seconds from 0 to :data:`MAX_TIME`; ``filename`` and ``status``
  are strings.

Answers to the mount's own requests (a created file, an Upload, a Part) are parsed strictly:
anything wrong is a ``ValueError``, raised by the client as a
:class:`~openai_fs.api.errors.MalformedResponseError` with the request's context. Entries of a
listing (and the answer of ``GET /files/{id}``) are parsed leniently, so that one bad entry
does not hide the others: :meth:`FileObject.from_entry` keeps an entry whose id is usable and
notes in :attr:`FileObject.problem` which other field could not be trusted; only an entry
without a usable id is given up (:class:`UnusableEntry`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

#: the longest id the mount accepts (LiteLLM's encoded ids run to about 150 characters)
MAX_ID_LENGTH = 200
#: the longest purpose the mount accepts (a directory name)
MAX_PURPOSE_LENGTH = 64
#: a file size beyond this is absurd (the API's largest file is 8 GB)
MAX_FILE_BYTES = 1 << 40
#: a time beyond this (the year 2242) is absurd; st_mtime in nanoseconds must fit 64 bits
MAX_TIME = 1 << 33
_ID = re.compile(r"[A-Za-z0-9_-]+")


def usable_id(value: object) -> bool:
    """Whether ``value`` is an id the mount accepts (see the module docstring)."""
    return (isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH
            and _ID.fullmatch(value) is not None)


def usable_purpose(value: object) -> bool:
    """Whether ``value`` can be a purpose, and so a directory name."""
    return (isinstance(value, str) and 0 < len(value) <= MAX_PURPOSE_LENGTH
            and _ID.fullmatch(value) is not None)


def check_id(value: object, what: str = "id") -> str:
    """``value`` if it is a usable id, else a ``ValueError`` that says what is wrong with it."""
    if usable_id(value):
        return value  # type: ignore[return-value]
    raise ValueError(f"{what} {_shown(value)} is not an id the mount accepts (1 to "
                     f"{MAX_ID_LENGTH} letters, digits, '-' or '_')")


def _shown(value: object) -> str:
    """A server value for a message: its type, or its text cut short and escaped."""
    if isinstance(value, str):
        return repr(value[:40] + ("..." if len(value) > 40 else ""))
    if value is None:
        return "missing"
    return f"of type {type(value).__name__}"


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...],
           *, optional: bool = False) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"expected an object, got {type(data).__name__}")
    value = data.get(name)
    if value is None:
        if optional:
            return None
        raise ValueError(f"field {name!r} is missing")
    # bool is an int subclass; a boolean where a number belongs is a malformed answer
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"field {name!r} has the wrong type ({type(value).__name__})")
    return value


def _whole(data: Mapping[str, Any], name: str, *, high: int,
           optional: bool = False) -> int | None:
    """A whole number field within ``[0, high]``; a float that is a whole number counts."""
    value = data.get(name)
    if value is None:
        if optional:
            return None
        raise ValueError(f"field {name!r} is missing")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"field {name!r} is not a whole number ({_shown(value)})")
    if not 0 <= value <= high:
        raise ValueError(f"field {name!r} is out of range ({value})")
    return value


class UnusableEntry(ValueError):
    """A listing entry that cannot be shown at all: it has no usable id."""


@dataclass(frozen=True, slots=True)
class FileObject:
    """One file (``OpenAIFile``)."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    expires_at: int | None = None
    #: why this entry cannot be trusted (a field missing, of the wrong type or absurd), for a
    #: listing entry kept for its id; None for a sound one. Its content is never read.
    problem: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileObject:
        """A file object answering one of the mount's own requests: every field must be
        sound."""
        found = cls.from_entry(data)
        if found.problem is not None:
            raise ValueError(found.problem)
        return found

    @classmethod
    def from_entry(cls, data: object) -> FileObject:
        """A listing entry: kept when its id is usable, with what of the rest can be trusted
        (the other fields of a bad entry are 0 or empty, and ``problem`` says what is wrong).
        Raises :class:`UnusableEntry` when it has no usable id."""
        if not isinstance(data, Mapping):
            raise UnusableEntry(f"an entry that is not an object ({_shown(data)})")
        file_id = data.get("id")
        if not usable_id(file_id):
            raise UnusableEntry(f"an entry whose id {_shown(file_id)} is not an id the mount "
                                f"accepts")
        problems: list[str] = []

        def take(parse, default):
            try:
                return parse()
            except ValueError as exc:
                problems.append(str(exc))
                return default

        size = take(lambda: _whole(data, "bytes", high=MAX_FILE_BYTES), 0)
        created = take(lambda: _whole(data, "created_at", high=MAX_TIME), 0)
        expires = take(lambda: _whole(data, "expires_at", high=MAX_TIME, optional=True), None)
        filename = take(lambda: _field(data, "filename", str), "")
        purpose = take(lambda: _field(data, "purpose", str), "")
        if purpose and not usable_purpose(purpose):
            problems.append(f"field 'purpose' is not a purpose the mount accepts "
                            f"({_shown(purpose)})")
            purpose = ""
        status = take(lambda: _field(data, "status", str, optional=True), None)
        return cls(id=file_id, bytes=size, created_at=created, filename=filename,
                   purpose=purpose, status="processed" if status is None else status,
                   expires_at=expires, problem="; ".join(problems) or None)


@dataclass(frozen=True, slots=True)
class FilePage:
    """One page of ``GET /files``: the entries that can be shown, in the server's order, and
    why the others cannot (``skipped``)."""

    files: tuple[FileObject, ...]
    has_more: bool
    first_id: str | None
    last_id: str | None
    #: what was wrong with each entry that cannot be shown, and with the page itself
    skipped: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FilePage:
        """A page; only a body that is not an object or has no ``data`` list is refused
        (``ValueError``): the entries are parsed one by one (:meth:`FileObject.from_entry`)."""
        items = _field(data, "data", list)
        files: list[FileObject] = []
        skipped: list[str] = []
        for item in items:
            try:
                files.append(FileObject.from_entry(item))
            except UnusableEntry as exc:
                skipped.append(str(exc))
        has_more = data.get("has_more")
        if has_more is None:
            has_more = False
        elif not isinstance(has_more, bool):
            # the page does not say whether more follow: the listing cannot be known complete
            skipped.append(f"'has_more' is not true or false ({_shown(has_more)})")
            has_more = False
        first_id, last_id = data.get("first_id"), data.get("last_id")
        return cls(files=tuple(files), has_more=has_more,
                   first_id=first_id if usable_id(first_id) else None,
                   last_id=last_id if usable_id(last_id) else None, skipped=tuple(skipped))


@dataclass(frozen=True, slots=True)
class Upload:
    """An Upload of the multi-part Uploads API."""

    id: str
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: str
    file: FileObject | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Upload:
        nested = data.get("file") if isinstance(data, Mapping) else None
        return cls(
            id=check_id(_field(data, "id", str), "Upload id"),
            bytes=_field(data, "bytes", int),
            created_at=_field(data, "created_at", int),
            expires_at=_field(data, "expires_at", int),
            filename=_field(data, "filename", str),
            purpose=_field(data, "purpose", str),
            status=_field(data, "status", str),
            file=FileObject.from_json(nested) if nested is not None else None,
        )


@dataclass(frozen=True, slots=True)
class UploadPart:
    id: str
    upload_id: str
    created_at: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UploadPart:
        return cls(id=check_id(_field(data, "id", str), "Part id"),
                   upload_id=_field(data, "upload_id", str),
                   created_at=_field(data, "created_at", int))


@dataclass(frozen=True, slots=True)
class ExpiresAfter:
    """Expiry policy for a new file: ``seconds`` after its creation (3600..2592000)."""

    seconds: int
    anchor: str = "created_at"

    def as_json(self) -> dict[str, Any]:
        return {"anchor": self.anchor, "seconds": self.seconds}

    def as_form_fields(self) -> dict[str, str]:
        # the SDK's bracket style for nested multipart fields
        return {"expires_after[anchor]": self.anchor, "expires_after[seconds]": str(self.seconds)}
