"""Request and response helpers both route sets of the emulator use: JSON and error responses,
the streamed file body, the JSON request body, and the route table entry."""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openai_fs.emulator import errors
from openai_fs.emulator.errors import ErrorReply
from openai_fs.emulator.store import CHUNK_SIZE

#: Largest JSON request body (``POST /uploads``, ``complete``, control API).
JSON_BODY_LIMIT = 16 * 1024 * 1024


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data).encode(), status_code=status, headers=headers,
                    media_type="application/json")


def error_response(exc: ErrorReply, extra_headers: dict[str, str] | None = None) -> Response:
    return Response(exc.body_bytes(), status_code=exc.status, headers={**exc.headers, **(extra_headers or {})},
                    media_type="application/json")


#: Characters RFC 5987 lets stand in an ``ext-value`` (besides letters and digits).
_ATTR_CHARS = "!#$&+-.^_`|~"


def content_disposition(filename: str) -> str:
    """``attachment; filename="..."`` for a download (RFC 6266). The quoted name holds printable
    ASCII only (``"`` and ``\\`` escaped, anything else as ``_``); a name that needs more also
    gets ``filename*=UTF-8''...``, percent-encoded, which clients prefer."""
    fallback = "".join(c if " " <= c <= "~" else "_" for c in filename)
    value = 'attachment; filename="{}"'.format(fallback.replace("\\", "\\\\").replace('"', '\\"'))
    if fallback != filename:
        value += "; filename*=UTF-8''" + quote(filename, safe=_ATTR_CHARS)
    return value


class FileStream(Response):
    """The bytes ``[offset, offset + length)`` of an open file, read by a worker thread one chunk
    ahead of the one being sent. Stops when the client disconnects. Closes the descriptor.

    With ``content_length`` False the response has no ``Content-Length``, so the server sends it
    chunked (HTTP/1.1), as the real service sends content."""

    def __init__(self, fd: int, offset: int, length: int, *, status: int, headers: dict[str, str],
                 executor: ThreadPoolExecutor, content_length: bool = True) -> None:
        # not Response.__init__: it would add a Content-Length for its (empty) body
        self.status_code = status
        self.media_type = "application/octet-stream"
        self.background = None
        self.init_headers({**headers, "content-length": str(length)} if content_length else headers)
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


async def read_json(request: Request) -> Any:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > JSON_BODY_LIMIT:
            raise ErrorReply(413, "The JSON body is too large.")
    try:
        return json.loads(body)
    except ValueError:
        raise errors.invalid(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.") from None


def route(path: str, **handlers: Callable) -> Route:
    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)
    return Route(path, dispatch, methods=list(handlers))
