"""The emulator's test-facing side: the control API under ``/_emulator/`` (request log,
faults, runtime config, state, reset, clock, seeding, hostile listing entries) and the
application of a fault to a ``/v1`` request (:func:`apply_fault`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import sys
import time
from collections import deque
from dataclasses import asdict, replace
from typing import Any, Callable, Iterable, NoReturn
from urllib.parse import parse_qsl, urlencode

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Router

from openai_fs.emulator import errors
from openai_fs.emulator.api_routes import check_text, parse_range
from openai_fs.emulator.backend import Backend
from openai_fs.emulator.config import RuntimeConfig
from openai_fs.emulator.errors import ErrorReply
from openai_fs.emulator.extras import ListingExtras
from openai_fs.emulator.faults import DIE_EXIT_STATUS, FaultRule, FaultSet
from openai_fs.emulator.responses import FileStream, error_response, json_response, read_json, route

log = logging.getLogger("openai_fs.emulator")

#: Most request log entries kept (the oldest are dropped).
REQUEST_LOG_LIMIT = 100_000
#: Response header naming the fault that altered a response (for test helpers; not in the real API).
FAULT_HEADER = "x-emulator-fault"
#: Body of the ``malformed`` fault: cut off in the middle, so not valid JSON.
MALFORMED_BODY = b'{"object": "file", "id": "file-malformed", "bytes": '


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


class Pacer:
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


class Dropped(Exception):
    """The connection was closed on purpose (a ``truncate`` fault) while the handler was sending."""


def _transport(receive: Callable) -> Any:
    """The connection's transport. uvicorn gives no API for it, so it is reached through the
    request cycle that ``receive`` is a bound method of (true for its h11 and httptools protocols)."""
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("this server does not expose its transport; cannot drop the connection")
    return transport


async def _flush(transport: Any) -> None:
    """Wait (up to 5 s) until the bytes written so far have left for the kernel."""
    deadline = time.monotonic() + 5.0
    while transport.get_write_buffer_size() and not transport.is_closing() and time.monotonic() < deadline:
        await asyncio.sleep(0.002)


async def close_connection(receive: Callable) -> None:
    """Close the client connection under the server's feet, without (more of) a response.

    Bytes already written are flushed first, so a truncated body really carries what was sent.
    Waiting for the server to see the connection as lost keeps it from logging the unfinished
    response as an error.
    """
    cycle = getattr(receive, "__self__", None)
    transport = _transport(receive)
    await _flush(transport)
    transport.close()
    for _ in range(1000):
        if getattr(cycle, "disconnected", True) or getattr(cycle, "response_complete", False):
            break
        await asyncio.sleep(0.001)


async def apply_fault(rule: FaultRule | None, handle: Callable, scope, receive, send, raw_receive) -> None:
    """Answer a ``/v1`` request as the fault ``rule`` (None: no fault) says; ``handle`` is the
    app that answers it normally, ``raw_receive`` the server's own ``receive``."""
    kind = rule.kind if rule is not None else None
    marker = {FAULT_HEADER: kind} if kind else {}

    async def discard(message: dict) -> None:
        pass

    if kind is None or kind == "latency":
        await handle(scope, receive, send)
    elif kind in ("status", "insufficient_quota"):
        await _fault_error(rule, scope, receive, send)
    elif kind == "malformed":
        await Response(MALFORMED_BODY, media_type="application/json", headers=marker)(scope, receive, send)
    elif kind == "drop":
        await close_connection(raw_receive)
    elif kind == "drop_after_commit":
        await handle(scope, receive, discard)
        await close_connection(raw_receive)
    elif kind == "status_after_commit":
        await handle(scope, receive, discard)
        await _fault_error(rule, scope, receive, send)
    elif kind == "die":
        await _die(rule, handle, scope, receive, send, raw_receive)
    elif kind == "stall":
        await _stall(rule, handle, scope, receive, send)
    elif kind == "stuck_cursor":
        await _stuck_cursor(handle, scope, receive, send)
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
                await close_connection(raw_receive)
                raise Dropped()

        try:
            await handle(scope, receive, truncating_send)
        except Dropped:
            pass


async def _exit_now(raw_receive: Callable) -> NoReturn:
    """End the whole process at once, as a kill would, once what was sent has left."""
    await _flush(_transport(raw_receive))
    log.info("fault die: the emulator exits now (status %d)", DIE_EXIT_STATUS)
    sys.stderr.flush()
    os._exit(DIE_EXIT_STATUS)


