"""Errors in the shape the OpenAI API uses: ``{"error": {"message", "type", "param", "code"}}``.

All four keys are always present (``ErrorResponse`` in the spec requires them); ``param`` and
``code`` may be null. Handlers raise :class:`ErrorReply`; the app turns it into a response.
"""

from __future__ import annotations

import json


def error_type_for(status: int) -> str:
    """The ``type`` the real API uses for a status code."""
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


#: Messages used when nothing more specific is known (server-side and injected errors).
DEFAULT_MESSAGES: dict[int, str] = {
    400: "Bad request.",
    401: "Unauthorized.",
    403: "Forbidden.",
    404: "Not found.",
    408: "Request timed out.",
    409: "Conflict.",
    413: "Request entity too large.",
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The server is overloaded or not ready yet.",
    504: "Gateway timeout.",
}


class ErrorReply(Exception):
    """An error the emulator answers to its client. ``headers`` are added to the response.

    (Not to be confused with ``openai_fs.api.errors.APIError``, what the mount's client raises
    when it receives such an answer.)"""

    def __init__(self, status: int, message: str, *, type: str | None = None,
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type_for(status)
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body(), indent=2).encode() + b"\n"


def invalid(message: str, param: str | None = None, code: str | None = None) -> ErrorReply:
    """400 ``invalid_request_error``."""
    return ErrorReply(400, message, param=param, code=code)


def unrecognized_argument(name: str) -> ErrorReply:
    return invalid(f"Unrecognized request argument supplied: {name}")


def missing_parameter(name: str) -> ErrorReply:
    return invalid(f"Missing required parameter: '{name}'.", param=name)


def too_large(message: str) -> ErrorReply:
    return ErrorReply(413, message, code="file_too_large")


def no_such_file(file_id: str) -> ErrorReply:
    return ErrorReply(404, f"No such File object: {file_id}", param="id")


def not_downloadable(purpose: str) -> ErrorReply:
    """What the real service answers to ``GET /files/{id}/content`` of, e.g., an ``assistants`` file."""
    return invalid(f"Not allowed to download files of purpose: {purpose}")


def no_such_upload(upload_id: str) -> ErrorReply:
    return ErrorReply(404, f"No such Upload object: {upload_id}", param="id")


#: What the real service answers (429) when the account's quota or credit is used up: billing,
#: not rate, so retrying cannot help (spec/NOTES.md, "Quota").
INSUFFICIENT_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.")


def status_error(status: int, message: str | None = None, *, code: str | None = None,
                 type: str | None = None) -> ErrorReply:
    """An error for a bare status code (faults); without a ``code``, 429 gets the rate-limit one."""
    if code is None and status == 429:
        code = "rate_limit_exceeded"
    return ErrorReply(status, message or DEFAULT_MESSAGES.get(status, f"Error {status}."), code=code, type=type)
