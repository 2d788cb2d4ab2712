"""Steps of a program writing through the mount, as calls of the core's open files (what the
FUSE adapter calls for create/open + write + close), for tests that drive the core without
FUSE."""

from __future__ import annotations

import os

from openai_fs.core.handles import LocalWriter
from openai_fs.core.namespace import FileEntry


def never() -> bool:
    """For ``flush``: the close never comes from a copy of the writer's descriptor."""
    return False


async def new_file(core, purpose: str, name: str, data: bytes = b"") -> LocalWriter:
    """``create`` + ``write``: a new file, not uploaded yet; returns its writer."""
    writer, _ = await core.files.create(core.dir(purpose), name, os.O_WRONLY | os.O_CREAT,
                                        None)
    if data:
        await core.files.write(writer, 0, data)
    return writer


async def rewrite(core, entry: FileEntry, data: bytes) -> LocalWriter:
    """``open(O_TRUNC)`` + ``write`` of an uploaded file: its replacement, not uploaded yet."""
    writer = await core.files.open(entry, os.O_WRONLY | os.O_TRUNC, None)
    await core.files.write(writer, 0, data)
    return writer


async def flush(core, writer: LocalWriter) -> None:
    """``close()``'s flush: uploads the changes."""
    await core.files.flush(writer, never)


async def write_and_commit(core, purpose: str, name: str, data: bytes) -> FileEntry:
    """create + write + close of a new file, uploaded by the mount."""
    writer = await new_file(core, purpose, name, data)
    await flush(core, writer)
    await core.files.release(writer)
    return writer.entry