async def _die(rule: FaultRule, handle: Callable, scope, receive, send, raw_receive) -> None:
    """Exit after ``rule.after_bytes`` bytes of the request body (a request that has one, which
    is then never answered) or of the response body (any other request)."""
    limit = rule.after_bytes
    moved = 0
    if limit == 0:
        await _exit_now(raw_receive)
    if scope["method"] in ("POST", "PUT", "PATCH"):
        async def dying_receive() -> dict:
            nonlocal moved
            message = await receive()
            moved += len(message.get("body", b""))
            if moved >= limit or not message.get("more_body", False):
                await _exit_now(raw_receive)
            return message

        async def silent_send(message: dict) -> None:
            await _exit_now(raw_receive)  # answering before the whole body came (an error)

        await handle(scope, dying_receive, silent_send)
    else:
        async def dying_send(message: dict) -> None:
            nonlocal moved
            if message["type"] == "http.response.start":
                await send({**message, "headers": [*message.get("headers", []), (FAULT_HEADER.encode(), b"die")]})
                return
            piece = message.get("body", b"")[:limit - moved]
            if piece:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                moved += len(piece)
            if moved >= limit or not message.get("more_body", False):
                await _exit_now(raw_receive)

        await handle(scope, receive, dying_send)
    await _exit_now(raw_receive)


