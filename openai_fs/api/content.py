"""A file's content as it arrives: :class:`ContentStream`, one download read into the caller's
memory and resumed where it broke, over the bodies of single answers (received by
:mod:`openai_fs.api.wire`, or through httpx: :class:`HttpxBody`), and the byte span an answer
carries (:class:`ContentRange`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Protocol

import httpx
import trio

from openai_fs.api.errors import APIConnectionError, APIError, MalformedResponseError
from openai_fs.api.retry import Operation, current_operation
from openai_fs.api.statistics import ClientStatistics
from openai_fs.api.wire import Body

log = logging.getLogger(__name__)

#: a body that broke after bringing at least this many new bytes since the previous break
#: starts its counts afresh (fewer would let a server that breaks every few bytes keep a
#: download going for ever)
RESUME_PROGRESS = 1024 * 1024


class ContentSource(Protocol):
    """What a :class:`ContentStream` needs of the client
    (:class:`~openai_fs.api.client.FilesClient`)."""

    stats: ClientStatistics

    def operation(self) -> Operation: ...

    async def content_request(self, operation: Operation, path: str, start: int,
                              end: int | None) -> tuple[ContentRange, Body | HttpxBody]: ...


@dataclass(frozen=True, slots=True)
class ContentRange:
    """Which bytes a content answer carries: ``[start, end)`` of a file of ``total`` bytes."""

    start: int
    end: int | None
    total: int | None
    partial: bool


class ContentStream:
    """One download of a file's bytes (``FilesClient.open_content``), read with
    :meth:`readinto` into memory the caller hands over; ``async with``.

    The first request is sent by :meth:`begin` (or the first :meth:`readinto`); after that
    :attr:`position` is the file offset of the next byte :meth:`readinto` delivers. A body that
    breaks is resumed from the first byte not delivered, within the one operation's budget
    (see ``FilesClient.stream_content``): the caller sees one unbroken run of bytes.
    """

    def __init__(self, client: ContentSource, file_id: str, *, path: str, offset: int = 0,
                 length: int | None = None, ask_end: int | None = None) -> None:
        self._client = client
        self.file_id = file_id
        self._path = path
        self._offset = offset
        self._want_end = None if length is None else offset + length
        self._ask_end = ask_end
        shared = current_operation.get()
        self._shared = shared is not None
        self._operation = shared or client.operation()
        #: file offset of the next byte :meth:`readinto` delivers (None before the first
        #: answer: see :meth:`begin`)
        self.position: int | None = None
        self._body: Body | HttpxBody | None = None
        self._span: ContentRange | None = None
        self._cursor = 0                   # file offset of the body's next byte
        self._broke_at: int | None = None  # where the stream stood at the last break
        self._done = False
        self._scratch: memoryview | None = None

    async def __aenter__(self) -> ContentStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Leave the download (a connection with body bytes left unread is closed)."""
        body, self._body = self._body, None
        if body is not None:
            await body.aclose()

    async def begin(self) -> int:
        """Send the first request, if that is still to do: the file offset of the first byte
        the stream brings (``offset``, or 0 from a server that ignores Range)."""
        while self.position is None:
            await self._open()
        return self.position

    async def readinto(self, view: memoryview) -> int:
        """Receive the next bytes into ``view`` (not empty), from :attr:`position` on: how
        many (waiting only until some are there); 0 at the end of the stream."""
        while True:
            if self._done or (self._want_end is not None and self.position is not None
                              and self.position >= self._want_end):
                await self.aclose()
                return 0
            if self._body is None:
                await self._open()
                continue
            assert self.position is not None
            skipping = self._cursor < self.position
            if skipping:
                # a body resumed from before what was delivered (a server without Range)
                scratch = self._scratch_buffer()
                target = scratch[:min(len(scratch), self.position - self._cursor)]
            elif self._want_end is not None:
                target = view[:self._want_end - self.position]
            else:
                target = view
            try:
                count = await self._body.readinto(target)
                if not count:
                    self._check_complete()
            except APIConnectionError as exc:
                await self._broken(exc, answered=True)
                continue
            if not count:
                await self.aclose()
                self._done = True
                return 0
            self._client.stats.bytes_downloaded += count
            self._cursor += count
            if not skipping:
                self.position += count
                self._operation.alive()    # new bytes: a sign of life
                return count

    async def _open(self) -> None:
        ask_from = self._offset if self.position is None else self.position
        try:
            span, body = await self._client.content_request(
                self._operation, self._path, ask_from, self._want_end or self._ask_end)
        except APIConnectionError as exc:
            await self._broken(exc, answered=False)
            return
        if span.start > ask_from:
            await body.aclose()
            raise MalformedResponseError(
                f"asked for bytes from {ask_from}, the answer starts at {span.start}",
                method="GET", path="/" + self._path)
        if self.position is None:
            self.position = span.start     # 0 when the server ignored Range
        self._body, self._span, self._cursor = body, span, span.start

    def _check_complete(self) -> None:
        span = self._span
        if span is not None and span.end is not None and self._cursor < span.end:
            raise APIConnectionError(f"the body ended after {self._cursor} of {span.end} bytes",
                                     method="GET", path="/" + self._path)

    async def _broken(self, exc: APIConnectionError, *, answered: bool) -> None:
        """The request or its body failed: wait before resuming, or raise when the operation
        gives up."""
        await self.aclose()
        operation = self._operation
        if answered:
            # a body that broke after real progress starts the count of retries afresh (a
            # long download is not failed by breaks hours apart)
            if self._broke_at is not None and self.position is not None and not self._shared \
                    and self.position - self._broke_at >= RESUME_PROGRESS:
                operation.progressed()
            self._broke_at = self.position
        if operation.gives_up(exc):
            raise exc
        delay = operation.wait(exc)
        operation.retried()
        self._client.stats.retries += 1
        at = self._offset if self.position is None else self.position
        log.info("download of %s broke at byte %d (%s); resuming in %.1f s", self.file_id,
                 at, exc.message, delay)
        await trio.sleep(delay)

    def _scratch_buffer(self) -> memoryview:
        if self._scratch is None:
            self._scratch = memoryview(bytearray(256 * 1024))
        return self._scratch


class HttpxBody:
    """A content body read through httpx (see ``FilesClient.content_request``); a failure
    while reading it is raised as the :class:`~openai_fs.api.errors.APIError` that ``failure``
    makes of it."""

    def __init__(self, response: httpx.Response,
                 failure: Callable[[httpx.HTTPError], APIError]) -> None:
        self._response = response
        self._failure = failure
        self._chunks = response.aiter_bytes()
        self._pending = memoryview(b"")

    async def readinto(self, view: memoryview) -> int:
        while not self._pending:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                return 0
            except httpx.HTTPError as exc:
                raise self._failure(exc) from None
            self._pending = memoryview(chunk)
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    async def aclose(self) -> None:
        await self._chunks.aclose()
        await self._response.aclose()


def parse_content_range(value: str) -> ContentRange | None:
    # "bytes 100-199/1000"
    try:
        unit, _, rest = value.partition(" ")
        span, _, total = rest.partition("/")
        first, _, last = span.partition("-")
        if unit.strip().lower() != "bytes":
            return None
        return ContentRange(int(first), int(last) + 1,
                            None if total.strip() == "*" else int(total), partial=True)
    except ValueError:
        return None
