"""A FUSE file system that serves one file from memory: the FUSE floor of a cold read.

    python bench/read_floor_fs.py MOUNTPOINT SIZE_BYTES

It mounts MOUNTPOINT with pyfuse3 and the mount's FUSE options, raises the kernel's read-ahead to
the mount's default (as root), and serves one file, ``file``, of SIZE_BYTES whose every read is
answered with a view of a 16 MiB buffer: no HTTP, no cache, no copy in Python. A cold ``cat``
of it costs what the kernel round trips, the page cache and ``cat`` itself cost, which no mount
built on pyfuse3 can avoid (the benchmark's CPU rows put this next to curl). It prints "ready"
once mounted and runs in the foreground until unmounted (``fusermount3 -u``).
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import sys
from pathlib import Path

import pyfuse3
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openai_fs.core import readahead  # noqa: E402
from openai_fs.fuse.mounting import fuse_options  # noqa: E402
from openai_fs.fuse.operations import BLOCK_HINT  # noqa: E402

FILE_INODE = pyfuse3.ROOT_INODE + 1
BUFFER = 16 * 1024 * 1024


class ReadFloor(pyfuse3.Operations):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.memory = mmap.mmap(-1, BUFFER)
        self.memory.write(os.urandom(BUFFER))
        self.view = memoryview(self.memory)

    def _attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.st_blksize = BLOCK_HINT
        if inode == pyfuse3.ROOT_INODE:
            attr.st_mode = stat.S_IFDIR | 0o755
        else:
            attr.st_mode = stat.S_IFREG | 0o644
            attr.st_size = self.size
        return attr

    async def getattr(self, inode: int, ctx=None) -> pyfuse3.EntryAttributes:
        return self._attributes(inode)

    async def lookup(self, parent_inode: int, name: bytes, ctx=None) -> pyfuse3.EntryAttributes:
        if name != b"file":
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attributes(FILE_INODE)

    async def open(self, inode: int, flags: int, ctx) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> memoryview:
        size = max(0, min(size, self.size - off))
        start = off % (BUFFER // 2)
        return self.view[start:start + size]

    async def release(self, fh: int) -> None:
        pass


async def serve(mountpoint: str, size: int) -> None:
    pyfuse3.init(ReadFloor(size), mountpoint, fuse_options(read_only=True, allow_other=False))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pyfuse3.main)
            info = await trio.to_thread.run_sync(os.stat, mountpoint)
            readahead.apply(f"{os.major(info.st_dev)}:{os.minor(info.st_dev)}",
                            readahead.DEFAULT_WINDOW)
            print("ready", flush=True)
    finally:
        pyfuse3.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python bench/read_floor_fs.py MOUNTPOINT SIZE_BYTES", file=sys.stderr)
        return 2
    try:
        trio.run(serve, argv[0], int(argv[1]))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
