"""What an open file or directory handle is. Each kind says what it reads from; no handle has
fields that are set only sometimes.

* :class:`ContentReader`: a server file opened for reading; its bytes come from the content
  cache. A reader of a file replaced since reads the new bytes; one of a removed file keeps
  reading the bytes it opened (docs/SEMANTICS.md, "Replacing and changing files").
* :class:`LocalReader`: a file being written, opened for reading: reads its spool.
* :class:`LocalWriter`: a file opened for writing: writes (and reads) its spool, and its close
  may upload it (:class:`~openai_fs.core.open_files.OpenFiles`).
* :class:`DirectoryHandle`: a directory listing taken at ``opendir``, served in slices.
* :class:`SnapshotHandle`: the bytes of the control file, taken at ``open``.
"""

from __future__ import annotations

from dataclasses import dataclass

from openai_fs.api import FileObject
from openai_fs.core.namespace import FileEntry, Node
from openai_fs.core.spool import LocalFile


@dataclass(eq=False)
class ContentReader:
    entry: FileEntry
    #: the server file opened (its bytes never change)
    file: FileObject


@dataclass(eq=False)
class LocalReader:
    entry: FileEntry
    local: LocalFile


@dataclass(eq=False)
class LocalWriter:
    entry: FileEntry
    local: LocalFile
    #: the process that opened it, when known (see OpenFiles.flush)
    opener: int | None = None


#: a handle of an open file
FileHandle = ContentReader | LocalReader | LocalWriter


@dataclass(eq=False)
class DirectoryHandle:
    #: the directory's own inode
    inode: int
    #: the inodes of ``children``, in the same (ascending) order: readdir offsets
    inodes: list[int]
    children: list[tuple[str, Node]]
    #: why the listing may lack entries (then the read ends with EIO after the last one)
    gap: str | None = None


@dataclass(eq=False)
class SnapshotHandle:
    data: bytes


Handle = FileHandle | DirectoryHandle | SnapshotHandle
