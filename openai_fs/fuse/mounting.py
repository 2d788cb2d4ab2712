"""Mounting with pyfuse3: the kernel mount, serving its requests until unmounted, and what
must happen on the way out (deferred uploads sent, the mount removed only after a clean end).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Callable

import pyfuse3
import trio

from openai_fs.core import readahead
from openai_fs.core.errors import FSError
from openai_fs.core.open_files import OpenFiles
from openai_fs.fuse import mountinfo
from openai_fs.fuse.operations import Operations

log = logging.getLogger(__name__)


class MountError(Exception):
    """The kernel would not mount; the message says why."""


def fuse_options(*, read_only: bool, allow_other: bool) -> set[str]:
    options = set(pyfuse3.default_options) | {"fsname=openai-fs", "subtype=openai-fs"}
    if read_only:
        options.add("ro")
    if allow_other:
        options.add("allow_other")
    return options


async def serve(operations: Operations, mountpoint: Path, *, options: set[str],
                read_ahead: int, on_mounted: Callable[[], None]) -> None:
    """Mount ``operations`` on ``mountpoint`` and serve until it is unmounted (``fusermount3
    -u``, ``openai-fs unmount``, or SIGINT/SIGTERM, which wait for uploads in flight)."""
    # resolved now: once mounted, resolving it would ask this very process (a deadlock)
    resolved = os.path.realpath(mountpoint)
    try:
        pyfuse3.init(operations, str(mountpoint), options)
    except RuntimeError as exc:
        raise MountError(f"cannot mount on {mountpoint}: {exc}") from None
    operations.mounted = mountinfo.find(resolved)
    clean = False
    try:
        async with trio.open_nursery() as nursery:
            if operations.mounted is not None:
                nursery.start_soon(_widen_read_ahead, operations, operations.mounted.device,
                                   read_ahead)
            nursery.start_soon(_stop_on_signal, operations.files, mountpoint)
            on_mounted()
            await pyfuse3.main()
            clean = True
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await operations.files.upload_held()     # temporary files nobody renamed
        pyfuse3.close(unmount=clean)


async def _widen_read_ahead(operations: Operations, device: str, window: int) -> None:
    """The kernel takes the window from the INIT answer (which can only lower it), so it is
    set as soon as that answer is out: before the kernel's next request is served, so before
    any file is opened (an open file keeps the window it was opened with)."""
    await operations.initialized.wait()
    readahead.apply(device, window)


async def _stop_on_signal(files: OpenFiles, mountpoint: Path) -> None:
    """SIGINT/SIGTERM: unmount once the uploads in flight and the write-back queue are done
    (what the queue cannot finish stays journaled); a second signal stops at once."""
    uploader = files.uploader

    def busy() -> int:
        queued = len(files.write_back.pending()) if files.write_back is not None else 0
        return len(uploader.transfers) + queued

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async for signum in signals:
                if nursery.child_tasks or not busy():
                    # a second signal, or nothing to wait for
                    pyfuse3.terminate()
                    return
                log.info("%s: unmounting %s once %d upload(s) and queued change(s) finish "
                         "(signal again to stop now)", signal.Signals(signum).name, mountpoint,
                         busy())

                async def finish_then_stop() -> None:
                    await uploader.wait_idle()
                    try:
                        await files.sync_all()
                    except FSError as exc:
                        log.warning("not every queued change reached the server (%s); the "
                                    "next mount of this account finishes them", exc.message)
                    pyfuse3.terminate()

                nursery.start_soon(finish_then_stop)
