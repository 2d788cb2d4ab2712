"""The ASGI app of the emulator: the Files and Uploads API under ``/v1`` and the control API under
``/_emulator/``.

Every ``/v1`` request goes through :meth:`EmulatorApp._v1`: request log entry, authentication,
fault selection, then the Starlette router with the handlers below. Handlers raise
:class:`~openai_fs.emulator.errors.APIError`; :meth:`EmulatorApp._guarded` turns it (and Starlette's
404/405) into an OpenAI error body. Blob I/O runs on a worker pool; bodies are streamed both ways.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import os
import secrets
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, Router

from openai_fs.core import purposes
from openai_fs.emulator import errors
from openai_fs.emulator.errors import APIError
from openai_fs.emulator.faults import FaultRule, FaultSet
from openai_fs.emulator.forms import ClientDisconnected, read_form
from openai_fs.emulator.store import CHUNK_SIZE, FileRecord, Store, UnknownCursor, UploadRecord, remove_paths

log = logging.getLogger("openai_fs.emulator")
access_log = logging.getLogger("openai_fs.emulator.access")

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
#: Deliberately says nothing about the key that was sent (the real API echoes part of it).
WRONG_KEY_MESSAGE = "Incorrect API key provided."
#: Largest JSON request body (``POST /uploads``, ``complete``, control API).
JSON_BODY_LIMIT = 16 * 1024 * 1024
#: Most request log entries kept (the oldest are dropped).
REQUEST_LOG_LIMIT = 100_000
#: Response header naming the fault that altered a response (for test helpers; not in the real API).
FAULT_HEADER = "x-emulator-fault"
#: Body of the ``malformed`` fault: cut off in the middle, so not valid JSON.
MALFORMED_BODY = b'{"object": "file", "id": "file-malformed", "bytes": '
EXPIRES_AFTER_PARAM = "expires_after"


@dataclass
class RuntimeConfig:
    """What ``PATCH /_emulator/config`` may change at runtime."""
    ignore_range: bool = False
    page_cap: int | None = None
    latency: float = 0.0
    #: bytes per second each request's body and each response's body may move (a slower
    #: link than loopback, for benchmarks that should resemble a real network); None: no limit
    bandwidth: float | None = None

    def update(self, changes: dict) -> "RuntimeConfig":
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise errors.invalid(f"Unknown config key: {key}", param=key)
        new = replace(self, **changes)
        if not isinstance(new.ignore_range, bool):
            raise errors.invalid("ignore_range must be a boolean", param="ignore_range")
        if new.page_cap is not None and (isinstance(new.page_cap, bool) or not isinstance(new.page_cap, int)
                                         or new.page_cap < 1):
            raise errors.invalid("page_cap must be null or a positive integer", param="page_cap")
        if isinstance(new.latency, bool) or not isinstance(new.latency, (int, float)) or new.latency < 0:
            raise errors.invalid("latency must be a non-negative number of seconds", param="latency")
        new.latency = float(new.latency)
        if new.bandwidth is not None and (isinstance(new.bandwidth, bool)
                                          or not isinstance(new.bandwidth, (int, float))
                                          or new.bandwidth <= 0):
            raise errors.invalid("bandwidth must be null or a positive number of bytes per second",
                                 param="bandwidth")
        return new


class RequestLog:
    """Every ``/v1`` request, newest last, for tests and benchmarks to count and inspect."""

    def __init__(self, limit: int = REQUEST_LOG_LIMIT) -> None:
        self._entries: deque[dict] = deque(maxlen=limit)
        self._seq = 0

    def start(self, scope: dict) -> dict:
        self._seq += 1
        headers = dict(scope.get("headers") or [])
        rng = headers.get(b"range")
        entry = {"seq": self._seq, "method": scope["method"], "path": scope["path"],
                 "query": dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)),
                 "status": None, "range": rng.decode("latin-1") if rng is not None else None, "fault": None,
                 "request_bytes": 0, "response_bytes": 0, "started": time.time(), "duration": None}
        self._entries.append(entry)
        return entry

    def list(self, since: int = 0) -> list[dict]:
        return [e for e in self._entries if e["seq"] > since]

    def clear(self) -> None:
        self._entries.clear()


class _Pacer:
    """Holds a body to ``bandwidth`` bytes per second by sleeping after each piece."""

    def __init__(self, bandwidth: float | None) -> None:
        self.bandwidth = bandwidth
        self.started: float | None = None
        self.total = 0

    async def moved(self, count: int) -> None:
        if not self.bandwidth or not count:
            return
        if self.started is None:
            self.started = time.monotonic()
        self.total += count
        ahead = self.total / self.bandwidth - (time.monotonic() - self.started)
        if ahead > 0:
            await asyncio.sleep(ahead)


class _Dropped(Exception):
    """The connection was closed on purpose (a ``truncate`` fault) while the handler was sending."""


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data).encode(), status_code=status, headers=headers,
                    media_type="application/json")


def _error_response(exc: APIError, extra_headers: dict[str, str] | None = None) -> Response:
    return Response(exc.body_bytes(), status_code=exc.status, headers={**exc.headers, **(extra_headers or {})},
                    media_type="application/json")


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return None


async def _close_connection(receive: Callable) -> None:
    """Close the client connection under the server's feet, without (more of) a response.

    uvicorn gives no API for this, so it reaches the transport through the request cycle that
    ``receive`` is a bound method of (true for its h11 and httptools protocols). Bytes already
    written are flushed first, so a truncated body really carries what was sent. Waiting for the
    server to see the connection as lost keeps it from logging the unfinished response as an error.
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("this server does not expose its transport; cannot drop the connection")
    deadline = time.monotonic() + 5.0
    while transport.get_write_buffer_size() and not transport.is_closing() and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
    transport.close()
    for _ in range(1000):
        if getattr(cycle, "disconnected", True) or getattr(cycle, "response_complete", False):
            break
        await asyncio.sleep(0.001)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
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


