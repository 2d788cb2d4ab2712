"""What the core may ask of the kernel's caches of names and attributes.

The kernel keeps names (dentries) and attributes for the timeouts the mount answers with. When
the core learns that a name went away or that a file's attributes changed, it says so here,
without waiting; the FUSE adapter provides the implementation
(:class:`openai_fs.fuse.kernel_cache.FuseKernelCache`). Outside a mount nothing needs telling.
"""

from __future__ import annotations

from typing import Protocol


class KernelCache(Protocol):
    def forget_name(self, parent_inode: int, name: str) -> None:
        """``name`` in the directory ``parent_inode`` no longer means what the kernel holds."""

    def forget_attributes(self, inode: int) -> None:
        """The attributes of ``inode`` (mode, size, times) changed."""


class NoKernelCache:
    """No kernel to tell (unit tests, and the core before it is mounted)."""

    def forget_name(self, parent_inode: int, name: str) -> None:
        pass

    def forget_attributes(self, inode: int) -> None:
        pass
