"""An async client of the OpenAI Files and Uploads API (httpx on trio).

One :class:`FilesClient` per mount. Every request goes through :meth:`FilesClient._send`,
which sends, maps failures to :mod:`openai_fs.api.errors`, and counts what the server did
towards the budget of the operation the request belongs to; the retry loops around it spend
that one budget (:class:`~openai_fs.api.retry.RetryPolicy`: a dead server fails an operation
within ``--timeout`` however the loops nest). Requests that are not idempotent (``POST
/files``, completing an Upload) are never simply sent twice after a failure that may have taken
effect: the client first looks for the file the failed attempt may have created (see
:meth:`FilesClient.find_uploaded_copy`).

Nothing the server sends is trusted (:mod:`openai_fs.api.models`): ids are checked before they
become part of a path or URL, and percent-encoded in every URL; a listing shows what it can,
and says why it may be incomplete (:class:`Listing`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from urllib.parse import quote
from urllib.request import getproxies_environment, proxy_bypass_environment

import httpx
import trio

from openai_fs import __version__
from openai_fs.api import tuning
from openai_fs.api.bodies import FileRegion
from openai_fs.api.content import ContentRange, ContentStream, HttpxBody, parse_content_range
from openai_fs.api.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    DownloadRefusedError,
    MalformedResponseError,
    NotFoundError,
    status_error_class,
)
from openai_fs.api.models import (
    ExpiresAfter,
    FileObject,
    FilePage,
    Upload,
    UploadPart,
    usable_id,
)
from openai_fs.api.retry import (
    Operation,
    RetryPolicy,
    ServerWatch,
    current_operation,
    may_have_taken_effect,
    parse_retry_after,
)
from openai_fs.api.secret import Secret, redact
from openai_fs.api.statistics import ClientStatistics
from openai_fs.api.wire import Body, Origin, Timeouts, Unsuitable, WirePool

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: how far apart our clock and the server's may be when we look for a file a failed
#: attempt may have created
CLOCK_SKEW_SECONDS = 300
#: bytes of an error body we read at most
MAX_ERROR_BODY = 64 * 1024
#: a listing walk stops after this many pages (docs/SEMANTICS.md): 10 million files at the
#: API's 10,000 per page
MAX_LIST_PAGES = 1000
#: the largest piece :meth:`FilesClient.stream_content` yields
STREAM_CHUNK = 1024 * 1024

tuning.apply()


class _BearerAuth(httpx.Auth):
    """Adds the key to each request, so it never sits in the client's default headers."""

    def __init__(self, key: Secret) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = f"Bearer {self._key.reveal()}"
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


@dataclass
class Listing:
    """Every file a listing walk found, and why it may lack some the server has."""

    files: list[FileObject] = field(default_factory=list)
    #: why the listing is incomplete (entries that could not be shown, a cursor that did not
    #: advance, too many pages); empty when it is complete
    gaps: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.gaps


BodySource = bytes | FileRegion


def _file_path(file_id: str, suffix: str = "") -> str:
    """``files/{id}`` (+ ``suffix``), the id checked and percent-encoded."""
    return f"files/{_quoted_id(file_id)}{suffix}"


def _upload_path(upload_id: str, suffix: str) -> str:
    return f"uploads/{_quoted_id(upload_id)}{suffix}"


def _quoted_id(value: str) -> str:
    if not usable_id(value):
        # never sent: an id that is not one cannot name anything on the server
        raise APIError(f"refused to send a request for {value[:40]!r}, which is not an id "
                       "the mount accepts")
    return quote(value, safe="")


