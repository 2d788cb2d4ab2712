"""The public API of the emulator: the Files and Uploads handlers under ``/v1``.

Handlers raise :class:`~openai_fs.emulator.errors.ErrorReply`; the app turns it into an OpenAI
error body. Blob I/O runs on the backend's worker pool; bodies are streamed both ways.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Callable, Iterable
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router

from openai_fs.core import purposes
from openai_fs.emulator import errors
from openai_fs.emulator.backend import Backend
from openai_fs.emulator.config import RuntimeConfig
from openai_fs.emulator.errors import ErrorReply
from openai_fs.emulator.extras import ListingExtras
from openai_fs.emulator.forms import read_form
from openai_fs.emulator.responses import FileStream, content_disposition, json_response, read_json, route
from openai_fs.emulator.store import FileRecord, UnknownCursor, UploadRecord, remove_paths

EXPIRES_AFTER_PARAM = "expires_after"


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """A single ``bytes=`` range as ``(first, last)``, ``"unsatisfiable"``, or None to send the
    whole body (no header, a syntax the server may ignore, or several ranges)."""
    if not header:
        return None
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash:
        return None
    if not first:
        if not last.isdigit():
            return None
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last), size - 1) if last else size - 1


def check_text(value: str, param: str) -> None:
    """A name must be text that UTF-8 can hold (JSON allows lone surrogates; storage does not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.invalid(f"'{param}' must be valid Unicode text (it holds a lone surrogate).",
                             param=param) from None


def _upload_api(upload: UploadRecord, file: FileRecord | None = None) -> dict:
    return {"id": upload.id, "object": "upload", "bytes": upload.bytes, "created_at": upload.created_at,
            "filename": upload.filename, "purpose": upload.purpose, "status": upload.status,
            "expires_at": upload.expires_at, "file": file.api() if file is not None else None}


def _expires_after_seconds(value: Any) -> int:
    """Validate an ``expires_after`` object (``FileExpirationAfter``)."""
    if not isinstance(value, dict) or set(value) != {"anchor", "seconds"}:
        raise errors.invalid("expires_after must be an object with exactly 'anchor' and 'seconds'.",
                             param=EXPIRES_AFTER_PARAM)
    return _check_expiry(value["anchor"], value["seconds"])


def _check_expiry(anchor: Any, seconds: Any) -> int:
    if anchor != "created_at":
        raise errors.invalid(f"Invalid expires_after anchor {anchor!r}: the only supported anchor is 'created_at'.",
                             param=EXPIRES_AFTER_PARAM)
    if isinstance(seconds, str):
        try:
            seconds = int(seconds.strip())
        except ValueError:
            pass
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise errors.invalid("expires_after seconds must be an integer.", param=EXPIRES_AFTER_PARAM)
    if not purposes.MIN_EXPIRES_AFTER <= seconds <= purposes.MAX_EXPIRES_AFTER:
        raise errors.invalid(
            f"expires_after seconds must be between {purposes.MIN_EXPIRES_AFTER} and "
            f"{purposes.MAX_EXPIRES_AFTER}, got {seconds}.", param=EXPIRES_AFTER_PARAM)
    return seconds


def _check_purpose(purpose: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(purpose, str) or purpose not in allowed:
        listed = ", ".join(repr(p) for p in allowed)
        raise errors.invalid(f"{purpose!r} is not one of [{listed}] - 'purpose'", param="purpose")
    return purpose


def _post_limit(purpose: str | None) -> tuple[int, str]:
    """The most bytes ``POST /files`` takes for a purpose (when known yet), and the 413 message."""
    if purpose == "batch":
        return purposes.MAX_BATCH_BYTES, purposes.size_problem("batch", purposes.MAX_BATCH_BYTES + 1) or ""
    return purposes.MAX_POST_FILE_BYTES, (
        f"File too large: POST /files accepts at most {purposes.MAX_POST_FILE_BYTES // purposes.MiB} MB; "
        "use the Uploads API for larger files.")


class ApiRoutes:
    """The ``/v1`` handlers, an ASGI app. ``config`` returns the runtime configuration in force;
    ``extras`` are the hostile entries listings carry."""

    def __init__(self, backend: Backend, config: Callable[[], RuntimeConfig],
                 extras: ListingExtras | None = None) -> None:
        self.backend = backend
        self.store = backend.store
        self.executor = backend.executor
        self.config = config
        self.extras = extras if extras is not None else ListingExtras()
        self._completing: set[str] = set()
        self.router = Router(redirect_slashes=False, routes=[
            route("/v1/files", GET=self.list_files, POST=self.create_file),
            route("/v1/files/{file_id}", GET=self.retrieve_file, DELETE=self.delete_file),
            route("/v1/files/{file_id}/content", GET=self.file_content),
            route("/v1/uploads", POST=self.create_upload),
            route("/v1/uploads/{upload_id}/parts", POST=self.add_part),
            route("/v1/uploads/{upload_id}/complete", POST=self.complete_upload),
            route("/v1/uploads/{upload_id}/cancel", POST=self.cancel_upload),
        ])

    def reset(self) -> None:
        """Forget what is in progress (the store is being reset)."""
        self._completing.clear()

    async def __call__(self, scope, receive, send) -> None:
        extra = self._extra_by_id(scope) if scope["method"] in ("GET", "HEAD") else None
        if extra is not None:
            await json_response(extra)(scope, receive, send)
            return
        await self.router(scope, receive, send)

    def _extra_by_id(self, scope) -> dict | None:
        """The injected listing entry ``GET /files/{id}`` asks for, if any. The id is taken from
        the raw path, percent-decoded, so that ids holding ``/`` (sent as ``%2F``) match too."""
        raw = scope.get("raw_path") or scope["path"].encode()
        prefix = b"/v1/files/"
        if not len(self.extras) or not raw.startswith(prefix) or b"/" in raw[len(prefix):]:
            return None
        return self.extras.by_id(unquote(raw[len(prefix):].decode("latin-1")))

    # -- /v1/files --------------------------------------------------------------------------

    async def list_files(self, request: Request) -> Response:
        q = request.query_params
        purpose = q.get("purpose") or None
        limit = purposes.MAX_LIST_LIMIT
        if "limit" in q:
            try:
                limit = int(q["limit"])
            except ValueError:
                raise errors.invalid(f"Invalid 'limit': expected an integer, but got {q['limit']!r} instead.",
                                     param="limit") from None
            if not 1 <= limit <= purposes.MAX_LIST_LIMIT:
                raise errors.invalid(f"Invalid 'limit': expected a value between 1 and {purposes.MAX_LIST_LIMIT}, "
                                     f"but got {limit} instead.", param="limit")
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            raise errors.invalid(f"Invalid 'order': expected 'asc' or 'desc', but got {order!r} instead.",
                                 param="order")
        after = q.get("after") or None
        page_cap = self.config().page_cap
        if page_cap is not None:
            limit = min(limit, page_cap)
        await self.backend.expire()
        try:
            page, has_more = self.store.list_files(purpose=purpose, limit=limit, order=order, after=after)
        except UnknownCursor:
            raise errors.invalid(f"Invalid 'after': no such object: {after}", param="after") from None
        data = [rec.api() for rec in page]
        first_id, last_id = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        data += self.extras.for_listing(purpose)  # raw, after the store's files; not in the ids
        return json_response({"object": "list", "data": data, "first_id": first_id, "last_id": last_id,
                              "has_more": has_more})

    async def create_file(self, request: Request) -> Response:
        def on_text(name: str, value: str) -> None:
            if name == "purpose":  # refuse a wrong purpose before any file bytes are read
                _check_purpose(value, purposes.UPLOADABLE_PURPOSES)

        form = await read_form(
            request.receive, request.headers.get("content-type"), blob_field="file",
            text_fields=("purpose", "expires_after[anchor]", "expires_after[seconds]"),
            blob_path=self.store.temp_path(), limit_for=lambda f: _post_limit(f.get("purpose")),
            on_text=on_text, executor=self.executor)
        blob = form.blob
        try:
            if "purpose" not in form.fields:
                raise errors.missing_parameter("purpose")
            purpose = _check_purpose(form.fields["purpose"], purposes.UPLOADABLE_PURPOSES)
            if blob is None:
                raise errors.missing_parameter("file")
            if not blob.filename:
                raise errors.invalid("The 'file' field must be a file upload with a filename.", param="file")
            check_text(blob.filename, "file")
            expiry = None
            anchor = form.fields.get("expires_after[anchor]")
            seconds = form.fields.get("expires_after[seconds]")
            if anchor is not None or seconds is not None:
                if anchor is None or seconds is None:
                    raise errors.invalid("expires_after needs both 'anchor' and 'seconds'.",
                                         param=EXPIRES_AFTER_PARAM)
                expiry = _check_expiry(anchor, seconds)
            problem = purposes.filename_problem(purpose, blob.filename)
            if problem:
                raise errors.invalid(f"Invalid file format for purpose '{purpose}': {problem}.",
                                     param="file", code="invalid_file_format")
            limit, message = _post_limit(purpose)
            if blob.size > limit:
                raise errors.too_large(message)
            rec = await self.backend.run(partial(self.store.add_file, blob.path, blob.filename, purpose,
                                                 blob.size, expires_after_seconds=expiry))
        except BaseException:
            if blob is not None:
                await self.backend.run(remove_paths, [blob.path])
            raise
        return json_response(rec.api())

    async def _live_file(self, file_id: str) -> FileRecord:
        await self.backend.expire()
        rec = self.store.get_file(file_id)
        if rec is None:
            raise errors.no_such_file(file_id)
        return rec

    async def retrieve_file(self, request: Request) -> Response:
        return json_response((await self._live_file(request.path_params["file_id"])).api())

    async def delete_file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        await self.backend.expire()
        rec = self.store.delete_file(file_id)
        if rec is None:
            raise errors.no_such_file(file_id)
        await self.backend.run(remove_paths, [self.store.file_path(file_id)])
        return json_response({"id": file_id, "object": "file", "deleted": True})

    async def file_content(self, request: Request) -> Response:
        rec = await self._live_file(request.path_params["file_id"])
        if not self.config().serves_content(rec.purpose):
            raise errors.not_downloadable(rec.purpose)
        try:
            fd = await self.backend.run(os.open, self.store.file_path(rec.id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # deleted meanwhile
            raise errors.no_such_file(rec.id) from None
        try:
            size = os.fstat(fd).st_size
            headers = {"content-disposition": content_disposition(rec.filename)}
            if not self.config().honour_range:
                # the real service: the whole file, chunked, whatever Range asks
                return FileStream(fd, 0, size, status=200, headers=headers, executor=self.executor,
                                  content_length=False)
            headers["accept-ranges"] = "bytes"
            wanted = parse_range(request.headers.get("range"), size)
            if wanted == "unsatisfiable":
                raise ErrorReply(416, f"Requested range not satisfiable: the file has {size} bytes.",
                                 headers={"content-range": f"bytes */{size}"})
            if isinstance(wanted, tuple):
                first, last = wanted
                headers["content-range"] = f"bytes {first}-{last}/{size}"
                return FileStream(fd, first, last - first + 1, status=206, headers=headers, executor=self.executor)
            return FileStream(fd, 0, size, status=200, headers=headers, executor=self.executor)
        except BaseException:
            os.close(fd)
            raise

    # -- /v1/uploads ------------------------------------------------------------------------

    async def _json_object(self, request: Request, allowed: Iterable[str], required: Iterable[str]) -> dict:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise errors.invalid("The request body must be a JSON object.")
        for key in body:
            if key not in allowed:
                raise errors.unrecognized_argument(key)
        for key in required:
            if key not in body:
                raise errors.missing_parameter(key)
        return body

    async def _upload(self, upload_id: str) -> UploadRecord:
        await self.backend.expire()
        upload = self.store.get_upload(upload_id)
        if upload is None:
            raise errors.no_such_upload(upload_id)
        return upload

    async def create_upload(self, request: Request) -> Response:
        body = await self._json_object(request, ("filename", "purpose", "bytes", "mime_type", "expires_after"),
                                       ("filename", "purpose", "bytes", "mime_type"))
        filename, size, mime_type = body["filename"], body["bytes"], body["mime_type"]
        if not isinstance(filename, str) or not filename:
            raise errors.invalid("'filename' must be a non-empty string.", param="filename")
        check_text(filename, "filename")
        purpose = _check_purpose(body["purpose"], purposes.UPLOADS_API_PURPOSES)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= purposes.MAX_UPLOAD_BYTES:
            raise errors.invalid(f"'bytes' must be an integer between 0 and {purposes.MAX_UPLOAD_BYTES}, "
                                 f"got {size!r}.", param="bytes")
        if not isinstance(mime_type, str) or not mime_type.strip():
            raise errors.invalid("'mime_type' must be a non-empty string.", param="mime_type")
        expiry = _expires_after_seconds(body["expires_after"]) if "expires_after" in body else None
        problem = purposes.filename_problem(purpose, filename)
        if problem:
            raise errors.invalid(f"Invalid file format for purpose '{purpose}': {problem}.", param="filename",
                                 code="invalid_file_format")
        problem = purposes.size_problem(purpose, size)
        if problem:
            raise errors.invalid(f"File too large: {problem}.", param="bytes", code="file_too_large")
        upload = self.store.create_upload(filename=filename, purpose=purpose, size=size, mime_type=mime_type,
                                          expires_after_seconds=expiry)
        return json_response(_upload_api(upload))

    @staticmethod
    def _not_pending(upload: UploadRecord, action: str) -> ErrorReply:
        return errors.invalid(f"Cannot {action} Upload {upload.id}: its status is '{upload.status}', "
                              "not 'pending'.")

    async def add_part(self, request: Request) -> Response:
        upload = await self._upload(request.path_params["upload_id"])
        if upload.status != "pending":
            raise self._not_pending(upload, "add a Part to")
        limit = (purposes.MAX_PART_BYTES, f"A Part may be at most {purposes.MAX_PART_BYTES // purposes.MiB} MB.")
        form = await read_form(request.receive, request.headers.get("content-type"), blob_field="data",
                               text_fields=(), blob_path=self.store.temp_path(), limit_for=lambda _f: limit,
                               executor=self.executor)
        if form.blob is None:
            raise errors.missing_parameter("data")
        part = await self.backend.run(self.store.add_part, upload.id, form.blob.path, form.blob.size)
        if part is None:  # completed, cancelled or expired while the part was arriving
            await self.backend.run(remove_paths, [form.blob.path])
            raise self._not_pending(await self._upload(upload.id), "add a Part to")
        return json_response(part.api())

    async def complete_upload(self, request: Request) -> Response:
        upload = await self._upload(request.path_params["upload_id"])
        body = await self._json_object(request, ("part_ids", "md5"), ("part_ids",))
        part_ids, md5 = body["part_ids"], body.get("md5")
        if not isinstance(part_ids, list) or not all(isinstance(p, str) for p in part_ids):
            raise errors.invalid("'part_ids' must be a list of Part ids.", param="part_ids")
        if md5 is not None and not isinstance(md5, str):
            raise errors.invalid("'md5' must be a string.", param="md5")
        if upload.status != "pending":
            raise self._not_pending(upload, "complete")
        if upload.id in self._completing:
            raise errors.invalid(f"Upload {upload.id} is already being completed.")
        parts = self.store.parts_of(upload.id)
        seen: set[str] = set()
        for part_id in part_ids:
            if part_id not in parts:
                raise errors.invalid(f"Part {part_id} is not a Part of Upload {upload.id}.", param="part_ids")
            if part_id in seen:
                raise errors.invalid(f"Part {part_id} appears more than once in part_ids.", param="part_ids")
            seen.add(part_id)
        total = sum(parts[p].bytes for p in part_ids)
        if total != upload.bytes:
            raise errors.invalid(f"The Parts add up to {total} bytes, but the Upload was created with "
                                 f"bytes={upload.bytes}.", param="part_ids")
        self._completing.add(upload.id)
        try:
            blob, size, digest = await self.backend.run(self.store.assemble, part_ids, md5 is not None)
            if md5 is not None and digest != md5.strip().lower():
                await self.backend.run(remove_paths, [blob])
                raise errors.invalid(f"The md5 checksum of the assembled file is {digest}, not the expected "
                                     f"{md5}.", param="md5")
            done = await self.backend.run(self.store.complete_upload, upload.id, blob, size)
            if done is None:
                await self.backend.run(remove_paths, [blob])
                raise self._not_pending(await self._upload(upload.id), "complete")
        finally:
            self._completing.discard(upload.id)
        upload, rec, part_paths = done
        await self.backend.run(remove_paths, part_paths)
        return json_response(_upload_api(upload, rec))

    async def cancel_upload(self, request: Request) -> Response:
        upload = await self._upload(request.path_params["upload_id"])
        done = self.store.cancel_upload(upload.id)
        if done is None:
            raise self._not_pending(upload, "cancel")
        upload, part_paths = done
        await self.backend.run(remove_paths, part_paths)
        return json_response(_upload_api(upload))
