"""An in-memory Files and Uploads API behind ``httpx.MockTransport``, for the core's unit tests.

It keeps files (JSON objects and bytes) in dicts, serves listing pages that honour ``purpose``,
``limit``, ``after`` and ``order`` (and a server-side page cap, so a few files span several pages),
content with or without ``Range``, ``POST /files`` multipart, the Uploads API and deletes. Every
request is recorded (:attr:`FakeFilesAPI.calls`) so tests can count exactly what was sent.

Test levers: :meth:`fail` (an error answer or a dropped connection for some kind of request),
:meth:`hold` (a request of some kind waits on a ``trio.Event`` after its answer is computed, so
a test can act while e.g. a listing is in flight), and :attr:`lag_listings` (new files are not
listed yet and deleted ones still are, as an eventually consistent server may do).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import trio

from openai_fs.api import FilesClient, RetryPolicy
from openai_fs.api.secret import Secret

BASE_URL = "http://test/v1"
FIRST_CREATED_AT = 1_700_000_000


@dataclass
class Call:
    """One request as the fake saw it."""

    kind: str
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    #: multipart text fields, or the JSON body
    fields: dict[str, Any] = field(default_factory=dict)
    #: multipart file field: (filename, bytes, content type)
    file: tuple[str, bytes, str] | None = None
    #: the x-request-id the fake answered with
    request_id: str = ""
    #: bytes of a content body handed to the client so far (less than the body when the client
    #: stopped reading it)
    sent: int = 0


@dataclass
class _Fault:
    kind: str
    status: int | None          # None: drop the connection
    message: str
    times: int | None           # None: always
    skip: int                   # matching requests let through first


class _Chunks(httpx.AsyncByteStream):
    """A body sent in pieces, with a checkpoint between them (so readers interleave)."""

    def __init__(self, body: bytes, chunk_size: int, call: Call | None = None) -> None:
        self.body, self.chunk_size, self.call = body, chunk_size, call

    async def __aiter__(self):
        for at in range(0, len(self.body), self.chunk_size):
            await trio.lowlevel.checkpoint()
            chunk = self.body[at:at + self.chunk_size]
            if self.call is not None:
                self.call.sent += len(chunk)
            yield chunk


class FakeFilesAPI:
    def __init__(self, *, honour_range: bool = True, page_size: int | None = None,
                 chunk_size: int = 256 * 1024) -> None:
        self.honour_range = honour_range
        #: the most files one listing page holds, whatever ``limit`` asks (None: no cap)
        self.page_size = page_size
        self.chunk_size = chunk_size
        #: purposes whose content is refused as the real service refuses it (400)
        self.refused_purposes: set[str] = set()
        self.files: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, bytes] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.parts: dict[str, bytes] = {}
        self.calls: list[Call] = []
        self.lag_listings = False
        #: seconds the n-th Part (from 0, in arrival order) takes to be answered, e.g. to make
        #: Parts finish in another order than they started (use with trio's autojump clock)
        self.part_latency: Callable[[int], float] | None = None
        self.unlisted: set[str] = set()
        self.ghosts: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self._holds: dict[str, trio.Event] = {}
        self._seq = itertools.count(1)
        self._clock = itertools.count(FIRST_CREATED_AT)
        self._request_ids = itertools.count(1)

    # ------------------------------------------------------------ set-up

    def add(self, filename: str, content: bytes = b"", purpose: str = "assistants", *,
            file_id: str | None = None, created_at: int | None = None,
            expires_at: int | None = None, status: str = "processed") -> dict[str, Any]:
        """A file on the server (as if uploaded by someone else)."""
        file_id = file_id or f"file-{secrets.token_hex(12)}"
        obj = {"id": file_id, "object": "file", "bytes": len(content),
               "created_at": created_at if created_at is not None else next(self._clock),
               "filename": filename, "purpose": purpose, "status": status,
               "expires_at": expires_at, "_seq": next(self._seq)}
        self.files[file_id] = obj
        self.blobs[file_id] = content
        return obj

    def remove(self, file_id: str) -> None:
        """Delete a file behind the mount's back."""
        del self.files[file_id]
        del self.blobs[file_id]

    def fail(self, kind: str, status: int | None = 500, *, message: str = "injected failure",
             times: int | None = 1, skip: int = 0) -> None:
        """Answer the next ``times`` requests of ``kind`` (after ``skip`` good ones) with an
        error of ``status`` in the OpenAI error shape, or drop the connection (status None)."""
        self._faults.append(_Fault(kind, status, message, times, skip))

    def hold(self, kind: str) -> trio.Event:
        """Requests of ``kind`` wait for the returned event before answering."""
        event = self._holds[kind] = trio.Event()
        return event

    # ----------------------------------------------------------- queries

    def client(self, *, max_retries: int = 0, **options: Any) -> FilesClient:
        return FilesClient(api_key=Secret("sk-x"), base_url=BASE_URL,
                           transport=httpx.MockTransport(self.handle),
                           retry=RetryPolicy(max_retries=max_retries), **options)

    def count(self, *kinds: str) -> int:
        return sum(1 for call in self.calls if call.kind in kinds)

    def kinds(self) -> list[str]:
        return [call.kind for call in self.calls]

    def of(self, kind: str) -> list[Call]:
        return [call for call in self.calls if call.kind == kind]

    def content_bytes(self) -> int:
        """Bytes of content bodies the fake sent, over every content request."""
        return sum(call.sent for call in self.of("content"))

    def by_name(self, filename: str, purpose: str | None = None) -> list[dict[str, Any]]:
        return [obj for obj in self.files.values() if obj["filename"] == filename
                and (purpose is None or obj["purpose"] == purpose)]

    # ------------------------------------------------------------ server

    async def handle(self, request: httpx.Request) -> httpx.Response:
        kind, ids = _route(request.method, request.url.path)
        call = Call(kind, request.method, request.url.path, dict(request.url.params),
                    {k.lower(): v for k, v in request.headers.items()})
        call.request_id = f"req_{next(self._request_ids):06d}"
        self.calls.append(call)
        response = self._fault_for(kind)
        if response is None:
            response = self._answer(kind, ids, request, call)
        if isinstance(response, BaseException):
            raise response
        response.headers["x-request-id"] = call.request_id
        arrival = self.count(kind) - 1
        hold = self._holds.get(kind)
        if hold is not None:
            await hold.wait()
        if kind == "upload_part" and self.part_latency is not None:
            await trio.sleep(self.part_latency(arrival))
        return response

    def _fault_for(self, kind: str) -> httpx.Response | BaseException | None:
        for fault in self._faults:
            if fault.kind != kind or fault.times == 0:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                return None
            if fault.times is not None:
                fault.times -= 1
            if fault.status is None:
                return httpx.ConnectError("connection refused (injected)")
            return _error(fault.status, fault.message)
        return None

    def _answer(self, kind: str, ids: list[str], request: httpx.Request,
                call: Call) -> httpx.Response:
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            return _error(404, f"no route for {request.method} {request.url.path}")
        return handler(ids, request, call)

    def _list(self, ids, request, call) -> httpx.Response:
        params = request.url.params
        shown = {k: v for k, v in self.files.items() if k not in self.unlisted}
        shown.update(self.ghosts)
        items = [obj for obj in shown.values()
                 if "purpose" not in params or obj["purpose"] == params["purpose"]]
        items.sort(key=lambda o: (o["created_at"], o["_seq"]),
                   reverse=params.get("order", "desc") == "desc")
        if "after" in params:
            position = [o["id"] for o in items].index(params["after"])
            items = items[position + 1:]
        limit = int(params.get("limit", 10_000))
        if self.page_size is not None:
            limit = min(limit, self.page_size)
        page = items[:limit]
        return httpx.Response(200, json={
            "object": "list", "data": [_public(o) for o in page],
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit})

    def _retrieve(self, ids, request, call) -> httpx.Response:
        obj = self.files.get(ids[0])
        if obj is None:
            return _error(404, f"No such File object: {ids[0]}")
        return httpx.Response(200, json=_public(obj))

    def _delete(self, ids, request, call) -> httpx.Response:
        obj = self.files.get(ids[0])
        if obj is None:
            return _error(404, f"No such File object: {ids[0]}")
        self.remove(ids[0])
        if self.lag_listings:
            self.ghosts[ids[0]] = obj
        return httpx.Response(200, json={"id": ids[0], "object": "file", "deleted": True})

    def _content(self, ids, request, call) -> httpx.Response:
        data = self.blobs.get(ids[0])
        if data is None:
            return _error(404, f"No such File object: {ids[0]}")
        purpose = self.files[ids[0]]["purpose"]
        if purpose in self.refused_purposes:
            return _error(400, f"Not allowed to download files of purpose: {purpose}")
        status, headers, body = 200, {}, data
        wanted = request.headers.get("range")
        if wanted and self.honour_range:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start = int(first)
            end = min(int(last) + 1, len(data)) if last else len(data)
            status, body = 206, data[start:end]
            headers["content-range"] = f"bytes {start}-{end - 1}/{len(data)}"
        headers["content-length"] = str(len(body))
        return httpx.Response(status, headers=headers,
                              stream=_Chunks(body, self.chunk_size, call))

    def _create_file(self, ids, request, call) -> httpx.Response:
        call.fields, files = _multipart(request)
        if "file" not in files or "purpose" not in call.fields:
            return _error(400, "file and purpose are required")
        call.file = files["file"]
        filename, data, _ = files["file"]
        obj = self._created(filename, data, call.fields["purpose"])
        return httpx.Response(200, json=_public(obj))

    def _created(self, filename: str, data: bytes, purpose: str) -> dict[str, Any]:
        obj = self.add(filename, data, purpose)
        if self.lag_listings:
            self.unlisted.add(obj["id"])
        return obj

    def _create_upload(self, ids, request, call) -> httpx.Response:
        call.fields = json.loads(request.content)
        upload_id = f"upload_{secrets.token_hex(8)}"
        self.uploads[upload_id] = {
            "id": upload_id, "object": "upload", "bytes": call.fields["bytes"],
            "created_at": next(self._clock), "expires_at": FIRST_CREATED_AT * 2,
            "filename": call.fields["filename"], "purpose": call.fields["purpose"],
            "status": "pending", "file": None, "_parts": [], "_md5": None}
        return httpx.Response(200, json=_public(self.uploads[upload_id]))

    def _upload_part(self, ids, request, call) -> httpx.Response:
        upload = self.uploads.get(ids[0])
        if upload is None or upload["status"] != "pending":
            return _error(400, "no pending Upload of that id")
        _, files = _multipart(request)
        call.file = files["data"]
        part_id = f"part_{secrets.token_hex(8)}"
        self.parts[part_id] = files["data"][1]
        upload["_parts"].append(part_id)
        return httpx.Response(200, json={"id": part_id, "object": "upload.part",
                                         "upload_id": ids[0], "created_at": 1})

    def _complete_upload(self, ids, request, call) -> httpx.Response:
        upload = self.uploads.get(ids[0])
        call.fields = json.loads(request.content)
        if upload is None or upload["status"] != "pending":
            return _error(400, "no pending Upload of that id")
        if any(part not in upload["_parts"] for part in call.fields["part_ids"]):
            return _error(400, "unknown part id")
        data = b"".join(self.parts[part] for part in call.fields["part_ids"])
        if len(data) != upload["bytes"]:
            return _error(400, f"the parts hold {len(data)} bytes, the Upload {upload['bytes']}")
        md5 = call.fields.get("md5")
        if md5 is not None and md5 != hashlib.md5(data).hexdigest():
            return _error(400, "md5 does not match the parts")
        upload["_md5"] = md5
        obj = self._created(upload["filename"], data, upload["purpose"])
        upload["status"], upload["file"] = "completed", _public(obj)
        return httpx.Response(200, json=_public(upload))

    def _cancel_upload(self, ids, request, call) -> httpx.Response:
        upload = self.uploads.get(ids[0])
        if upload is None or upload["status"] != "pending":
            return _error(400, "no pending Upload of that id")
        upload["status"] = "cancelled"
        return httpx.Response(200, json=_public(upload))


