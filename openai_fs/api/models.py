"""The API's objects as immutable dataclasses, parsed strictly from JSON.

A field the spec marks required but the answer lacks (or gives with the wrong type) is a
:class:`~openai_fs.api.errors.MalformedResponseError`, raised by the client with the request's
context; here it is a plain ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


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

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileObject:
        return cls(
            id=_field(data, "id", str),
            bytes=_field(data, "bytes", int),
            created_at=_field(data, "created_at", int),
            filename=_field(data, "filename", str),
            purpose=_field(data, "purpose", str),
            status=_field(data, "status", str, optional=True) or "processed",
            expires_at=_field(data, "expires_at", int, optional=True),
        )


@dataclass(frozen=True, slots=True)
class FilePage:
    """One page of ``GET /files``."""

    files: tuple[FileObject, ...]
    has_more: bool
    first_id: str | None
    last_id: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FilePage:
        items = _field(data, "data", list)
        return cls(
            files=tuple(FileObject.from_json(item) for item in items),
            has_more=_field(data, "has_more", bool, optional=True) or False,
            first_id=_field(data, "first_id", str, optional=True),
            last_id=_field(data, "last_id", str, optional=True),
        )


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
            id=_field(data, "id", str),
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
        return cls(id=_field(data, "id", str), upload_id=_field(data, "upload_id", str),
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
