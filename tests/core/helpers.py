"""What the adapter does to the core for create/open + write + close, as plain calls, so the
namespace and upload tests can drive the core without Operations."""

from __future__ import annotations

from openai_fs.core.namespace import FileEntry
from openai_fs.core.uploads import LocalFile


def new_file(core, purpose: str, name: str, data: bytes = b"") -> tuple[FileEntry, LocalFile]:
    """``create`` + ``write``: a new file, not uploaded yet."""
    directory = core.dir(purpose)
    core.uploads.check_new_file(directory, name)
    local = core.uploads.new_local(directory, name)
    entry = core.namespace.add_unsent(directory, name, local)
    local.write(0, data)
    return entry, local


def rewrite(core, entry: FileEntry, data: bytes) -> LocalFile:
    """``open(O_TRUNC)`` + ``write`` of an uploaded file: its replacement, not uploaded yet."""
    local = core.uploads.new_local(entry.directory, entry.name)
    entry.local = local
    local.write(0, data)
    return local


def close(core, entry: FileEntry, local: LocalFile) -> None:
    """``release`` of the last handle."""
    if entry.local is local:
        entry.local = None
    core.uploads.release_local(local, entry)


async def write_and_commit(core, purpose: str, name: str, data: bytes) -> FileEntry:
    """create + write + close of a new file, uploaded by the mount."""
    entry, local = new_file(core, purpose, name, data)
    await core.uploads.commit(entry, local)
    close(core, entry, local)
    return entry
