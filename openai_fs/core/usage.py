"""What the account uses, for ``df``: counted from what the mount knows, and recounted with a
listing of every file in the background.

File managers ask ``statfs`` all the time, so it never waits for a listing of the whole account:
a recount starts in the background when the last one is older than
:data:`~openai_fs.core.namespace.USAGE_SECONDS` (one at a time), and only the very first
``statfs`` of a mount waits for it, at most :data:`FIRST_COUNT_WAIT` seconds.
"""

from __future__ import annotations

import logging

import trio

from openai_fs.core.errors import Unexpected, as_fs_error
from openai_fs.core.namespace import Namespace

log = logging.getLogger(__name__)

#: how long the first statfs of a mount waits for the first count of the account's files
FIRST_COUNT_WAIT = 0.5


class AccountUsage:
    """``(bytes, files)`` used on the server, as far as the mount knows. ``nursery`` runs the
    recounts; without one, they run before the answer."""

    def __init__(self, namespace: Namespace, nursery: trio.Nursery | None = None) -> None:
        self.namespace = namespace
        self._nursery = nursery
        self._tried_at: float | None = None
        self._counting = False
        self._counted = trio.Event()
        self._waited = False

    async def current(self) -> tuple[int, int]:
        namespace = self.namespace
        if self._nursery is None:
            if namespace.usage_stale(self._tried_at):
                self._tried_at = trio.current_time()
                await self._count()
        else:
            if not self._counting and namespace.usage_stale(self._tried_at):
                self._tried_at = trio.current_time()
                self._counting = True
                self._nursery.start_soon(self._count)
            if not self._waited:
                self._waited = True
                with trio.move_on_after(FIRST_COUNT_WAIT):
                    await self._counted.wait()
        return namespace.usage()

    async def _count(self) -> None:
        """List every file of the account once (it also finds purposes the mount did not know
        and refreshes every purpose's listing). A failure is logged; ``df`` answers with what
        is known meanwhile and tries again later."""
        try:
            await self.namespace.refresh_all()
        except Exception as exc:  # noqa: BLE001 - in the background, nobody else would see it
            error = as_fs_error(exc)
            log.log(logging.ERROR if isinstance(error, Unexpected) else logging.WARNING,
                    "could not count the files of the account for df: %s", error.message,
                    exc_info=exc if isinstance(error, Unexpected) else None)
        finally:
            self._counting = False
            self._counted.set()