class FileStream(Response):
    """The bytes ``[offset, offset + length)`` of an open file, read by a worker thread one chunk
    ahead of the one being sent. Stops when the client disconnects. Closes the descriptor."""

    def __init__(self, fd: int, offset: int, length: int, *, status: int, headers: dict[str, str],
                 executor: ThreadPoolExecutor) -> None:
        super().__init__(status_code=status, headers={**headers, "content-length": str(length)},
                         media_type="application/octet-stream")
        self.fd, self.offset, self.length, self.executor = fd, offset, length, executor

    async def __call__(self, scope, receive, send) -> None:
        pending: Future | None = None
        watcher: asyncio.Task | None = None
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if scope["method"] == "HEAD" or self.length == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            watcher = asyncio.ensure_future(_wait_disconnect(receive))
            offset, remaining = self.offset, self.length
            pending = self.executor.submit(os.pread, self.fd, min(CHUNK_SIZE, remaining), offset)
            while remaining:
                chunk = await asyncio.wrap_future(pending)
                pending = None
                if not chunk:
                    raise RuntimeError("file is shorter than its recorded size")
                offset += len(chunk)
                remaining -= len(chunk)
                if remaining:
                    pending = self.executor.submit(os.pread, self.fd, min(CHUNK_SIZE, remaining), offset)
                await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
                if watcher.done():
                    break
        finally:
            if watcher is not None:
                watcher.cancel()
            if pending is not None and not pending.done():
                # a worker is still reading: close the descriptor once it is done with it
                pending.add_done_callback(lambda _f, fd=self.fd: os.close(fd))
            else:
                os.close(self.fd)


async def _wait_disconnect(receive: Callable) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _check_text(value: str, param: str) -> None:
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


