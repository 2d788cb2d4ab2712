"""The kernel's caches of names and attributes, told of changes through pyfuse3.

pyfuse3's invalidation calls are blocking C calls that can deadlock while a request about the
same inode is in flight (../shared/notes/pyfuse3.md, "Invalidation"), so none runs on the trio
loop: names go through pyfuse3's own background queue, attributes through a worker thread
that nobody waits for.
"""

from __future__ import annotations

import logging

import pyfuse3
import trio

from openai_fs.core import names

log = logging.getLogger(__name__)


class FuseKernelCache:
    """:class:`openai_fs.core.kernel_cache.KernelCache` for a mounted filesystem."""

    def forget_name(self, parent_inode: int, name: str) -> None:
        try:
            pyfuse3.invalidate_entry_async(parent_inode, names.name_bytes(name),
                                           ignore_enoent=True)
        except Exception as exc:  # noqa: BLE001 - only a cache hint; never fatal
            log.debug("could not invalidate %s in %d: %s", name, parent_inode, exc)

    def forget_attributes(self, inode: int) -> None:
        def invalidate() -> None:
            try:
                pyfuse3.invalidate_inode(inode, attr_only=True)
            except Exception as exc:  # noqa: BLE001 - only a cache hint; never fatal
                log.debug("could not invalidate the attributes of inode %d: %s", inode, exc)

        trio.lowlevel.start_thread_soon(invalidate, lambda result: None)