def _route(method: str, path: str) -> tuple[str, list[str]]:
    parts = path.removeprefix("/v1/").strip("/").split("/")
    table = {
        ("GET", "files"): "list", ("POST", "files"): "create_file",
        ("GET", "files", "*"): "retrieve", ("DELETE", "files", "*"): "delete",
        ("GET", "files", "*", "content"): "content", ("POST", "uploads"): "create_upload",
        ("POST", "uploads", "*", "parts"): "upload_part",
        ("POST", "uploads", "*", "complete"): "complete_upload",
        ("POST", "uploads", "*", "cancel"): "cancel_upload",
    }
    shape = tuple(part if i % 2 == 0 else "*" for i, part in enumerate(parts))
    ids = [part for i, part in enumerate(parts) if i % 2 == 1]
    return table.get((method, *shape), "unknown"), ids


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if not key.startswith("_")}


def _error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {
        "message": message, "type": "invalid_request_error", "param": None, "code": None}})


_PARAM = re.compile(r';\s*(\w+)="((?:[^"\\]|\\.)*)"')


def _multipart(request: httpx.Request) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """Text fields and file fields of a multipart/form-data body."""
    boundary = request.headers["content-type"].partition("boundary=")[2].strip('"').encode()
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes, str]] = {}
    for chunk in request.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        body = body.removesuffix(b"\r\n")
        headers = {}
        for line in head.decode("utf-8").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        params = dict(_PARAM.findall(headers.get("content-disposition", "")))
        if "filename" in params:
            files[params["name"]] = (params["filename"], body,
                                     headers.get("content-type", ""))
        else:
            fields[params["name"]] = body.decode("utf-8")
    return fields, files
