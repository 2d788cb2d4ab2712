"""Every limit on waiting for the server, in one place: :class:`RetryPolicy`, one budget per
phase of a request (docs/SEMANTICS.md, "Retries and time limits"; ``openai-fs mount --help``).

An *operation* is what one call of the client does: a listing with all its pages, a download
with all its resumptions, an upload with the search for the file a failed attempt may have
made. Every retry loop inside an operation spends that operation's one budget
(:class:`Operation`), so nested retries never multiply it.

=====================  ==========================================================================
phase                  limit (option, default)
=====================  ==========================================================================
a dead server          connection refused or reset, or no byte for ``timeout`` seconds while an
                       answer or a body is awaited: retried with backoff (0.5 s doubling to 8 s,
                       x0.75..1 jitter) at most ``max_retries`` times (``--retries``, 5), and
                       never once ``timeout`` seconds (``--timeout``, 30) have passed since the
                       server's last sign of life (an answer, new bytes of a body); then the
                       operation fails. Once an operation gave the server up that way, later
                       ones (the kernel retries a failed read, programs try again) make one
                       quick try each (``probe``, 2 s to connect and to answer) until the
                       server shows life again.
error answers          408, 409, 429 and 5xx: retried with the same backoff, at most
                       ``max_retries`` times, or after what ``retry-after-ms``/``Retry-After``
                       asks when that is at most ``max_retry_after`` (120 s; a longer wait is
                       not retried, as the SDK does). Never retried: 400, 401, 403, 404, 413,
                       422 and a 429 that says the quota is used up (``insufficient_quota``),
                       which waiting cannot fix.
a transfer             no limit while bytes arrive: each new byte is a sign of life, and a body
                       that breaks is resumed from its first missing byte; every
                       :data:`~openai_fs.api.content.RESUME_PROGRESS` bytes start the count of
                       retries afresh.
the server's work      after the whole body of an upload is sent (``POST /files``, a Part,
after an upload        completing an Upload), the server may stay silent up to ``processing``
                       seconds (``--processing-timeout``, 600) before it answers.
=====================  ==========================================================================

The retry loops themselves are tenacity's.
"""

from __future__ import annotations

import contextvars
import email.utils
import logging
import random
import time
from dataclasses import dataclass

import httpx
import tenacity
import trio

