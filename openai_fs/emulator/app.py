"""The ASGI app of the emulator: the Files and Uploads API under ``/v1``
(:mod:`~openai_fs.emulator.api_routes`) and the control API under ``/_emulator/``
(:mod:`~openai_fs.emulator.control_routes`).

Every ``/v1`` request goes through :meth:`EmulatorApp._v1`: request log entry, authentication,
fault selection, then the Starlette router of the ``/v1`` handlers, through the fault applied.
Handlers raise :class:`~openai_fs.emulator.errors.ErrorReply`; :meth:`EmulatorApp._guarded` turns
it (and Starlette's 404/405) into an OpenAI error body.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Callable, Iterable

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from openai_fs.emulator import errors
from openai_fs.emulator.api_routes import ApiRoutes
from openai_fs.emulator.backend import Backend
from openai_fs.emulator.config import RuntimeConfig
from openai_fs.emulator.control_routes import ControlRoutes, Dropped, Pacer, apply_fault
from openai_fs.emulator.errors import ErrorReply
from openai_fs.emulator.extras import ListingExtras
from openai_fs.emulator.forms import ClientDisconnected
from openai_fs.emulator.responses import error_response
from openai_fs.emulator.store import Store

log = logging.getLogger("openai_fs.emulator")
access_log = logging.getLogger("openai_fs.emulator.access")

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
#: Deliberately says nothing about the key that was sent (the real API echoes part of it).
WRONG_KEY_MESSAGE = "Incorrect API key provided."


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return None


class EmulatorApp:
    def __init__(self, store: Store, *, api_key: str | None = None, config: RuntimeConfig | None = None,
                 faults: Iterable[dict] = (), log_access: bool = False, io_workers: int = 16) -> None:
        self.store = store
        self.api_key = api_key
        self.log_access = log_access
        self.executor = ThreadPoolExecutor(max_workers=io_workers, thread_name_prefix="emulator-io")
        backend = Backend(store, self.executor)
        extras = ListingExtras()
        self.api = ApiRoutes(backend, config=lambda: self.control.config, extras=extras)
        self.control = ControlRoutes(backend, config=config, faults=faults, extras=extras, on_reset=self.api.reset)

    def close(self) -> None:
        self.executor.shutdown(wait=True)

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
            await self._guarded(self.control.router, scope, receive, send_with_id)
        else:
            await self._guarded(self._unknown_url, scope, receive, send_with_id)

    async def _unknown_url(self, scope, receive, send) -> None:
        raise HTTPException(404)

    async def _guarded(self, app: Callable, scope, receive, send) -> None:
        """Run ``app``; answer its ``ErrorReply`` (or Starlette's 404/405, or a crash) as an OpenAI
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
        except ErrorReply as exc:
            error = exc
        except HTTPException as exc:
            where = f"({scope['method']} {scope['path']})"
            if exc.status_code == 405:
                error = ErrorReply(405, f"Invalid method for URL {where}", headers=dict(exc.headers or {}))
            else:
                error = ErrorReply(exc.status_code, f"Invalid URL {where}")
        except Dropped:
            raise
        except Exception:
            if started:
                raise
            log.exception("error handling %s %s", scope["method"], scope["path"])
            error = errors.status_error(500)
        if started:
            raise RuntimeError(f"{error.status} {error.message} after the response had begun")
        await error_response(error)(scope, receive, tracking_send)

    async def _v1(self, scope, receive, send) -> None:
        entry = self.control.requests.start(scope)
        method, path = scope["method"], scope["path"]
        raw_receive = receive

        upstream = Pacer(self.control.config.bandwidth)
        downstream = Pacer(self.control.config.bandwidth)

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
            except ErrorReply as exc:
                await error_response(exc)(scope, counting_receive, counting_send)
                return
            delay, rule, fired = self.control.faults.select(method, path)
            if fired:
                entry["fault"] = rule.kind if rule is not None else "latency"
                for r in fired:
                    log.info("injecting fault %s (%s) into %s %s", r.kind, r.id, method, path)
            delay += self.control.config.latency
            if delay:
                await asyncio.sleep(delay)
            await apply_fault(rule, partial(self._guarded, self.api), scope, counting_receive,
                              counting_send, raw_receive)
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
            raise ErrorReply(401, MISSING_KEY_MESSAGE)
        if self.api_key is not None and not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise ErrorReply(401, WRONG_KEY_MESSAGE, code="invalid_api_key")