async def _until_gone(receive: Callable) -> None:
    """Wait, answering nothing, until the client closes the connection (a request body still
    arriving is read and dropped, so that its end is seen)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _stall(rule: FaultRule, handle: Callable, scope, receive, send) -> None:
    """Go silent after ``rule.after_bytes`` bytes of the response body (before handling, for 0)."""
    limit = rule.after_bytes
    if limit == 0:
        await _until_gone(receive)
        return
    sent = 0

    async def stalling_send(message: dict) -> None:
        nonlocal sent
        if message["type"] == "http.response.start":
            await send({**message, "headers": [*message.get("headers", []), (FAULT_HEADER.encode(), b"stall")]})
            return
        piece = message.get("body", b"")[:limit - sent]
        if piece:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            sent += len(piece)
        if sent >= limit or not message.get("more_body", False):
            await _until_gone(receive)
            raise ClientDisconnect()

    await handle(scope, receive, stalling_send)


async def _stuck_cursor(handle: Callable, scope, receive, send) -> None:
    """Answer a listing as if ``after`` had not been sent, claiming that more pages follow."""
    query = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
             if k != "after"]
    start: dict | None = None
    body = bytearray()

    async def rewriting_send(message: dict) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        body.extend(message.get("body", b""))
        if message.get("more_body", False):
            return
        assert start is not None
        headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
        content = bytes(body)
        if start["status"] == 200:
            listing = json.loads(content)
            listing["has_more"] = True
            content = json.dumps(listing).encode()
            headers.append((FAULT_HEADER.encode(), b"stuck_cursor"))
        headers.append((b"content-length", str(len(content)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": content, "more_body": False})

    await handle({**scope, "query_string": urlencode(query).encode()}, receive, rewriting_send)


async def _fault_error(rule: FaultRule, scope, receive, send) -> None:
    assert rule.status is not None
    exc = errors.status_error(rule.status, rule.message, code=rule.code, type=rule.type)
    await error_response(exc, {**rule.retry_headers(), FAULT_HEADER: rule.kind})(scope, receive, send)


class ControlRoutes:
    """The ``/_emulator`` handlers (no auth, meant for loopback), and what they control: the
    runtime config (``config``, back to ``initial_config`` on reset), the fault rules and the
    request log. ``on_reset`` is called when the store is reset."""

    def __init__(self, backend: Backend, *, config: RuntimeConfig | None = None, faults: Iterable[dict] = (),
                 extras: ListingExtras | None = None, on_reset: Callable[[], None] = lambda: None) -> None:
        self.backend = backend
        self.extras = extras if extras is not None else ListingExtras()
        self.store = backend.store
        self.on_reset = on_reset
        self.initial_config = config or RuntimeConfig()
        self.config = replace(self.initial_config)
        self.faults = FaultSet()
        for spec in faults:
            spec = dict(spec)
            self.faults.add(spec.pop("kind"), **spec)
        self.requests = RequestLog()
        self.router = Router(redirect_slashes=False, routes=[
            route("/_emulator/requests", GET=self.ctl_requests, DELETE=self.ctl_clear_requests),
            route("/_emulator/faults", GET=self.ctl_faults, POST=self.ctl_add_fault,
                  DELETE=self.ctl_clear_faults),
            route("/_emulator/faults/{fault_id}", DELETE=self.ctl_remove_fault),
            route("/_emulator/config", GET=self.ctl_config, PATCH=self.ctl_set_config),
            route("/_emulator/state", GET=self.ctl_state),
            route("/_emulator/files/{file_id}/content", GET=self.ctl_stored_content),
            route("/_emulator/reset", POST=self.ctl_reset),
            route("/_emulator/clock", GET=self.ctl_clock, POST=self.ctl_advance_clock),
            route("/_emulator/seed", POST=self.ctl_seed),
            route("/_emulator/listing_extras", GET=self.ctl_listing_extras, POST=self.ctl_add_listing_extras,
                  DELETE=self.ctl_clear_listing_extras),
        ])

    async def ctl_requests(self, request: Request) -> Response:
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            raise errors.invalid("'since' must be an integer", param="since") from None
        return json_response(self.requests.list(since))

    async def ctl_clear_requests(self, request: Request) -> Response:
        self.requests.clear()
        return json_response({"cleared": True})

    async def ctl_faults(self, request: Request) -> Response:
        return json_response(self.faults.list())

    async def ctl_add_fault(self, request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict) or "kind" not in body:
            raise errors.invalid("A fault is a JSON object with a 'kind'.", param="kind")
        params = dict(body)
        try:
            rule = self.faults.add(str(params.pop("kind")), **params)
        except ValueError as exc:
            raise errors.invalid(str(exc)) from None
        return json_response(rule.to_dict())

    async def ctl_clear_faults(self, request: Request) -> Response:
        self.faults.clear()
        return json_response({"cleared": True})

    async def ctl_remove_fault(self, request: Request) -> Response:
        fault_id = request.path_params["fault_id"]
        if not self.faults.remove(fault_id):
            raise ErrorReply(404, f"No such fault: {fault_id}", param="id")
        return json_response({"id": fault_id, "deleted": True})

    async def ctl_config(self, request: Request) -> Response:
        return json_response(asdict(self.config))

    async def ctl_set_config(self, request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise errors.invalid("The config change must be a JSON object.")
        self.config = self.config.update(body)
        return json_response(asdict(self.config))

    async def ctl_state(self, request: Request) -> Response:
        await self.backend.expire()
        return json_response(self.store.state())

    async def ctl_stored_content(self, request: Request) -> Response:
        """The bytes the store holds for a live file, whatever its purpose (one ``Range`` is
        honoured): what tests compare uploads with, since the public API refuses the content
        of some purposes."""
        file_id = request.path_params["file_id"]
        await self.backend.expire()
        if self.store.get_file(file_id) is None:
            raise errors.no_such_file(file_id)
        try:
            fd = await self.backend.run(os.open, self.store.file_path(file_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # deleted meanwhile
            raise errors.no_such_file(file_id) from None
        try:
            size = os.fstat(fd).st_size
            wanted = parse_range(request.headers.get("range"), size)
            if isinstance(wanted, tuple):       # one range, for checks of large files
                first, last = wanted
                return FileStream(fd, first, last - first + 1, status=206,
                                  headers={"content-range": f"bytes {first}-{last}/{size}"},
                                  executor=self.backend.executor)
            return FileStream(fd, 0, size, status=200, headers={}, executor=self.backend.executor)
        except BaseException:
            os.close(fd)
            raise

    async def ctl_reset(self, request: Request) -> Response:
        self.faults.clear()
        self.config = replace(self.initial_config)
        self.requests.clear()
        self.extras.clear()
        self.on_reset()
        await self.backend.run(self.store.reset)
        return json_response({"reset": True})

    async def ctl_listing_extras(self, request: Request) -> Response:
        return json_response(self.extras.list())

    async def ctl_add_listing_extras(self, request: Request) -> Response:
        """Raw entries for every ``GET /files`` page: a JSON list (every listing), or
        ``{"purpose": P, "entries": [...]}`` (listings of P, and unfiltered ones)."""
        body = await read_json(request)
        purpose = None
        if isinstance(body, dict):
            unknown = set(body) - {"purpose", "entries"}
            if unknown:
                raise errors.unrecognized_argument(sorted(unknown)[0])
            purpose, body = body.get("purpose"), body.get("entries")
            if purpose is not None and not isinstance(purpose, str):
                raise errors.invalid("'purpose' must be a string or null.", param="purpose")
        if not isinstance(body, list):
            raise errors.invalid("Expected a JSON list of entries, or {\"purpose\": ..., \"entries\": [...]}.",
                                 param="entries")
        self.extras.add(body, purpose)
        return json_response({"added": len(body), "total": len(self.extras)})

    async def ctl_clear_listing_extras(self, request: Request) -> Response:
        self.extras.clear()
        return json_response({"cleared": True})

    async def ctl_clock(self, request: Request) -> Response:
        return json_response({"now": self.store.clock.now(), "offset": self.store.clock.offset})

    async def ctl_advance_clock(self, request: Request) -> Response:
        body = await read_json(request)
        advance = body.get("advance") if isinstance(body, dict) else None
        if isinstance(advance, bool) or not isinstance(advance, (int, float)):
            raise errors.invalid("Expected {\"advance\": seconds}.", param="advance")
        now = self.store.advance_clock(float(advance))
        await self.backend.expire()
        return json_response({"now": now, "offset": self.store.clock.offset})

    async def ctl_seed(self, request: Request) -> Response:
        """Insert files directly (any purpose, output-only ones included). The body is one object
        ``{filename, purpose, content_b64, created_at?, expires_at?}`` or a list of them."""
        body = await read_json(request)
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
            check_text(filename, "filename")
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

        created = await self.backend.run(insert)
        return json_response(created if isinstance(body, list) else created[0])