class EmulatorApp:
    def __init__(self, store: Store, *, api_key: str | None = None, config: RuntimeConfig | None = None,
                 faults: Iterable[dict] = (), log_access: bool = False, io_workers: int = 16) -> None:
        self.store = store
        self.api_key = api_key
        self.initial_config = config or RuntimeConfig()
        self.config = replace(self.initial_config)
        self.faults = FaultSet()
        for spec in faults:
            spec = dict(spec)
            self.faults.add(spec.pop("kind"), **spec)
        self.requests = RequestLog()
        self.log_access = log_access
        self.executor = ThreadPoolExecutor(max_workers=io_workers, thread_name_prefix="emulator-io")
        self._completing: set[str] = set()
        self.v1 = Router(redirect_slashes=False, routes=[
            self._route("/v1/files", GET=self.list_files, POST=self.create_file),
            self._route("/v1/files/{file_id}", GET=self.retrieve_file, DELETE=self.delete_file),
            self._route("/v1/files/{file_id}/content", GET=self.file_content),
            self._route("/v1/uploads", POST=self.create_upload),
            self._route("/v1/uploads/{upload_id}/parts", POST=self.add_part),
            self._route("/v1/uploads/{upload_id}/complete", POST=self.complete_upload),
            self._route("/v1/uploads/{upload_id}/cancel", POST=self.cancel_upload),
        ])
        self.control = Router(redirect_slashes=False, routes=[
            self._route("/_emulator/requests", GET=self.ctl_requests, DELETE=self.ctl_clear_requests),
            self._route("/_emulator/faults", GET=self.ctl_faults, POST=self.ctl_add_fault,
                        DELETE=self.ctl_clear_faults),
            self._route("/_emulator/faults/{fault_id}", DELETE=self.ctl_remove_fault),
            self._route("/_emulator/config", GET=self.ctl_config, PATCH=self.ctl_set_config),
            self._route("/_emulator/state", GET=self.ctl_state),
            self._route("/_emulator/reset", POST=self.ctl_reset),
            self._route("/_emulator/clock", GET=self.ctl_clock, POST=self.ctl_advance_clock),
            self._route("/_emulator/seed", POST=self.ctl_seed),
        ])

    def close(self) -> None:
        self.executor.shutdown(wait=True)

    @staticmethod
    def _route(path: str, **handlers: Callable) -> Route:
        async def dispatch(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await handlers[method](request)
        return Route(path, dispatch, methods=list(handlers))

    async def _blocking(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args))

    async def _expire(self) -> None:
        """Lazy expiry: tombstone expired files and Uploads, then drop their bytes off the loop."""
        paths = self.store.expire_due()
        if paths:
            await self._blocking(remove_paths, paths)

    # -- ASGI entry -------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        request_id = ("req_" + secrets.token_hex(16)).encode()

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id)]}
            await send(message)

        scope["app"] = self  # makes Starlette's routers raise HTTPException for 404/405
        path = scope["path"]
        if path == "/v1" or path.startswith("/v1/"):
            await self._v1(scope, receive, send_with_id)
        elif path.startswith("/_emulator/"):
            await self._guarded(self.control, scope, receive, send_with_id)
        else:
            await self._guarded(self._unknown_url, scope, receive, send_with_id)

    async def _unknown_url(self, scope, receive, send) -> None:
        raise HTTPException(404)

    async def _guarded(self, app: Callable, scope, receive, send) -> None:
        """Run ``app``; answer its ``APIError`` (or Starlette's 404/405, or a crash) as an OpenAI
        error, unless the response had already begun."""
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, receive, tracking_send)
            return
        except (ClientDisconnected, ClientDisconnect):
            return
        except APIError as exc:
            error = exc
        except HTTPException as exc:
            where = f"({scope['method']} {scope['path']})"
            if exc.status_code == 405:
                error = APIError(405, f"Invalid method for URL {where}", headers=dict(exc.headers or {}))
            else:
                error = APIError(exc.status_code, f"Invalid URL {where}")
        except _Dropped:
            raise
        except Exception:
            if started:
                raise
            log.exception("error handling %s %s", scope["method"], scope["path"])
            error = errors.status_error(500)
        if started:
            raise RuntimeError(f"{error.status} {error.message} after the response had begun")
        await _error_response(error)(scope, receive, tracking_send)

    async def _v1(self, scope, receive, send) -> None:
        entry = self.requests.start(scope)
        method, path = scope["method"], scope["path"]
        raw_receive = receive

        upstream = _Pacer(self.config.bandwidth)
        downstream = _Pacer(self.config.bandwidth)

        async def counting_receive() -> dict:
            message = await raw_receive()
            entry["request_bytes"] += len(message.get("body", b""))
            await upstream.moved(len(message.get("body", b"")))
            return message

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            else:
                entry["response_bytes"] += len(message.get("body", b""))
                await downstream.moved(len(message.get("body", b"")))
            await send(message)

        started = time.monotonic()
        try:
            try:
                self._authenticate(scope)
            except APIError as exc:
                await _error_response(exc)(scope, counting_receive, counting_send)
                return
            delay, rule, fired = self.faults.select(method, path)
            if fired:
                entry["fault"] = rule.kind if rule is not None else "latency"
                for r in fired:
                    log.info("injecting fault %s (%s) into %s %s", r.kind, r.id, method, path)
            delay += self.config.latency
            if delay:
                await asyncio.sleep(delay)
            await self._handle_with_fault(rule, scope, counting_receive, counting_send, raw_receive)
        finally:
            entry["duration"] = time.monotonic() - started
            if self.log_access:
                access_log.info("%s %s %s %d %d %.3fs%s", method, path, entry["status"] or "-",
                                entry["request_bytes"], entry["response_bytes"], entry["duration"],
                                f" fault={entry['fault']}" if entry["fault"] else "")

    def _authenticate(self, scope) -> None:
        scheme, _, key = (_header(scope, b"authorization") or "").strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise APIError(401, MISSING_KEY_MESSAGE)
        if self.api_key is not None and not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise APIError(401, WRONG_KEY_MESSAGE, code="invalid_api_key")

    async def _handle_with_fault(self, rule: FaultRule | None, scope, receive, send, raw_receive) -> None:
        handle = partial(self._guarded, self.v1)
        kind = rule.kind if rule is not None else None
        marker = {FAULT_HEADER: kind} if kind else {}

        async def discard(message: dict) -> None:
            pass

        if kind is None or kind == "latency":
            await handle(scope, receive, send)
        elif kind == "status":
            await self._fault_error(rule, scope, receive, send)
        elif kind == "malformed":
            await Response(MALFORMED_BODY, media_type="application/json", headers=marker)(scope, receive, send)
        elif kind == "drop":
            await _close_connection(raw_receive)
        elif kind == "drop_after_commit":
            await handle(scope, receive, discard)
            await _close_connection(raw_receive)
        elif kind == "status_after_commit":
            await handle(scope, receive, discard)
            await self._fault_error(rule, scope, receive, send)
        elif kind == "truncate":
            sent = 0

            async def truncating_send(message: dict) -> None:
                nonlocal sent
                if message["type"] == "http.response.start":
                    await send({**message, "headers": [*message.get("headers", []),
                                                       (FAULT_HEADER.encode(), b"truncate")]})
                    return
                body = message.get("body", b"")
                piece = body[:max(0, rule.after_bytes - sent)]
                if piece:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                    sent += len(piece)
                if sent >= rule.after_bytes or not message.get("more_body", False):
                    await _close_connection(raw_receive)
                    raise _Dropped()

            try:
                await handle(scope, receive, truncating_send)
            except _Dropped:
                pass

    async def _fault_error(self, rule: FaultRule, scope, receive, send) -> None:
        assert rule.status is not None
        exc = errors.status_error(rule.status, rule.message)
        await _error_response(exc, {**rule.retry_headers(), FAULT_HEADER: rule.kind})(scope, receive, send)

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
        if self.config.page_cap is not None:
            limit = min(limit, self.config.page_cap)
        await self._expire()
        try:
            page, has_more = self.store.list_files(purpose=purpose, limit=limit, order=order, after=after)
        except UnknownCursor:
            raise errors.invalid(f"Invalid 'after': no such object: {after}", param="after") from None
        data = [rec.api() for rec in page]
        return _json({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                      "last_id": data[-1]["id"] if data else None, "has_more": has_more})

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
            _check_text(blob.filename, "file")
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
            rec = await self._blocking(partial(self.store.add_file, blob.path, blob.filename, purpose, blob.size,
                                               expires_after_seconds=expiry))
        except BaseException:
            if blob is not None:
                await self._blocking(remove_paths, [blob.path])
            raise
        return _json(rec.api())

    async def _live_file(self, file_id: str) -> FileRecord:
        await self._expire()
        rec = self.store.get_file(file_id)
        if rec is None:
            raise errors.no_such_file(file_id)
        return rec

    async def retrieve_file(self, request: Request) -> Response:
        return _json((await self._live_file(request.path_params["file_id"])).api())

    async def delete_file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        await self._expire()
        rec = self.store.delete_file(file_id)
        if rec is None:
            raise errors.no_such_file(file_id)
        await self._blocking(remove_paths, [self.store.file_path(file_id)])
        return _json({"id": file_id, "object": "file", "deleted": True})

    async def file_content(self, request: Request) -> Response:
        rec = await self._live_file(request.path_params["file_id"])
        try:
            fd = await self._blocking(os.open, self.store.file_path(rec.id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # deleted meanwhile
            raise errors.no_such_file(rec.id) from None
        try:
            size = os.fstat(fd).st_size
            headers: dict[str, str] = {}
            wanted = None
            if not self.config.ignore_range:
                headers["accept-ranges"] = "bytes"
                wanted = _parse_range(request.headers.get("range"), size)
            if wanted == "unsatisfiable":
                raise APIError(416, f"Requested range not satisfiable: the file has {size} bytes.",
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

    async def _read_json(self, request: Request) -> Any:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > JSON_BODY_LIMIT:
                raise APIError(413, "The JSON body is too large.")
        try:
            return json.loads(body)
        except ValueError:
            raise errors.invalid(
                "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.") from None

    async def _json_object(self, request: Request, allowed: Iterable[str], required: Iterable[str]) -> dict:
        body = await self._read_json(request)
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
        await self._expire()
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
        _check_text(filename, "filename")
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
        return _json(_upload_api(upload))

    @staticmethod
    def _not_pending(upload: UploadRecord, action: str) -> APIError:
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
        part = await self._blocking(self.store.add_part, upload.id, form.blob.path, form.blob.size)
        if part is None:  # completed, cancelled or expired while the part was arriving
            await self._blocking(remove_paths, [form.blob.path])
            raise self._not_pending(await self._upload(upload.id), "add a Part to")
        return _json(part.api())

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
            blob, size, digest = await self._blocking(self.store.assemble, part_ids, md5 is not None)
            if md5 is not None and digest != md5.strip().lower():
                await self._blocking(remove_paths, [blob])
                raise errors.invalid(f"The md5 checksum of the assembled file is {digest}, not the expected "
                                     f"{md5}.", param="md5")
            done = await self._blocking(self.store.complete_upload, upload.id, blob, size)
            if done is None:
                await self._blocking(remove_paths, [blob])
                raise self._not_pending(await self._upload(upload.id), "complete")
        finally:
            self._completing.discard(upload.id)
        upload, rec, part_paths = done
        await self._blocking(remove_paths, part_paths)
        return _json(_upload_api(upload, rec))

    async def cancel_upload(self, request: Request) -> Response:
        upload = await self._upload(request.path_params["upload_id"])
        done = self.store.cancel_upload(upload.id)
        if done is None:
            raise self._not_pending(upload, "cancel")
        upload, part_paths = done
        await self._blocking(remove_paths, part_paths)
        return _json(_upload_api(upload))

    # -- /_emulator (control; no auth, meant for loopback) ------------------------------------

    async def ctl_requests(self, request: Request) -> Response:
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            raise errors.invalid("'since' must be an integer", param="since") from None
        return _json(self.requests.list(since))

    async def ctl_clear_requests(self, request: Request) -> Response:
        self.requests.clear()
        return _json({"cleared": True})

    async def ctl_faults(self, request: Request) -> Response:
        return _json(self.faults.list())

    async def ctl_add_fault(self, request: Request) -> Response:
        body = await self._read_json(request)
        if not isinstance(body, dict) or "kind" not in body:
            raise errors.invalid("A fault is a JSON object with a 'kind'.", param="kind")
        params = dict(body)
        try:
            rule = self.faults.add(str(params.pop("kind")), **params)
        except ValueError as exc:
            raise errors.invalid(str(exc)) from None
        return _json(rule.to_dict())

    async def ctl_clear_faults(self, request: Request) -> Response:
        self.faults.clear()
        return _json({"cleared": True})

    async def ctl_remove_fault(self, request: Request) -> Response:
        fault_id = request.path_params["fault_id"]
        if not self.faults.remove(fault_id):
            raise APIError(404, f"No such fault: {fault_id}", param="id")
        return _json({"id": fault_id, "deleted": True})

    async def ctl_config(self, request: Request) -> Response:
        return _json(asdict(self.config))

    async def ctl_set_config(self, request: Request) -> Response:
        body = await self._read_json(request)
        if not isinstance(body, dict):
            raise errors.invalid("The config change must be a JSON object.")
        self.config = self.config.update(body)
        return _json(asdict(self.config))

    async def ctl_state(self, request: Request) -> Response:
        await self._expire()
        return _json(self.store.state())

    async def ctl_reset(self, request: Request) -> Response:
        self.faults.clear()
        self.config = replace(self.initial_config)
        self.requests.clear()
        self._completing.clear()
        await self._blocking(self.store.reset)
        return _json({"reset": True})

    async def ctl_clock(self, request: Request) -> Response:
        return _json({"now": self.store.clock.now(), "offset": self.store.clock.offset})

    async def ctl_advance_clock(self, request: Request) -> Response:
        body = await self._read_json(request)
        advance = body.get("advance") if isinstance(body, dict) else None
        if isinstance(advance, bool) or not isinstance(advance, (int, float)):
            raise errors.invalid("Expected {\"advance\": seconds}.", param="advance")
        now = self.store.advance_clock(float(advance))
        await self._expire()
        return _json({"now": now, "offset": self.store.clock.offset})

    async def ctl_seed(self, request: Request) -> Response:
        """Insert files directly (any purpose, output-only ones included). The body is one object
        ``{filename, purpose, content_b64, created_at?, expires_at?}`` or a list of them."""
        body = await self._read_json(request)
        items = body if isinstance(body, list) else [body]
        specs = []
        for item in items:
            if not isinstance(item, dict):
                raise errors.invalid("Each seeded file must be a JSON object.")
            unknown = set(item) - {"filename", "purpose", "content_b64", "created_at", "expires_at"}
            if unknown:
                raise errors.unrecognized_argument(sorted(unknown)[0])
            filename, purpose = item.get("filename"), item.get("purpose")
            if not isinstance(filename, str) or not isinstance(purpose, str) or not purpose:
                raise errors.invalid("'filename' and 'purpose' must be strings.")
            _check_text(filename, "filename")
            try:
                content = base64.b64decode(item.get("content_b64", ""), validate=True)
            except (binascii.Error, TypeError):
                raise errors.invalid("'content_b64' must be base64.", param="content_b64") from None
            for key in ("created_at", "expires_at"):
                value = item.get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise errors.invalid(f"'{key}' must be an integer.", param=key)
            specs.append((filename, purpose, content, item.get("created_at"), item.get("expires_at")))

        def insert() -> list[dict]:
            return [self.store.add_file(self.store.write_blob(content), filename, purpose, len(content),
                                        created_at=created_at, expires_at=expires_at).api()
                    for filename, purpose, content, created_at, expires_at in specs]

        created = await self._blocking(insert)
        return _json(created if isinstance(body, list) else created[0])
