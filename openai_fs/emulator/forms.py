"""Streaming ``multipart/form-data`` request bodies.

The body is fed chunk by chunk, as the server receives it, to python-multipart's low-level
``MultipartParser``. Text fields (small) are kept in memory; the one binary field of the request
(``file`` for ``POST /files``, ``data`` for a Part) goes straight into a blob under the data
directory: its bytes are gathered into about 1 MiB and written by a worker thread while the next
chunks arrive, so memory stays bounded and there is no second copy on disk. Size limits are
checked as the bytes arrive: once over, reading stops and the caller answers 413.
"""

from __future__ import annotations

import asyncio
import os
import re
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Collection

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from openai_fs.emulator import errors

#: Blob bytes gathered before a write is handed to a worker thread.
WRITE_CHUNK = 1024 * 1024
#: Largest value of a text field.
TEXT_FIELD_LIMIT = 64 * 1024

Receive = Callable[[], Awaitable[dict]]


class ClientDisconnected(Exception):
    """The client went away before the body was complete."""


@dataclass
class Blob:
    path: Path
    size: int = 0
    filename: str | None = None
    content_type: str | None = None


@dataclass
class Form:
    fields: dict[str, str]
    blob: Blob | None


_PARAM_RE = re.compile(r';\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')


def disposition_params(value: str) -> dict[str, str]:
    """``name``/``filename`` of a ``Content-Disposition: form-data; ...`` header. Quoted values
    are unescaped (``\\"``, ``\\\\``); nothing else is decoded, so a name is stored as sent."""
    params: dict[str, str] = {}
    for m in _PARAM_RE.finditer(value):
        key = m.group(1).lower()
        if "*" in key:  # RFC 7578 forbids the RFC 2231 form; ignore it
            continue
        val = re.sub(r"\\(.)", r"\1", m.group(2)) if m.group(2) is not None else m.group(3).strip()
        params.setdefault(key, val)
    return params


def boundary_of(content_type: str | None) -> bytes:
    ctype, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise errors.invalid("Invalid Content-Type header: expected multipart/form-data with a boundary.")
    return boundary


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _Parser:
    """Callbacks for one body; raise ``ErrorReply`` as soon as the body is known to be wrong."""

    def __init__(self, *, blob_field: str, text_fields: Collection[str], blob_path: Path,
                 limit_for: Callable[[dict[str, str]], tuple[int, str]],
                 on_text: Callable[[str, str], None] | None) -> None:
        self.blob_field = blob_field
        self.text_fields = text_fields
        self.blob_path = blob_path
        self.limit_for = limit_for
        self.on_text = on_text
        self.fields: dict[str, str] = {}
        self.blob: Blob | None = None
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.ended = False
        self._part_begin()

    def _part_begin(self) -> None:
        self.headers: dict[str, str] = {}
        self.header_name = b""
        self.header_value = b""
        self.kind: str | None = None
        self.name = ""
        self.text = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def _header_end(self) -> None:
        self.headers[self.header_name.decode("latin-1").strip().lower()] = _decode(self.header_value).strip()
        self.header_name = self.header_value = b""

    def _headers_finished(self) -> None:
        params = disposition_params(self.headers.get("content-disposition", ""))
        name = params.get("name")
        if name is None:
            raise errors.invalid("A part of the multipart body has no field name.")
        self.name = name
        if name == self.blob_field:
            if self.blob is not None:
                raise errors.invalid(f"Duplicate field: {name}", param=name)
            self.kind = "blob"
            self.blob = Blob(self.blob_path, 0, params.get("filename"), self.headers.get("content-type"))
        elif name in self.text_fields:
            if name in self.fields:
                raise errors.invalid(f"Duplicate field: {name}", param=name)
            self.kind = "text"
        else:
            raise errors.unrecognized_argument(name)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.kind == "blob":
            assert self.blob is not None
            self.blob.size += end - start
            limit, message = self.limit_for(self.fields)
            if self.blob.size > limit:
                raise errors.too_large(message)
            self.pending.append(data[start:end])
            self.pending_size += end - start
        else:
            self.text += data[start:end]
            if len(self.text) > TEXT_FIELD_LIMIT:
                raise errors.invalid(f"The value of '{self.name}' is too long.", param=self.name)

    def _part_end(self) -> None:
        if self.kind == "text":
            value = _decode(bytes(self.text))
            self.fields[self.name] = value
            if self.on_text is not None:
                self.on_text(self.name, value)
        self._part_begin()

    def _end(self) -> None:
        self.ended = True

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end, "on_end": self._end}

    def take_pending(self) -> list[bytes]:
        chunks, self.pending, self.pending_size = self.pending, [], 0
        return chunks


def _write_all(fd: int, chunks: list[bytes]) -> None:
    view = memoryview(b"".join(chunks))
    while view:
        view = view[os.write(fd, view):]


async def read_form(receive: Receive, content_type: str | None, *, blob_field: str,
                    text_fields: Collection[str], blob_path: Path,
                    limit_for: Callable[[dict[str, str]], tuple[int, str]],
                    on_text: Callable[[str, str], None] | None = None,
                    executor: Executor | None = None) -> Form:
    """Read a whole multipart body. The blob field (if sent) ends up at ``blob_path``; on any
    error that file is removed. Raises ``ErrorReply`` (400/413) or ``ClientDisconnected``."""
    parser_state = _Parser(blob_field=blob_field, text_fields=text_fields, blob_path=blob_path,
                           limit_for=limit_for, on_text=on_text)
    parser = MultipartParser(boundary_of(content_type), parser_state.callbacks())
    loop = asyncio.get_running_loop()
    fd: int | None = None
    writing: asyncio.Future | None = None

    async def flush(force: bool) -> None:
        nonlocal fd, writing
        if parser_state.blob is None:
            return
        if fd is None:
            fd = await loop.run_in_executor(executor, lambda: os.open(
                blob_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
        if parser_state.pending_size >= WRITE_CHUNK or (force and parser_state.pending):
            if writing is not None:
                await writing
            writing = loop.run_in_executor(executor, _write_all, fd, parser_state.take_pending())
        if force and writing is not None:
            await writing
            writing = None

    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            body = message.get("body", b"")
            if body:
                try:
                    parser.write(body)
                except MultipartParseError as exc:
                    raise errors.invalid(f"Could not parse the multipart body: {exc}") from None
                await flush(False)
            if not message.get("more_body", False):
                break
        if not parser_state.ended:
            raise errors.invalid("The multipart body ended before its closing boundary.")
        await flush(True)
    except BaseException:
        if writing is not None:
            await asyncio.gather(writing, return_exceptions=True)
        if fd is not None:
            os.close(fd)
            fd = None
        if parser_state.blob is not None:
            await loop.run_in_executor(executor, _unlink_quietly, blob_path)
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return Form(parser_state.fields, parser_state.blob)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
