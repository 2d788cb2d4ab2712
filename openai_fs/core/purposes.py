"""Purposes and the limits of the Files and Uploads API.

One table shared by the emulator (which enforces it) and the mount (which checks it before
uploading, so a file that would be refused is refused at ``create``/``write`` time).
Sources: ``spec/openai-files-openapi.yaml`` and ``spec/NOTES.md``. "MB" and "GB" in the API
text are read as binary units, as the SDK does for its part size (``64 * 1024 * 1024``).
"""

from __future__ import annotations

MiB = 1024 * 1024
GiB = 1024 * MiB

#: Purposes accepted by ``POST /files`` (``CreateFileRequest.purpose``), in directory order.
UPLOADABLE_PURPOSES: tuple[str, ...] = (
    "assistants", "batch", "fine-tune", "vision", "user_data", "evals",
)
#: Purposes accepted by ``POST /uploads`` (``CreateUploadRequest.purpose``): the spec lists
#: only these four, so ``user_data`` and ``evals`` files can only go through ``POST /files``.
UPLOADS_API_PURPOSES: tuple[str, ...] = ("assistants", "batch", "fine-tune", "vision")
#: Purposes the platform creates itself; they appear in listings but cannot be uploaded.
OUTPUT_PURPOSES: tuple[str, ...] = ("assistants_output", "batch_output", "fine-tune-results")
KNOWN_PURPOSES: tuple[str, ...] = UPLOADABLE_PURPOSES + OUTPUT_PURPOSES

#: Purposes whose files must be JSON Lines (the filename must end in ``.jsonl``).
JSONL_PURPOSES: frozenset[str] = frozenset({"batch", "fine-tune"})

#: Largest file ``POST /files`` accepts.
MAX_POST_FILE_BYTES = 512 * MiB
#: Largest ``batch`` input file.
MAX_BATCH_BYTES = 200 * MiB
#: Largest Part of an Upload.
MAX_PART_BYTES = 64 * MiB
#: Largest Upload (and so the largest file of any kind).
MAX_UPLOAD_BYTES = 8 * GiB
#: An Upload expires this many seconds after it was created.
UPLOAD_TTL_SECONDS = 3600
#: ``expires_after.seconds`` must lie in this range (1 hour .. 30 days).
MIN_EXPIRES_AFTER = 3600
MAX_EXPIRES_AFTER = 30 * 24 * 3600
#: ``batch`` files expire this long after creation unless told otherwise.
BATCH_DEFAULT_EXPIRY_SECONDS = 30 * 24 * 3600
#: Storage a project may hold (the API's "2.5 TB").
PROJECT_QUOTA_BYTES = int(2.5 * 1024 * GiB)
#: Most files one ``GET /files`` page returns, and its default ``limit``.
MAX_LIST_LIMIT = 10_000


def is_uploadable(purpose: str) -> bool:
    return purpose in UPLOADABLE_PURPOSES


def max_file_bytes(purpose: str) -> int:
    """The largest file of this purpose the API accepts by any route."""
    if purpose == "batch":
        return MAX_BATCH_BYTES
    if purpose in UPLOADS_API_PURPOSES:
        return MAX_UPLOAD_BYTES
    return MAX_POST_FILE_BYTES


def filename_problem(purpose: str, filename: str) -> str | None:
    """Why a file of this name cannot have this purpose, or None when it can."""
    if purpose in JSONL_PURPOSES and not filename.lower().endswith(".jsonl"):
        return f"{purpose} files must be JSON Lines with a .jsonl name"
    return None


def size_problem(purpose: str, size: int) -> str | None:
    """Why a file of this many bytes cannot have this purpose, or None when it can."""
    limit = max_file_bytes(purpose)
    if size <= limit:
        return None
    if purpose == "batch":
        return f"batch files may be at most {MAX_BATCH_BYTES // MiB} MB"
    if purpose in UPLOADS_API_PURPOSES:
        return f"a file may be at most {MAX_UPLOAD_BYTES // GiB} GB (the Uploads API maximum)"
    return (f"{purpose} files can only be sent with POST /files, which takes at most "
            f"{MAX_POST_FILE_BYTES // MiB} MB (the Uploads API does not accept this purpose)")
