"""The Files and Uploads API client (no FUSE here)."""

from openai_fs.api.bodies import FileRegion
from openai_fs.api.client import DEFAULT_BASE_URL, ClientStatistics, FilesClient
from openai_fs.api.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    DownloadRefusedError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
    UnprocessableEntityError,
)
from openai_fs.api.models import ExpiresAfter, FileObject, FilePage, Upload, UploadPart
from openai_fs.api.retry import RetryPolicy

__all__ = [
    "APIConnectionError", "APIError", "APIStatusError", "APITimeoutError", "AuthenticationError",
    "BadRequestError", "ClientStatistics", "ConflictError", "DEFAULT_BASE_URL",
    "DownloadRefusedError", "ExpiresAfter",
    "FileObject", "FilePage", "FileRegion", "FilesClient", "MalformedResponseError",
    "NotFoundError", "PermissionDeniedError", "RateLimitError", "RequestTooLargeError",
    "RetryPolicy", "ServerError", "UnprocessableEntityError", "Upload", "UploadPart",
]
