"""When and how long to wait before trying a request again.

Follows what the official SDK does (``spec/NOTES.md``): retry 408, 409, 429, 5xx and connection
failures; let an ``x-should-retry`` header overrule the status; wait what ``retry-after-ms`` or
``Retry-After`` asks when that is between 0 and 120 s, and do not retry at all when the server
asks for longer; otherwise back off exponentially (0.5 s doubling to 8 s) with jitter (x0.75..1).
The number of retries is bounded. The retry loop itself is tenacity's.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import tenacity
import trio

from openai_fs.api.errors import APIConnectionError, APIError, APIStatusError

RETRYABLE_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 5
    initial_delay: float = 0.5
    max_delay: float = 8.0
    #: a server asking to wait longer than this is not retried (the SDK's rule)
    max_retry_after: float = 120.0

    def is_retryable(self, exc: BaseException, *, idempotent: bool = True) -> bool:
        if isinstance(exc, APIStatusError):
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

    def retrying(self, *, idempotent: bool = True, before_sleep=None) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            retry=tenacity.retry_if_exception(
                lambda exc: self.is_retryable(exc, idempotent=idempotent)),
            wait=lambda state: self.delay(state.attempt_number - 1, state.outcome.exception()),
            sleep=trio.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


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
