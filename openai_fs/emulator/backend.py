"""The store and the worker pool that runs its blocking calls, shared by both route sets."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable

from openai_fs.emulator.store import Store, remove_paths


class Backend:
    def __init__(self, store: Store, executor: ThreadPoolExecutor) -> None:
        self.store = store
        self.executor = executor

    async def run(self, fn: Callable, *args: Any) -> Any:
        """Run a blocking call on the worker pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args))

    async def expire(self) -> None:
        """Lazy expiry: tombstone expired files and Uploads, then drop their bytes off the loop."""
        paths = self.store.expire_due()
        if paths:
            await self.run(remove_paths, paths)
