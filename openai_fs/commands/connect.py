"""The first request of a mount (the credentials check): fails at once when the answer is final,
and says what it is waiting for when the server is slow or silent.

The mount's own client retries quietly with long timeouts, which is right once mounted (the
contract's retry rules) and wrong at the prompt: a wrong ``OPENAI_BASE_URL`` made ``mount``
wait 15 s in silence before it said anything. So the check uses a client of its own that never
retries by itself and gives a connection :data:`CONNECT_TIMEOUT` seconds, and makes the attempts
here, reporting each one:

* a refused connection, an unknown host name, a refused key, a URL without ``/files``: final,
  one line at once;
* no answer yet after :data:`SLOW_NOTICE` seconds: ``connecting to URL ...``;
* a failure worth another try (a timeout, a reset, 429, 5xx): ``connecting to URL (attempt
  2/6): ...``, then a short pause (at most :data:`MAX_PAUSE`, or what the server asks for).
"""

from __future__ import annotations

import errno
import socket
from typing import Callable

import httpx
import trio

from openai_fs.api import (
    APIError,
    APIStatusError,
    AuthenticationError,
    FilesClient,
    NotFoundError,
    PermissionDeniedError,
)
from openai_fs.api.retry import RetryPolicy

#: seconds a connection gets to be made (TCP and TLS) during the check
CONNECT_TIMEOUT = 3.0
#: an attempt that has had no answer for this long gets a line saying what it waits for
SLOW_NOTICE = 1.0
#: the longest pause between two attempts, unless the server asks for a longer one
MAX_PAUSE = 2.0

#: makes the client for the check: ``make(transport=..., retry=...)``
ClientFactory = Callable[..., FilesClient]


class ConnectFailed(Exception):
    """The check failed for good; the message is the one line the user sees."""


class _Watched(httpx.AsyncBaseTransport):
    """The HTTP transport, remembering the last transport failure as httpx raised it (the
    client turns it into an APIError that keeps only its text; the check needs its cause:
    refused, unknown host, timed out)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.failure: httpx.TransportError | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            self.failure = exc
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


async def check(make: ClientFactory, *, attempts: int, report: Callable[[str], None]) -> None:
    """List one file with a client from ``make``; raise :class:`ConnectFailed` with the reason
    once the answer is final or ``attempts`` attempts have failed. ``report`` gets each line
    of progress."""
    transport = _Watched()
    policy = RetryPolicy(max_retries=max(0, attempts - 1))
    async with make(transport=transport,
                    retry=RetryPolicy(max_retries=0, connect=CONNECT_TIMEOUT)) as client:
        url = client.base_url
        for attempt in range(1, attempts + 1):
            transport.failure = None
            error = await _attempt(client, report, f"connecting to {url} ..."
                                   if attempt == 1 else None)
            if error is None:
                return
            cause = transport.failure
            final = _final(error, cause, url)
            if final is not None:
                raise ConnectFailed(final)
            reason = _reason(error, cause)
            if attempt == attempts or not policy.is_retryable(error):
                tries = f" ({attempts} attempts)" if attempts > 1 else ""
                raise ConnectFailed(f"cannot list files at {url}: {reason}{tries}")
            pause = policy.delay(attempt - 1, error)
            asked = getattr(error, "retry_after", None)
            if not (asked is not None and 0 < asked <= policy.max_retry_after):
                pause = min(pause, MAX_PAUSE)
            report(f"connecting to {url} (attempt {attempt + 1}/{attempts} in {pause:.1f} s; "
                   f"the last one: {reason})")
            await trio.sleep(pause)


async def _attempt(client: FilesClient, report: Callable[[str], None],
                   notice: str | None) -> APIError | None:
    """One listing call; its error, or None. ``notice`` is reported if it takes a while."""

    async def notice_when_slow() -> None:
        await trio.sleep(SLOW_NOTICE)
        report(notice)

    error = None
    async with trio.open_nursery() as nursery:
        if notice is not None:
            nursery.start_soon(notice_when_slow)
        try:
            await client.list_page(limit=1)
        except APIError as exc:
            error = exc
        nursery.cancel_scope.cancel()
    return error


def _final(error: APIError, cause: BaseException | None, url: str) -> str | None:
    """The message of a failure that another attempt would not change, or None."""
    if isinstance(error, (AuthenticationError, PermissionDeniedError)):
        return f"the server refused the API key ({error.status}: {error.message})"
    if isinstance(error, NotFoundError):
        return (f"{url} has no /files (404): is OPENAI_BASE_URL right? (the API's ends in "
                "/v1)")
    errors = list(_os_errors(cause))
    if errors and all(isinstance(e, ConnectionRefusedError) for e in errors):
        return f"cannot connect to {url}: connection refused (is the URL right, and the " \
               "server running?)"
    if any(isinstance(e, socket.gaierror) and e.errno in (socket.EAI_NONAME, socket.EAI_FAIL)
           for e in errors):
        host = httpx.URL(url).host
        return f"cannot connect to {url}: unknown host {host!r}"
    return None


def _reason(error: APIError, cause: BaseException | None) -> str:
    """A failure in a few words."""
    if isinstance(cause, httpx.ConnectTimeout):
        return f"no connection within {CONNECT_TIMEOUT:g} s"
    if isinstance(cause, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(error, APIStatusError):
        return f"{error.status} {error.message}"
    for found in _os_errors(cause):
        if found.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "network or host unreachable"
        if found.strerror:
            return found.strerror.lower()
    return error.message


def _os_errors(exc: BaseException | None):
    """The OSErrors behind a transport failure (trio reports one per address it tried, in an
    ExceptionGroup behind the OSError behind httpcore's and httpx's errors)."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        elif isinstance(current, OSError) and current.errno is not None:
            yield current
        pending.extend((current.__cause__, current.__context__))
