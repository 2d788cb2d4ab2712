"""The Files and Uploads API client (no FUSE here)."""

from openai_fs.api.bodies import FileRegion
from openai_fs.api.client import DEFAULT_BASE_URL, FilesClient
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
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
    UnprocessableEntityError,
)
from openai_fs.api.client import Listing
from openai_fs.api.models import ExpiresAfter, FileObject, FilePage, Upload, UploadPart, usable_id
from openai_fs.api.retry import RetryPolicy
from openai_fs.api.statistics import ClientStatistics

__all__ = [
    "APIConnectionError", "APIError", "APIStatusError", "APITimeoutError", "AuthenticationError",
    "BadRequestError", "ClientStatistics", "ConflictError", "DEFAULT_BASE_URL",
    "DownloadRefusedError", "ExpiresAfter",
    "FileObject", "FilePage", "FileRegion", "FilesClient", "Listing", "MalformedResponseError",
    "NotFoundError", "PermissionDeniedError", "QuotaExceededError", "RateLimitError",
    "RequestTooLargeError", "RetryPolicy", "ServerError", "UnprocessableEntityError", "Upload",
    "UploadPart", "usable_id",
]