from openai_fs.api.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    QuotaExceededError,
)

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 409, 429})
#: the ``code`` of a 401 for a key the server does not know
INVALID_KEY_CODE = "invalid_api_key"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The budget of every phase (see the module docstring)."""

    #: retries per operation (error answers and connection failures alike)
    max_retries: int = 5
    initial_delay: float = 0.5
    max_delay: float = 8.0
    #: a server asking to wait longer than this is not retried (the SDK's rule)
    max_retry_after: float = 120.0
    #: a dead server: seconds since its last sign of life after which an operation fails; also
    #: how long a connection may stay silent while an answer or a body is awaited
    timeout: float = 30.0
    #: seconds the server may take to answer once the whole body of an upload is sent
    processing: float = 600.0
    #: seconds to establish a connection (never more than what is left of ``timeout``)
    connect: float = 10.0
    #: seconds a try at a server given up as dead gets to connect and to answer
    probe: float = 2.0

    def is_retryable(self, exc: BaseException, *, idempotent: bool = True) -> bool:
        if isinstance(exc, APIStatusError):
            if not_worth_retrying(exc):
                return False
            if exc.retry_after is not None and exc.retry_after > self.max_retry_after:
                return False
            if exc.should_retry is not None:
                return exc.should_retry
            return exc.status in RETRYABLE_STATUSES or exc.status >= 500
        if isinstance(exc, APIConnectionError):
            # a request that never reached the server is always safe to send again; one that
            # may have taken effect is retried only when repeating it changes nothing
            return idempotent or not exc.request_sent
        return False

    def delay(self, retries_taken: int, exc: BaseException | None) -> float:
        """Seconds to wait before retry number ``retries_taken + 1``."""
        asked = getattr(exc, "retry_after", None)
        if asked is not None and 0 < asked <= self.max_retry_after:
            return asked
        backoff = min(self.initial_delay * 2 ** retries_taken, self.max_delay)
        return backoff * random.uniform(0.75, 1.0)

    def operation(self, server: ServerWatch | None = None) -> Operation:
        """A new operation's clock and counts (``server``: what is known of the server across
        operations)."""
        return Operation(self, server or ServerWatch())

    def retrying(self, operation: Operation, *, idempotent: bool = True,
                 before_sleep=None) -> tenacity.AsyncRetrying:
        """A tenacity loop within ``operation``'s budget (shared with every other loop of that
        operation)."""
        def retrying_now(state: tenacity.RetryCallState) -> None:
            operation.retried()
            if before_sleep is not None:
                before_sleep(state)

        return tenacity.AsyncRetrying(
            stop=lambda state: operation.gives_up(state.outcome.exception()),
            retry=tenacity.retry_if_exception(
                lambda exc: self.is_retryable(exc, idempotent=idempotent)),
            wait=lambda state: operation.wait(state.outcome.exception()),
            sleep=trio.sleep,
            before_sleep=retrying_now,
            reraise=True,
        )

    def request_timeout(self, operation: Operation, *, uploads: bool = False) -> httpx.Timeout:
        """The timeouts of one request of ``operation``: silence counts as death after
        ``timeout`` (or, for the answer to an upload's body, ``processing``) seconds; a
        connection is given what is left of the dead-server budget, at most ``connect``."""
        if operation.probe:
            quick = min(self.probe, self.timeout)
            return httpx.Timeout(connect=quick, read=self.processing if uploads else quick,
                                 write=self.timeout, pool=None)
        left = max(1.0, operation.left())
        return httpx.Timeout(connect=min(self.connect, left),
                             read=self.processing if uploads else self.timeout,
                             write=self.timeout, pool=None)


class ServerWatch:
    """What a client knows of its server across operations: since when it is given up as dead
    (an operation spent its whole budget without a sign of life), until it shows life again."""

    def __init__(self) -> None:
        self.dead_since: float | None = None

    def alive(self) -> None:
        if self.dead_since is not None:
            log.info("the server answers again (after %.0f s)",
                     trio.current_time() - self.dead_since)
            self.dead_since = None

    def gave_up(self, policy: RetryPolicy) -> None:
        if self.dead_since is None:
            self.dead_since = trio.current_time()
            # DEBUG: the failure itself is logged where it is answered
            log.debug("the server cannot be reached or does not answer: until it does, each "
                      "request gets one try of %.0f s", min(policy.probe, policy.timeout))


class Operation:
    """One operation's budget: when the server last showed life, and how many error answers
    and retries it took. Every retry loop of the operation shares it (see the module
    docstring); it runs on trio's clock."""

    def __init__(self, policy: RetryPolicy, server: ServerWatch) -> None:
        self.policy = policy
        self.server = server
        #: trio time of the server's last sign of life (an answer, new bytes of a body)
        self.alive_at = trio.current_time()
        #: the server was given up before this operation began: one quick try, no retry
        self.probe = server.dead_since is not None
        if self.probe:
            self.alive_at -= policy.timeout
        #: retries taken since the last progress (bounded by ``max_retries``; the backoff's
        #: exponent)
        self.retries = 0

    def alive(self) -> None:
        """The server answered, or sent bytes."""
        self.alive_at = trio.current_time()
        self.probe = False
        self.server.alive()

    def progressed(self) -> None:
        """A long transfer moved on (see ``RESUME_PROGRESS``): its retries start afresh."""
        self.alive()
        self.retries = 0

    def silent_for(self) -> float:
        return trio.current_time() - self.alive_at

    def left(self) -> float:
        """Seconds left of the dead-server budget."""
        return self.policy.timeout - self.silent_for()

    def gives_up(self, exc: BaseException | None) -> bool:
        """Whether the operation stops after this (retryable) failure. Stopping because the
        server could not be reached or stayed silent gives it up as dead (see ServerWatch)."""
        dead = isinstance(exc, APITimeoutError) or (
            isinstance(exc, APIConnectionError) and not exc.request_sent)
        if not isinstance(exc, APIStatusError) and self.left() <= 0:
            self.server.gave_up(self.policy)
            return True
        if self.retries >= self.policy.max_retries:
            if dead:
                self.server.gave_up(self.policy)
            return True
        return False

    def retried(self) -> None:
        """One more retry is taken (after :meth:`gives_up` said no)."""
        self.retries += 1

    def wait(self, exc: BaseException | None) -> float:
        """Seconds to wait before the next try (never past the dead-server budget when the
        server did not answer)."""
        delay = self.policy.delay(self.retries, exc)
        if not isinstance(exc, APIStatusError):
            delay = max(0.0, min(delay, self.left()))
        return delay


#: the operation a non-idempotent request is reconciling inside: the requests that look for
#: the file a failed attempt may have made spend that operation's budget, not one of their own
current_operation: contextvars.ContextVar[Operation | None] = contextvars.ContextVar(
    "openai_fs_operation", default=None)


def not_worth_retrying(exc: APIStatusError) -> bool:
    """An answer that retrying cannot change: a bad request, a key the server does not know,
    a used-up quota (billing, not rate)."""
    return exc.status == 400 or isinstance(exc, QuotaExceededError) or (
        exc.status == 401 and exc.code == INVALID_KEY_CODE)


def may_have_taken_effect(exc: APIError) -> bool:
    """Whether a failed request might still have done its work on the server.

    True for a dropped or timed-out answer after the request was sent, and for 5xx answers
    (a server may fail after committing). A non-idempotent request that failed this way must be
    reconciled before it is sent again, or it may be done twice.
    """
    if isinstance(exc, APIConnectionError):
        return exc.request_sent
    if isinstance(exc, APIStatusError):
        return exc.status >= 500
    return False


def parse_retry_after(headers) -> float | None:
    """Seconds from ``retry-after-ms`` (milliseconds) or ``Retry-After`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