class FilesClient:
    """The Files and Uploads API, as async methods that return models or raise APIError."""

    def __init__(self, *, api_key: Secret, base_url: str = DEFAULT_BASE_URL,
                 organization: str | None = None, project: str | None = None,
                 retry: RetryPolicy | None = None, max_connections: int = 64,
                 max_list_pages: int = MAX_LIST_PAGES,
                 transport: httpx.AsyncBaseTransport | None = None,
                 event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None) -> None:
        self._key = api_key
        self.base_url = base_url.rstrip("/")
        self.organization = organization
        self.project = project
        self.retry = retry or RetryPolicy()
        self.max_list_pages = max_list_pages
        #: whether the server is given up as dead, across operations
        self._server = ServerWatch()
        self.stats = ClientStatistics()
        #: whether the server honours ``Range`` on content: None until a ranged request tells
        self.range_supported: bool | None = None
        headers = {"User-Agent": f"openai-fs/{__version__}", "Accept": "application/json"}
        if organization:
            headers["OpenAI-Organization"] = organization
        if project:
            headers["OpenAI-Project"] = project
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/", auth=_BearerAuth(api_key), headers=headers,
            # each request gets the timeouts of its operation (RetryPolicy.request_timeout)
            timeout=httpx.Timeout(self.retry.timeout, connect=self.retry.connect, pool=None),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            transport=transport, event_hooks=dict(event_hooks or {}), follow_redirects=True)
        self._hooks = {name: list(hooks) for name, hooks in (event_hooks or {}).items()}
        #: content bodies are received into the caller's memory (openai_fs.api.wire) unless
        #: the client was given a transport of its own or a proxy takes its requests: then,
        #: like every other request, through httpx
        self._wire = WirePool(ssl_context=httpx.create_ssl_context) \
            if transport is None and _direct(self.base_url) else None

    @classmethod
    def from_environment(cls, *, api_key: Secret | None = None,
                         environ: Mapping[str, str] | None = None, **options: Any) -> FilesClient:
        """A client configured like the official SDK: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
        ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``."""
        env = os.environ if environ is None else environ
        if api_key is None:
            value = env.get("OPENAI_API_KEY", "").strip()
            if not value:
                raise ValueError("no API key: set OPENAI_API_KEY or use --api-key-file")
            api_key = Secret(value)
        return cls(api_key=api_key, base_url=env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
                   organization=env.get("OPENAI_ORG_ID") or None,
                   project=env.get("OPENAI_PROJECT_ID") or None, **options)

    def __repr__(self) -> str:
        return f"FilesClient(base_url={self.base_url!r})"

    @property
    def uses_wire(self) -> bool:
        """Whether content bodies are received into the caller's memory (openai_fs.api.wire)
        rather than through httpx."""
        return self._wire is not None

    @property
    def account(self) -> str:
        """Which account's files this client sees: the server, organization and project (a
        digest, so it can be written down without naming them)."""
        text = "\0".join((self.base_url, self.organization or "", self.project or ""))
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def operation(self) -> Operation:
        """A new operation: the budget of retries and time one user-visible action spends
        against this server (see :class:`~openai_fs.api.retry.RetryPolicy`)."""
        return self.retry.operation(self._server)

    async def aclose(self) -> None:
        if self._wire is not None:
            self._wire.close()
        await self._http.aclose()

    async def __aenter__(self) -> FilesClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---------------------------------------------------------------- files

    async def list_page(self, *, purpose: str | None = None, limit: int | None = None,
                        order: str | None = None, after: str | None = None,
                        operation: Operation | None = None) -> FilePage:
        """One page. Entries without a usable id are left out (``FilePage.skipped`` says
        why); an entry with a usable id and other fields that cannot be trusted is kept, with
        ``FileObject.problem`` saying what is wrong."""
        params = {key: value for key, value in
                  (("purpose", purpose), ("limit", limit), ("order", order), ("after", after))
                  if value is not None}
        data = await self._json("GET", "files", kind="list", params=params, op=operation)
        return self._parse(FilePage, data, "GET", "files")

    async def list_files(self, *, purpose: str | None = None, limit: int | None = None,
                         order: str | None = None, gaps: list[str] | None = None
                         ) -> AsyncIterator[FilePage]:
        """Every page of the listing, following ``after`` as the SDK does (the id of the last
        shown entry of a page), until ``has_more`` is false or a page comes back empty.

        The walk always ends: a page whose cursor does not advance, or that repeats an id this
        walk has seen, ends it, and so does the :data:`MAX_LIST_PAGES`-th page. The pages
        yielded hold no id twice. When the walk may have missed files (such an early end, or
        entries that could not be shown), the reasons are appended to ``gaps``.
        """
        after: str | None = None
        seen: set[str] = set()
        operation = current_operation.get() or self.operation()
        filtered = f"purpose={purpose}" if purpose else "all purposes"
        for number in range(1, self.max_list_pages + 1):
            page = await self.list_page(purpose=purpose, limit=limit, order=order, after=after,
                                        operation=operation)
            fresh = [found for found in page.files if found.id not in seen]
            repeated = len(fresh) < len(page.files) or len({f.id for f in fresh}) < len(fresh)
            fresh = list({found.id: found for found in fresh}.values())
            seen.update(found.id for found in fresh)
            if gaps is not None and page.skipped:
                gaps.extend(page.skipped)
            yield FilePage(files=tuple(fresh), has_more=page.has_more, first_id=page.first_id,
                           last_id=page.last_id, skipped=page.skipped)
            if not page.has_more:
                return
            if not page.files:
                if gaps is not None and not page.skipped:
                    gaps.append(f"the server's listing ({filtered}) says more follow its page "
                                f"{number}, which is empty")
                return
            cursor = page.files[-1].id
            if repeated or cursor == after:
                if gaps is not None:
                    gaps.append(f"the server's listing ({filtered}) repeats itself: page "
                                f"{number} {'has ids seen before' if repeated else 'did not advance its cursor'}"
                                f" though it says more follow")
                return
            after = cursor
        if gaps is not None:
            gaps.append(f"the listing ({filtered}) was cut after {self.max_list_pages} pages")

    async def list_all(self, **filters: Any) -> Listing:
        """The whole listing (see :meth:`list_files`), and why it may be incomplete."""
        listing = Listing()
        async for page in self.list_files(gaps=listing.gaps, **filters):
            listing.files.extend(page.files)
        return listing

    async def retrieve(self, file_id: str) -> FileObject:
        """``GET /files/{id}``. The answer is read like a listing entry: kept when it names
        this id, with ``problem`` set when other fields cannot be trusted."""
        path = _file_path(file_id)
        data = await self._json("GET", path, kind="retrieve")
        found = self._parse(FileObject, data, "GET", path, lenient=True)
        if found.id != file_id:
            raise MalformedResponseError(f"asked for {file_id}, the answer is {found.id}",
                                         method="GET", path="/" + path)
        return found

    async def delete(self, file_id: str) -> bool:
        """Delete a file. A file already gone raises :class:`NotFoundError`."""
        path = _file_path(file_id)
        data = await self._json("DELETE", path, kind="delete")
        if not isinstance(data, dict) or not isinstance(data.get("deleted"), bool):
            raise MalformedResponseError("the answer has no 'deleted' flag", method="DELETE",
                                         path=path)
        return data["deleted"]

    async def create_file(self, filename: str, purpose: str, body: BodySource | str | os.PathLike,
                          *, mime_type: str = "application/octet-stream",
                          expires_after: ExpiresAfter | None = None,
                          progress: Callable[[int], None] | None = None,
                          maybe_created_since: float | None = None) -> FileObject:
        """``POST /files``: one multipart request carrying the whole file.

        ``body`` is bytes or a path (streamed from disk, never read into memory). A failure
        that may have created the file anyway is reconciled before the request is sent again;
        ``maybe_created_since`` says that an earlier attempt made elsewhere (a streamed upload,
        see :meth:`create_file_streamed`) began then and may have done so too.
        """
        size = len(body) if isinstance(body, bytes) else os.path.getsize(body)
        fields = {"purpose": purpose}
        if expires_after is not None:
            fields.update(expires_after.as_form_fields())
        region: FileRegion | None = None

        async def attempt() -> FileObject:
            nonlocal region
            content: Any = body
            if not isinstance(body, bytes):
                region = FileRegion(body, progress=progress)
                content = region
            try:
                data = await self._json("POST", "files", kind="create_file", retry=False,
                                        uploads=True, data=fields,
                                        files={"file": (filename, content, mime_type)})
            except BaseException:
                if region is not None:
                    region.retract_progress()
                raise
            finally:
                if region is not None:
                    region.close()
            if isinstance(body, bytes) and progress is not None:
                progress(size)
            self.stats.bytes_uploaded += size
            return self._parse(FileObject, data, "POST", "files")

        started = time.time() if maybe_created_since is None else maybe_created_since
        return await self._call_not_idempotent(
            attempt, ambiguous=maybe_created_since is not None,
            reconcile=lambda: self.find_uploaded_copy(
                purpose=purpose, filename=filename, size=size, since=started,
                local_md5=lambda: _md5_of(body)))

    async def create_file_streamed(self, filename: str, purpose: str,
                                   chunks: AsyncIterator[bytes], *,
                                   mime_type: str = "application/octet-stream",
                                   expires_after: ExpiresAfter | None = None) -> FileObject:
        """``POST /files`` with a body of unknown length, sent as ``chunks`` come (HTTP/1.1
        chunked transfer encoding): the file is uploaded while it is still being written.

        One attempt, never retried: the caller still has the bytes and sends them again with
        :meth:`create_file` if this fails. The server makes no file unless the body ends with
        its closing boundary, so a request abandoned midway (cancelled) leaves nothing.
        """
        fields = {"purpose": purpose}
        if expires_after is not None:
            fields.update(expires_after.as_form_fields())
        # httpx encodes the form (boundary, field escaping) around an empty file; the file's
        # bytes then go between that encoding's head and its closing boundary
        framing = httpx.Request("POST", "files", data=fields,
                                files={"file": (filename, b"", mime_type)})
        encoded = framing.read()
        boundary = framing.headers["content-type"].partition("boundary=")[2].encode()
        tail = b"\r\n--" + boundary + b"--\r\n"
        if not boundary or not encoded.endswith(tail):
            raise AssertionError("unexpected multipart framing from httpx")
        head = encoded[:-len(tail)]
        sent = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal sent
            yield head
            async for chunk in chunks:
                sent += len(chunk)
                yield chunk
            yield tail

        stream = body()
        try:
            data = await self._json("POST", "files", kind="create_file", retry=False,
                                    uploads=True, content=stream,
                                    headers={"content-type": framing.headers["content-type"]})
        finally:
            await stream.aclose()
        self.stats.bytes_uploaded += sent
        return self._parse(FileObject, data, "POST", "files")

    # -------------------------------------------------------------- content

    def open_content(self, file_id: str, *, offset: int = 0, length: int | None = None,
                     ask_end: int | None = None) -> ContentStream:
        """The bytes of a file, received into memory the caller hands over
        (:meth:`ContentStream.readinto`); ``async with``. The arguments and what the server
        may answer are those of :meth:`stream_content`."""
        return ContentStream(self, file_id, path=_file_path(file_id, "/content"), offset=offset,
                             length=length, ask_end=ask_end)

    async def stream_content(self, file_id: str, *, offset: int = 0, length: int | None = None,
                             chunk_size: int | None = None, ask_end: int | None = None
                             ) -> AsyncIterator[tuple[int, bytes]]:
        """The bytes of a file as ``(file_offset, chunk)`` pairs, as they arrive (chunks of at
        most ``chunk_size``, by default :data:`STREAM_CHUNK`).

        Asks for ``[offset, offset+length)`` with ``Range`` when that is not the whole file. A
        server that honours it answers 206 with a matching ``Content-Range``; one that ignores it
        answers 200 with the whole body, and then the chunks start at offset 0: callers keep or
        drop what lies before ``offset`` (a cache may keep it). The stream ends once the
        requested end is passed. ``ask_end`` (with no ``length``) asks for ``Range`` up to there
        without ending the stream there: a server that honours it ends the body there, and the
        whole body of one that ignores it goes on to the caller, who may stop reading whenever
        it likes (leaving the ``async for`` closes the connection). A connection dropped mid-body
        is resumed from the first missing byte (with ``Range`` when the server supports it). The
        whole stream is one operation of the :class:`RetryPolicy`: new bytes are the server's
        sign of life, so a transfer is not cut off while they arrive, and it fails once the
        server has sent nothing new for
        ``timeout`` seconds, however many resumptions and retries that took, or once it took
        ``max_retries`` retries with less than
        :data:`~openai_fs.api.content.RESUME_PROGRESS` new bytes between two breaks.
        """
        end = offset + length if length is not None else ask_end
        size = chunk_size or (STREAM_CHUNK if end is None else
                              max(1, min(STREAM_CHUNK, end - offset)))
        view = memoryview(bytearray(size))
        async with self.open_content(file_id, offset=offset, length=length,
                                     ask_end=ask_end) as content:
            await content.begin()
            while True:
                at = content.position
                count = await content.readinto(view)
                if not count:
                    return
                yield at, bytes(view[:count])

    async def read_content(self, file_id: str, *, offset: int = 0,
                           length: int | None = None) -> bytes:
        """Exactly the bytes ``[offset, offset+length)`` of a file (to EOF when no length), in
        memory; for small reads and tests. Works whether or not the server honours Range."""
        pieces: list[bytes] = []
        end = None if length is None else offset + length
        async for at, chunk in self.stream_content(file_id, offset=offset, length=length):
            lo = max(0, offset - at)
            hi = len(chunk) if end is None else max(0, min(len(chunk), end - at))
            if hi > lo:
                pieces.append(chunk[lo:hi])
        return b"".join(pieces)

    # -------------------------------------------------------------- uploads

    async def create_upload(self, filename: str, purpose: str, size: int, mime_type: str,
                            *, expires_after: ExpiresAfter | None = None) -> Upload:
        body: dict[str, Any] = {"filename": filename, "purpose": purpose, "bytes": size,
                                "mime_type": mime_type}
        if expires_after is not None:
            body["expires_after"] = expires_after.as_json()
        # a retried create may leave an unused pending Upload behind; it expires within an hour
        data = await self._json("POST", "uploads", kind="create_upload", json=body)
        return self._parse(Upload, data, "POST", "uploads")

    async def add_upload_part(self, upload_id: str, body: bytes | FileRegion) -> UploadPart:
        """Send one Part. Sending a Part twice is harmless (only the ids named at completion
        count), so it is retried like an idempotent request."""
        path = _upload_path(upload_id, "/parts")
        if isinstance(body, FileRegion):
            body.seek(0)
        try:
            data = await self._json("POST", path, kind="upload_part", uploads=True,
                                    files={"data": ("blob", body, "application/octet-stream")})
        except BaseException:
            if isinstance(body, FileRegion):
                body.retract_progress()
            raise
        self.stats.bytes_uploaded += len(body) if isinstance(body, bytes) else body.length
        return self._parse(UploadPart, data, "POST", path)

    async def complete_upload(self, upload: Upload, part_ids: Sequence[str], *,
                              md5: str | None = None) -> Upload:
        path = _upload_path(upload.id, "/complete")
        body: dict[str, Any] = {"part_ids": list(part_ids)}
        if md5 is not None:
            body["md5"] = md5

        async def attempt() -> Upload:
            return self._parse(Upload, await self._json("POST", path, kind="complete_upload",
                                                        retry=False, uploads=True, json=body),
                               "POST", path)

        async def reconcile() -> Upload | None:
            found = await self.find_uploaded_copy(
                purpose=upload.purpose, filename=upload.filename, size=upload.bytes,
                since=upload.created_at, local_md5=_constant(md5))
            if found is None:
                return None
            return Upload(id=upload.id, bytes=upload.bytes, created_at=upload.created_at,
                          expires_at=upload.expires_at, filename=upload.filename,
                          purpose=upload.purpose, status="completed", file=found)

        return await self._call_not_idempotent(attempt, reconcile=reconcile)

    async def cancel_upload(self, upload_id: str, *, retry: bool = True) -> Upload:
        path = _upload_path(upload_id, "/cancel")
        return self._parse(Upload, await self._json("POST", path, kind="cancel_upload",
                                                    retry=retry), "POST", path)

    async def upload_in_parts(self, filename: str, purpose: str, path: str | os.PathLike,
                              *, part_size: int, concurrency: int,
                              mime_type: str = "application/octet-stream",
                              expires_after: ExpiresAfter | None = None,
                              progress: Callable[[int], None] | None = None,
                              on_created: Callable[[Upload], None] | None = None) -> FileObject:
        """The Uploads flow: create, send Parts of ``part_size`` with up to ``concurrency`` in
        flight, complete with the ordered part ids and the file's MD5. On any failure (or
        cancellation) the Upload is cancelled before the error propagates, so no half-made
        Upload stays open on the server. ``on_created`` learns the Upload's id as soon as it
        exists (so that someone can cancel it if this process dies)."""
        size = os.path.getsize(path)
        upload = await self.create_upload(filename, purpose, size, mime_type,
                                          expires_after=expires_after)
        try:
            if on_created is not None:
                on_created(upload)
            count = max(1, -(-size // part_size))
            part_ids: list[str] = [""] * count
            md5_box: list[str] = []
            limiter = trio.CapacityLimiter(max(1, concurrency))

            async def send_part(index: int) -> None:
                async with limiter:
                    offset = index * part_size
                    region = FileRegion(path, offset, min(part_size, size - offset),
                                        progress=progress)
                    try:
                        part_ids[index] = (await self.add_upload_part(upload.id, region)).id
                    finally:
                        region.close()

            async def hash_file() -> None:
                md5_box.append(await trio.to_thread.run_sync(_md5_of_path, path))

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(hash_file)
                    for index in range(count):
                        nursery.start_soon(send_part, index)
            except BaseExceptionGroup as group:
                raise first_error(group) from None
            done = await self.complete_upload(upload, part_ids, md5=md5_box[0])
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self._cancel_quietly(upload.id, exc)
            raise
        if done.file is None:
            raise MalformedResponseError("the completed Upload names no file", method="POST",
                                         path=f"uploads/{upload.id}/complete")
        return done.file

    async def _cancel_quietly(self, upload_id: str, reason: BaseException) -> None:
        # After a dead server, one quick try: the writer's error must not wait for it (and an
        # Upload nobody completes expires on its own within an hour).
        dead = isinstance(reason, APIConnectionError)
        with trio.move_on_after(min(5.0, self.retry.timeout) if dead else self.retry.timeout):
            try:
                await self.cancel_upload(upload_id, retry=not dead)
                log.info("cancelled Upload %s after: %s", upload_id, _describe(reason))
                return
            except APIError as exc:
                log.warning("could not cancel Upload %s (%s); it expires on its own within "
                            "an hour", upload_id, exc)
                return
        log.warning("cancelling Upload %s timed out; it expires on its own within an hour",
                    upload_id)

    # ------------------------------------------------------- reconciliation

    async def find_uploaded_copy(self, *, purpose: str, filename: str, size: int, since: float,
                                 local_md5: Callable[[], Awaitable[str]]) -> FileObject | None:
        """A file that a failed upload attempt may have created after all.

        Looks through the purpose's newest files, created between ``since`` (when the attempt
        began) and now (allowing for clock skew), for ones with the same name and size, and
        accepts one only when its content has the same MD5 as ours. Downloads are needed only
        in this rare case. When the server does not hand out the content of the purpose
        (:class:`DownloadRefusedError`), it decides by those facts alone: exactly one such
        file is taken for the attempt's; with none or several it answers None, so the caller
        uploads again (a possible duplicate is better than a lost file). The log says which.
        """
        floor = since - CLOCK_SKEW_SECONDS
        ceiling = time.time() + CLOCK_SKEW_SECONDS
        expected: str | None = None
        unreadable: list[FileObject] = []
        async for page in self.list_files(purpose=purpose, order="desc", limit=100):
            for candidate in page.files:
                if candidate.created_at < floor:
                    break
                if candidate.filename != filename or candidate.bytes != size:
                    continue
                if unreadable:
                    unreadable.append(candidate)
                    continue
                if expected is None:
                    expected = await local_md5()
                digest = hashlib.md5()
                try:
                    async for _, chunk in self.stream_content(candidate.id):
                        digest.update(chunk)
                except NotFoundError:
                    continue
                except DownloadRefusedError:
                    unreadable.append(candidate)
                    continue
                if digest.hexdigest() == expected:
                    log.info("the failed upload of %s did reach the server as %s; using it",
                             filename, candidate.id)
                    return candidate
            else:
                continue
            break
        # judged by facts alone, a file counts only if made while the attempt was under way
        unreadable = [found for found in unreadable if found.created_at <= ceiling]
        if not unreadable:
            return None
        if len(unreadable) == 1:
            log.info("the failed upload of %s did reach the server as %s, judged by name, size, "
                     "purpose and time (the server does not hand out %s content to compare); "
                     "using it", filename, unreadable[0].id, purpose)
            return unreadable[0]
        log.warning("cannot tell whether the failed upload of %s reached the server: %d files "
                    "of that name and size were made while it was sent, and the server does "
                    "not hand out %s content to compare; uploading it again (a possible "
                    "duplicate: %s)", filename, len(unreadable), purpose,
                    ", ".join(found.id for found in unreadable))
        return None

    # ------------------------------------------------------------- plumbing

    async def _call_not_idempotent(self, attempt: Callable[[], Awaitable[Any]], *,
                                   reconcile: Callable[[], Awaitable[Any]],
                                   ambiguous: bool = False) -> Any:
        """One operation: ``attempt``, and after a failure that may have taken effect,
        ``reconcile`` (the search for what it made) before the next attempt. The search's
        requests spend this operation's budget (:data:`current_operation`)."""
        operation = current_operation.get() or self.operation()
        token = current_operation.set(operation)
        try:
            async for try_ in self.retry.retrying(operation, before_sleep=self._log_retry):
                with try_:
                    if ambiguous:
                        found = await reconcile()
                        if found is not None:
                            return found
                    try:
                        return await attempt()
                    except APIError as exc:
                        ambiguous = ambiguous or may_have_taken_effect(exc)
                        raise
        finally:
            current_operation.reset(token)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _json(self, method: str, path: str, *, kind: str, retry: bool = True,
                    op: Operation | None = None, uploads: bool = False,
                    **request: Any) -> Any:
        """Send (with retries unless ``retry`` is false) and decode the JSON answer, within
        the budget of ``op`` (the operation this request is part of; by default the one being
        reconciled, else a new one). ``uploads``: the request carries an upload's body, whose
        answer the server may take ``processing`` seconds to give."""
        operation = op or current_operation.get() or self.operation()
        if not retry:
            return self._decode(await self._send(method, path, kind=kind, op=operation,
                                                 uploads=uploads, **request), method, path)
        async for try_ in self.retry.retrying(operation, before_sleep=self._log_retry):
            with try_:
                return self._decode(await self._send(method, path, kind=kind, op=operation,
                                                     uploads=uploads, **request),
                                    method, path)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _decode(response: httpx.Response, method: str, path: str) -> Any:
        try:
            return json.loads(response.content)
        except ValueError:
            raise MalformedResponseError(
                "the answer is not valid JSON", method=method, path="/" + path,
                request_id=response.headers.get("x-request-id")) from None

    async def _send(self, method: str, path: str, *, kind: str, op: Operation,
                    stream: bool = False, uploads: bool = False,
                    **request: Any) -> httpx.Response:
        """One attempt: send, read (unless streaming), raise typed errors for failures; what
        the server did counts towards ``op`` (an answer is a sign of life, an error answer
        one more of those)."""
        self.stats.requests[kind] += 1
        try:
            built = self._http.build_request(
                method, path, timeout=self.retry.request_timeout(op, uploads=uploads), **request)
            response = await self._http.send(built, stream=stream)
        except httpx.HTTPError as exc:
            self.stats.errors += 1
            raise self._transport_error(exc, method, path) from None
        if response.status_code >= 400:
            self.stats.errors += 1
            op.alive()
            try:
                body = await _read_limited(response, MAX_ERROR_BODY)
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            raise self._status_error(response, body, method, path)
        op.alive()
        if not stream:
            try:
                await response.aread()
            except httpx.HTTPError as exc:
                self.stats.errors += 1
                raise self._transport_error(exc, method, path) from None
        return response

    async def content_request(self, operation: Operation, path: str, start: int,
                              end: int | None) -> tuple[ContentRange, Body | HttpxBody]:
        """One content request (retried until its body starts, within ``operation``): the
        byte span the answer carries, and its body."""
        headers = {"Accept": "application/binary"}
        if start > 0 or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        async for try_ in self.retry.retrying(operation, before_sleep=self._log_retry):
            with try_:
                response, body = await self._send_content(path, op=operation, headers=headers)
        try:
            return self._span(response, path, start, asked_range="Range" in headers), body
        except BaseException:
            await body.aclose()
            raise

    async def _send_content(self, path: str, *, op: Operation, headers: dict[str, str]
                            ) -> tuple[httpx.Response, Body | HttpxBody]:
        """One attempt, received into the caller's memory (openai_fs.api.wire) where it can
        be, else through httpx."""
        if self._wire is not None:
            try:
                return await self._send_wire(path, op=op, headers=headers)
            except Unsuitable as exc:
                log.debug("content of /%s through httpx: %s", path, exc)
        response = await self._send("GET", path, kind="content", op=op, stream=True,
                                    headers=headers)
        return response, HttpxBody(response, lambda exc: self._transport_error(exc, "GET", path))

    async def _send_wire(self, path: str, *, op: Operation, headers: dict[str, str]
                         ) -> tuple[httpx.Response, Body]:
        """As :meth:`_send` for a GET whose body the caller receives with ``readinto``: the
        request is built by httpx (URL, default headers) and sent by openai_fs.api.wire; its
        answer is shown to the event hooks as an ``httpx.Response``."""
        assert self._wire is not None
        self.stats.requests["content"] += 1
        request = self._http.build_request("GET", path, headers=headers)
        request.headers["Accept-Encoding"] = "identity"
        request.headers["Authorization"] = f"Bearer {self._key.reveal()}"
        for hook in self._hooks.get("request", ()):
            await _called(hook, request)
        url = request.url
        origin = Origin(url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeout = self.retry.request_timeout(op)
        try:
            head, body = await self._wire.request(
                origin, "GET", url.raw_path, request.headers.raw,
                Timeouts(timeout.connect, timeout.read, timeout.write), path="/" + path)
        except APIError:
            self.stats.errors += 1
            raise
        extensions = {"http_version": b"HTTP/" + head.http_version,
                      "reason_phrase": head.reason}
        encoding = (head.header(b"content-encoding") or b"identity").strip().lower()
        if 300 <= head.status < 400 or encoding != b"identity":
            body.close()
            raise Unsuitable(f"a {head.status} answer" if encoding == b"identity" else
                             "an encoded body")
        if head.status >= 400:
            self.stats.errors += 1
            op.alive()
            try:
                error = await body.read_limited(MAX_ERROR_BODY)
            except APIError:
                error = b""
            finally:
                body.close()
            response = httpx.Response(head.status, headers=head.headers, content=error,
                                      request=request, extensions=extensions)
            for hook in self._hooks.get("response", ()):
                await _called(hook, response)
            raise self._status_error(response, error, "GET", path)
        response = httpx.Response(head.status, headers=head.headers, request=request,
                                  extensions=extensions)
        try:
            for hook in self._hooks.get("response", ()):
                await _called(hook, response)
        except BaseException:
            body.close()
            raise
        op.alive()
        return response, body

    def _span(self, response: httpx.Response, path: str, start: int, *,
              asked_range: bool) -> ContentRange:
        """Which bytes a content answer carries; learns whether the server honours Range."""
        length = response.headers.get("content-length")
        if response.status_code == 206:
            span = parse_content_range(response.headers.get("content-range", ""))
            if span is None or span.start != start:
                raise MalformedResponseError(
                    f"a 206 answer whose Content-Range "
                    f"({response.headers.get('content-range')!r}) does not match the request "
                    f"for bytes from {start}", method="GET", path="/" + path,
                    request_id=response.headers.get("x-request-id"))
            self.range_supported = True
            return span
        if asked_range:
            self.range_supported = False
        total = int(length) if length and length.isdigit() else None
        return ContentRange(0, total, total, partial=False)

    def _status_error(self, response: httpx.Response, body: bytes, method: str,
                      path: str) -> APIStatusError:
        message, type_, code, param = response.reason_phrase or "error", None, None, None
        try:
            error = json.loads(body).get("error")
            if isinstance(error, dict):
                message = str(error.get("message") or message)
                type_, code, param = (_text(error.get(key)) for key in ("type", "code", "param"))
        except (ValueError, AttributeError):
            text = body[:200].decode("utf-8", "replace").strip()
            if text:
                message = text
        should_retry = response.headers.get("x-should-retry")
        return status_error_class(response.status_code, message, code=code, type=type_)(
            redact(message, self._key), status=response.status_code, method=method,
            path="/" + path, type=type_, code=code, param=param,
            request_id=response.headers.get("x-request-id"),
            retry_after=parse_retry_after(response.headers),
            should_retry=None if should_retry is None else should_retry.lower() == "true")

    def _transport_error(self, exc: httpx.HTTPError, method: str, path: str) -> APIError:
        reason = redact(str(exc) or type(exc).__name__, self._key)
        # a request whose body could not be written cannot have been carried out
        sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                                    httpx.WriteError, httpx.WriteTimeout))
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(f"timed out ({type(exc).__name__})", method=method,
                                   path="/" + path, request_sent=sent)
        if isinstance(exc, httpx.TransportError):
            return APIConnectionError(reason, method=method, path="/" + path, request_sent=sent)
        return APIError(reason, method=method, path="/" + path)

    def _log_retry(self, state) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception()
        log.info("retrying after %s (attempt %d, waiting %.1f s)", _describe(exc),
                 state.attempt_number + 1, state.next_action.sleep if state.next_action else 0)

    def _parse(self, model: type, data: Any, method: str, path: str, *,
               lenient: bool = False) -> Any:
        try:
            return model.from_entry(data) if lenient else model.from_json(data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise MalformedResponseError(f"unusable answer: {exc}", method=method,
                                         path="/" + path) from None


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    pieces, size = [], 0
    async for chunk in response.aiter_bytes():
        pieces.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(pieces)[:limit]


def _md5_of_path(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


async def _md5_of(body: BodySource | str | os.PathLike) -> str:
    if isinstance(body, bytes):
        return hashlib.md5(body).hexdigest()
    return await trio.to_thread.run_sync(_md5_of_path, body)


def _constant(value: str | None) -> Callable[[], Awaitable[str]]:
    async def get() -> str:
        return value or ""
    return get


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The first real failure in a nursery's exception group (cancellations aside), so callers
    see the error that mattered instead of a group; the group itself when it holds only
    cancellations."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = first_error(exc)
            if inner is not exc:
                return inner
        elif not isinstance(exc, trio.Cancelled):
            return exc
    return group


def _text(value: object) -> str | None:
    """A string field of an error answer (anything else is no answer)."""
    return value[:1000] if isinstance(value, str) else None


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, APIStatusError):
        return f"{exc.status} {exc.message} (request_id={exc.request_id or 'none'})"
    return str(exc) if exc is not None else "nothing"


async def _called(hook: Callable[..., Any], value: object) -> None:
    """Call an event hook as httpx does (an async client's hooks may be coroutines)."""
    result = hook(value)
    if inspect.isawaitable(result):
        await result


def _direct(base_url: str) -> bool:
    """Whether requests to ``base_url`` go straight to the server: http or https, and no
    proxy from the environment (``HTTPS_PROXY``, ``ALL_PROXY``, ... less ``NO_PROXY``), which
    httpx would use."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https"):
        return False
    proxies = getproxies_environment()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return True
    return bool(proxy_bypass_environment(url.host, proxies))
