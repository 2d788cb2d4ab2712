"""Which purposes' content the server hands out.

The real service refuses ``GET /files/{id}/content`` for some purposes (``400 Not allowed to
download files of purpose: assistants``; reported for ``assistants``, ``user_data``,
``fine-tune`` and ``evals``). Nothing official documents which, and it has changed before, so
the mount assumes nothing: a purpose is *unknown* until the server answers a content request
for one of its files, then *refused* or *served*. It may also be told up front
(``--not-downloadable``). Once a purpose is refused, its files whose bytes the mount does not
hold read as ``EACCES`` without another request (docs/SEMANTICS.md, "Content the server does
not hand out").
"""

from __future__ import annotations

import errno
import logging
from typing import Callable, Iterable

from openai_fs.core.errors import FSError

log = logging.getLogger(__name__)


class ContentRefused(FSError):
    """The server does not hand out this file's content, and the mount does not hold it."""

    def __init__(self, where: str, purpose: str) -> None:
        super().__init__(errno.EACCES, f"{where}: the server does not hand out the content of "
                                       f"{purpose} files, and this mount holds no copy",
                         level=logging.DEBUG)


class ContentAccess:
    """Per purpose: True (content served), False (refused) or None (not known yet).
    ``on_refused(purpose)`` runs once when a purpose turns out to be refused."""

    def __init__(self, *, refused: Iterable[str] = (),
                 on_refused: Callable[[str], None] | None = None) -> None:
        self._known: dict[str, bool] = {purpose: False for purpose in refused}
        self._on_refused = on_refused or (lambda purpose: None)

    def state(self, purpose: str) -> bool | None:
        return self._known.get(purpose)

    def describe(self, purpose: str) -> str:
        """``yes``, ``no`` or ``unknown`` (the ``user.openai.downloadable`` attribute)."""
        return {True: "yes", False: "no", None: "unknown"}[self.state(purpose)]

    def served(self, purpose: str) -> None:
        if purpose not in self._known:
            self._known[purpose] = True

    def refused(self, purpose: str, answer: str) -> None:
        """The server refused the content of a file of ``purpose``; ``answer`` is what it
        said (logged once per purpose)."""
        if self._known.get(purpose) is False:
            return
        self._known[purpose] = False
        log.warning("the server does not hand out the content of %s files (it answered: %s); "
                    "they read as 'Permission denied' unless this mount holds their bytes",
                    purpose, answer)
        self._on_refused(purpose)

    def as_dict(self) -> dict[str, str]:
        """For ``openai-fs status``."""
        return {purpose: self.describe(purpose) for purpose in sorted(self._known)}
