"""A FUSE file system that only spools: the floor of benchmark 5 on this machine.

    python bench/spool_only_fs.py MOUNTPOINT SPOOL_DIR

It mounts MOUNTPOINT with pyfuse3, with the same FUSE options as ``openai-fs mount`` and the
same ``st_blksize`` (so ``cp`` writes in pieces of the same size). Its one directory takes new
files, and each write goes into a file in SPOOL_DIR, whose pages are let go from the page cache
behind the writer as the mount does (early_upload.let_go_behind). Nothing
else happens: no HTTP, no upload. The issue asks for the written bytes to go to a local spool file, so a mount cannot take
in a file faster than this does, whatever it does about the network. The benchmark times ``cp``
into it next to ``curl -F`` (an INFO row under benchmark 5). It runs in the foreground until
unmounted (``fusermount3 -u``) or interrupted.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from dataclasses import dataclass

import pyfuse3
import trio

from openai_fs.core.early_upload import LET_GO_SPAN, let_go_behind
from openai_fs.fuse.operations import BLOCK_HINT


@dataclass
class Spooled:
    name: bytes
    fd: int     # -1 once released
    size: int = 0
    #: size at which pages behind the writer are next let go
    let_go_at: int = LET_GO_SPAN


class SpoolOnly(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(self, spool_dir: str) -> None:
        super().__init__()
        self.spool_dir = spool_dir
        self.files: dict[int, Spooled] = {}

    def _attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.st_blksize = BLOCK_HINT
        attr.st_uid, attr.st_gid = os.getuid(), os.getgid()
        if inode == pyfuse3.ROOT_INODE:
            attr.st_mode = stat.S_IFDIR | 0o755
        else:
            attr.st_mode = stat.S_IFREG | 0o644
            attr.st_size = self.files[inode].size
        return attr

    async def getattr(self, inode: int, ctx=None) -> pyfuse3.EntryAttributes:
        if inode != pyfuse3.ROOT_INODE and inode not in self.files:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attributes(inode)

    async def lookup(self, parent_inode: int, name: bytes, ctx=None) -> pyfuse3.EntryAttributes:
        for inode, spooled in self.files.items():
            if spooled.name == name:
                return self._attributes(inode)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx=None):
        inode = pyfuse3.ROOT_INODE + 1 + len(self.files)
        spool = os.open(os.path.join(self.spool_dir, str(inode)),
                        os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.files[inode] = Spooled(name, spool)
        return pyfuse3.FileInfo(fh=inode), self._attributes(inode)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        spooled = self.files[fh]
        written = os.pwrite(spooled.fd, buf, off)
        spooled.size = max(spooled.size, off + written)
        if spooled.size >= spooled.let_go_at:   # as the mount does behind its upload
            spooled.let_go_at = let_go_behind(spooled.fd, spooled.size)
        return written

    async def setattr(self, inode: int, attr, fields, fh, ctx) -> pyfuse3.EntryAttributes:
        return self._attributes(inode)      # cp sets times and modes; nothing to keep

    async def flush(self, fh: int) -> None:
        pass

    async def release(self, fh: int) -> None:
        spooled = self.files[fh]
        if spooled.fd >= 0:
            os.close(spooled.fd)
            spooled.fd = -1


async def serve(mountpoint: str, spool_dir: str) -> None:
    options = set(pyfuse3.default_options) | {"fsname=spool-only", "subtype=spool-only"}
    pyfuse3.init(SpoolOnly(spool_dir), mountpoint, options)
    try:
        await pyfuse3.main()
    finally:
        pyfuse3.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python bench/spool_only_fs.py MOUNTPOINT SPOOL_DIR", file=sys.stderr)
        return 2
    try:
        trio.run(serve, *argv)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
