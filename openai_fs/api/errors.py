"""What the client raises.

::

    APIError
     ├── APIStatusError            the server answered with an error status
     │    ├── BadRequestError          400
     │    │    └── DownloadRefusedError    "Not allowed to download files of purpose: ..."
     │    ├── AuthenticationError      401
     │    ├── PermissionDeniedError    403
     │    ├── NotFoundError            404
     │    ├── ConflictError            409
     │    ├── RequestTooLargeError     413
     │    ├── UnprocessableEntityError 422
     │    ├── RateLimitError           429
     │    │    └── QuotaExceededError      "insufficient_quota": billing, not rate
     │    └── ServerError              5xx
     ├── APIConnectionError        no (complete) answer: refused, reset, dropped, timed out
     │    └── APITimeoutError
     └── MalformedResponseError    a 2xx answer we cannot use (not JSON, fields missing, wrong range)

Every error names the request (method and path, never headers) and, for status errors, the
server's message, ``type``, ``code``, ``param`` and ``x-request-id``. Messages pass through
:func:`openai_fs.api.secret.redact` first, so a server that echoes a key does not leak it.
"""

from __future__ import annotations

import re


class APIError(Exception):
    """Anything the Files API client raises."""

    def __init__(self, message: str, *, method: str = "", path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.path = path

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.path}".strip()


class APIStatusError(APIError):
    """The server answered with an error status."""

    status: int = 0

    def __init__(self, message: str, *, status: int, method: str = "", path: str = "",
                 type: str | None = None, code: str | None = None, param: str | None = None,
                 request_id: str | None = None, retry_after: float | None = None,
                 should_retry: bool | None = None) -> None:
        super().__init__(message, method=method, path=path)
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.request_id = request_id
        #: seconds the server asked us to wait (``retry-after-ms`` / ``Retry-After``)
        self.retry_after = retry_after
        #: the server's ``x-should-retry`` verdict, when it gave one
        self.should_retry = should_retry

    def __str__(self) -> str:
        details = [f"type={self.type}" if self.type else "",
                   f"code={self.code}" if self.code else "",
                   f"param={self.param}" if self.param else "",
                   f"request_id={self.request_id or 'none'}"]
        return (f"{self.status} from {self.request_line}: {self.message} "
                f"({', '.join(d for d in details if d)})")


class BadRequestError(APIStatusError):
    status = 400


class DownloadRefusedError(BadRequestError):
    """The server does not hand out the content of files of this purpose (the real service
    answers ``400 Not allowed to download files of purpose: assistants`` for ``assistants``,
    ``user_data`` and, by public reports, ``fine-tune`` and ``evals``; nothing documents it)."""

    @property
    def purpose(self) -> str | None:
        match = DOWNLOAD_REFUSED.match(self.message)
        return match.group(1) if match else None


#: the message of a refused download
DOWNLOAD_REFUSED = re.compile(r"^\s*Not allowed to download files of purpose:\s*(\S+)",
                              re.IGNORECASE)


class AuthenticationError(APIStatusError):
    status = 401


class PermissionDeniedError(APIStatusError):
    status = 403


class NotFoundError(APIStatusError):
    status = 404


class ConflictError(APIStatusError):
    status = 409


class RequestTooLargeError(APIStatusError):
    status = 413


class UnprocessableEntityError(APIStatusError):
    status = 422


class RateLimitError(APIStatusError):
    status = 429


class QuotaExceededError(RateLimitError):
    """The account's quota is used up (429 with type or code ``insufficient_quota``): a
    billing problem that no waiting fixes, so it is never retried."""

    def __str__(self) -> str:
        return ("the account's quota is used up (a billing problem, not a rate limit: check "
                "the plan and billing settings): " + super().__str__())


class ServerError(APIStatusError):
    status = 500


_BY_STATUS: dict[int, type[APIStatusError]] = {cls.status: cls for cls in (
    BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError, ConflictError,
    RequestTooLargeError, UnprocessableEntityError, RateLimitError)}


#: the ``type`` or ``code`` of a 429 that means the quota, not the rate
INSUFFICIENT_QUOTA = "insufficient_quota"


def status_error_class(status: int, message: str = "", *, code: str | None = None,
                       type: str | None = None) -> type[APIStatusError]:
    """The class of an error answer: by its status, and for a 400 or 429 by what it says."""
    if status >= 500:
        return ServerError
    if status == 400 and DOWNLOAD_REFUSED.match(message):
        return DownloadRefusedError
    if status == 429 and INSUFFICIENT_QUOTA in (code, type):
        return QuotaExceededError
    return _BY_STATUS.get(status, APIStatusError)


class APIConnectionError(APIError):
    """No complete answer arrived: the connection was refused, reset or dropped, or timed out.

    ``request_sent`` tells whether the request may have reached the server (then a
    non-idempotent request may have taken effect).
    """

    def __init__(self, message: str, *, method: str = "", path: str = "",
                 request_sent: bool = True) -> None:
        super().__init__(message, method=method, path=path)
        self.request_sent = request_sent

    def __str__(self) -> str:
        return f"{self.request_line}: {self.message}"


class APITimeoutError(APIConnectionError):
    """The server did not answer in time."""


class MalformedResponseError(APIError):
    """A success answer that cannot be used: not JSON, a required field missing, a wrong range."""

    def __init__(self, message: str, *, method: str = "", path: str = "",
                 request_id: str | None = None) -> None:
        super().__init__(message, method=method, path=path)
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.request_line}: {self.message} (request_id={self.request_id or 'none'})"
