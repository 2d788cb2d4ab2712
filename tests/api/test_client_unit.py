"""The API client against an in-process fake server (httpx.MockTransport): retries and their
timing (on trio's autojump clock, so no real waiting), error mapping, key hygiene, Range
handling and resumption. The same client against the real emulator is in test_client.py."""

from __future__ import annotations

import hashlib
import json
import logging
import time

import httpx
import pytest
import trio

from openai_fs.api import (
    AuthenticationError,
    BadRequestError,
    FileRegion,
    FilesClient,
    MalformedResponseError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from openai_fs.api.secret import Secret

KEY = "sk-test-SECRETSECRETSECRET1234"


def file_json(file_id: str, *, size: int = 3, filename: str = "a.txt", created_at: int = 1000):
    return {"id": file_id, "object": "file", "bytes": size, "created_at": created_at,
            "filename": filename, "purpose": "assistants", "status": "processed"}


def make_client(handler, **options) -> FilesClient:
    options.setdefault("retry", RetryPolicy(max_retries=3))
    return FilesClient(api_key=Secret(KEY), base_url="http://test/v1",
                       transport=httpx.MockTransport(handler), **options)


def error(status: int, message: str, headers=None, **extra) -> httpx.Response:
    body = {"error": {"message": message, "type": extra.get("type", "invalid_request_error"),
                      "param": extra.get("param"), "code": extra.get("code")}}
    return httpx.Response(status, json=body, headers={"x-request-id": "req_1", **(headers or {})})


async def test_list_follows_the_last_item_id_and_stops_when_has_more_is_false():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        seen.append((after, request.url.params.get("purpose")))
        pages = {None: (["file-1", "file-2"], True), "file-2": (["file-3"], True),
                 "file-3": ([], True)}
        ids, more = pages[after]
        return httpx.Response(200, json={"object": "list", "data": [file_json(i) for i in ids],
                                         "first_id": ids[0] if ids else None,
                                         "last_id": "misleading", "has_more": more})

    async with make_client(handler) as client:
        files = (await client.list_all(purpose="batch")).files
    assert [f.id for f in files] == ["file-1", "file-2", "file-3"]
    # the cursor is the last item's id (as the SDK does), never last_id; an empty page ends it
    assert seen == [(None, "batch"), ("file-2", "batch"), ("file-3", "batch")]


async def test_sends_the_sdk_headers_and_the_key_only_in_authorization():
    captured = {}

    def handler(request: httpx.Request) -> httpx.Response:
        captured.update(request.headers)
        return httpx.Response(200, json=file_json("file-1"))

    client = FilesClient.from_environment(
        environ={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "http://test/v1",
                 "OPENAI_ORG_ID": "org-1", "OPENAI_PROJECT_ID": "proj-1"},
        transport=httpx.MockTransport(handler))
    async with client:
        await client.retrieve("file-1")
        assert KEY not in repr(client) and KEY not in repr(client._http.headers)
    assert captured["authorization"] == f"Bearer {KEY}"
    assert captured["openai-organization"] == "org-1"
    assert captured["openai-project"] == "proj-1"


async def test_429_is_retried_after_the_wait_the_server_asks_for(autojump_clock):
    attempts = []

    def handler(request):
        attempts.append(trio.current_time())
        if len(attempts) == 1:
            return error(429, "slow down", {"retry-after-ms": "2500"}, type="requests")
        if len(attempts) == 2:
            return error(429, "slow down", {"retry-after": "4"}, type="requests")
        return httpx.Response(200, json=file_json("file-1"))

    async with make_client(handler) as client:
        assert (await client.retrieve("file-1")).id == "file-1"
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] == pytest.approx(2.5)
    assert attempts[2] - attempts[1] == pytest.approx(4.0)


async def test_a_wait_longer_than_two_minutes_is_not_retried(autojump_clock):
    calls = []

    def handler(request):
        calls.append(1)
        return error(429, "come back tomorrow", {"retry-after": "86400"}, type="requests")

    async with make_client(handler) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.retrieve("file-1")
    assert len(calls) == 1 and caught.value.retry_after == 86400


async def test_5xx_backs_off_exponentially_with_jitter_then_gives_up(autojump_clock):
    times = []

    def handler(request):
        times.append(trio.current_time())
        return error(503, "overloaded", type="server_error")

    async with make_client(handler, retry=RetryPolicy(max_retries=4)) as client:
        with pytest.raises(ServerError) as caught:
            await client.list_page()
    assert len(times) == 5
    gaps = [b - a for a, b in zip(times, times[1:])]
    for n, gap in enumerate(gaps):
        assert 0.75 * min(0.5 * 2 ** n, 8) <= gap <= min(0.5 * 2 ** n, 8)
    assert caught.value.status == 503 and caught.value.request_id == "req_1"


async def test_x_should_retry_overrules_the_status(autojump_clock):
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            return error(404, "try again", {"x-should-retry": "true"})
        return error(500, "do not", {"x-should-retry": "false"})

    async with make_client(handler) as client:
        with pytest.raises(ServerError):
            await client.retrieve("file-1")
    assert len(calls) == 2


@pytest.mark.parametrize("status, code, cls", [
    (400, None, BadRequestError),
    (401, "invalid_api_key", AuthenticationError),
    (429, "insufficient_quota", QuotaExceededError),
])
async def test_what_retrying_cannot_fix_is_not_retried_whatever_the_server_says(
        autojump_clock, status, code, cls):
    calls = []

    def handler(request):
        calls.append(1)
        return error(status, "no", {"x-should-retry": "true", "retry-after": "1"}, code=code,
                     type=code or "invalid_request_error")

    async with make_client(handler) as client:
        with pytest.raises(cls):
            await client.retrieve("file-1")
    assert len(calls) == 1


async def test_connection_errors_are_retried(autojump_clock):
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=file_json("file-1"))

    async with make_client(handler) as client:
        assert (await client.retrieve("file-1")).id == "file-1"
    assert len(calls) == 3


async def test_errors_carry_status_message_type_code_and_request_id_without_the_key():
    def handler(request):
        # a server that echoes (part of) the key must not make it leak
        return error(401, f"Incorrect API key provided: {KEY[:8]}***{KEY[-4:]} and {KEY}",
                     code="invalid_api_key")

    async with make_client(handler) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.list_page()
    exc = caught.value
    assert (exc.status, exc.type, exc.code, exc.request_id) == (
        401, "invalid_request_error", "invalid_api_key", "req_1")
    text = str(exc) + repr(exc) + exc.message
    assert KEY not in text and KEY[-4:] not in text and "SECRET" not in text
    assert "401 from GET /files" in str(exc)


async def test_not_found_maps_to_its_own_class():
    async with make_client(lambda r: error(404, "No such File object: file-x", param="id")) as c:
        with pytest.raises(NotFoundError) as caught:
            await c.retrieve("file-x")
    assert caught.value.param == "id" and "No such File object" in str(caught.value)


async def test_a_non_json_success_or_missing_field_is_malformed():
    async with make_client(lambda r: httpx.Response(200, content=b"<html>oops")) as client:
        with pytest.raises(MalformedResponseError):
            await client.retrieve("file-1")
    body = file_json("file-1")
    del body["bytes"]
    async with make_client(lambda r: httpx.Response(200, json=body)) as client:
        # the answer to an upload must be whole
        with pytest.raises(MalformedResponseError, match="bytes"):
            await client.create_file("a.txt", "assistants", b"abc")
        # a file looked up by id is read like a listing entry: kept for its id, with what
        # cannot be trusted said
        found = await client.retrieve("file-1")
        assert found.id == "file-1" and found.bytes == 0 and "'bytes' is missing" in found.problem
    async with make_client(lambda r: httpx.Response(200, json=file_json("file-2"))) as client:
        with pytest.raises(MalformedResponseError, match="asked for file-1"):
            await client.retrieve("file-1")


def content_handler(data: bytes, *, honour_range: bool, drop_after: int | None = None,
                    log: list | None = None):
    drops = [drop_after]

    class Dropping(httpx.AsyncByteStream):
        def __init__(self, body: bytes, cut: int) -> None:
            self.body, self.cut = body, cut

        async def __aiter__(self):
            yield self.body[:self.cut]
            raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        header = request.headers.get("range")
        if log is not None:
            log.append(header)
        start, end = 0, len(data)
        status, headers = 200, {}
        if header and honour_range:
            first, _, last = header.removeprefix("bytes=").partition("-")
            start, end = int(first), (int(last) + 1 if last else len(data))
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{len(data)}"
        body = data[start:end]
        headers["content-length"] = str(len(body))
        if drops[0] is not None:
            cut, drops[0] = drops[0], None
            return httpx.Response(status, headers=headers, stream=Dropping(body, cut))
        return httpx.Response(status, headers=headers, content=body)

    return handler


@pytest.mark.parametrize("honour_range", [True, False])
async def test_read_content_returns_exactly_the_range_either_way(honour_range):
    data = bytes(range(256)) * 40
    async with make_client(content_handler(data, honour_range=honour_range)) as client:
        assert await client.read_content("file-1") == data
        assert await client.read_content("file-1", offset=1000, length=500) == data[1000:1500]
        assert await client.read_content("file-1", offset=9000) == data[9000:]
        assert client.range_supported is honour_range


async def test_a_server_ignoring_range_streams_from_zero_so_a_cache_can_keep_it():
    data = b"x" * 1000 + b"y" * 1000
    async with make_client(content_handler(data, honour_range=False)) as client:
        pairs = [pair async for pair in client.stream_content("file-1", offset=1500)]
    assert pairs[0][0] == 0 and b"".join(chunk for _, chunk in pairs) == data


@pytest.mark.parametrize("honour_range", [True, False])
async def test_a_dropped_download_resumes_without_repeating_bytes(honour_range, autojump_clock):
    data = hashlib.sha256(b"seed").digest() * 5000
    ranges: list = []
    handler = content_handler(data, honour_range=honour_range, drop_after=70_000, log=ranges)
    async with make_client(handler) as client:
        got = await client.read_content("file-1")
    assert got == data
    assert ranges == [None, "bytes=70000-"]


async def test_a_206_with_a_wrong_content_range_is_malformed():
    def handler(request):
        return httpx.Response(206, headers={"content-range": "bytes 0-9/100"}, content=b"0" * 10)

    async with make_client(handler) as client:
        with pytest.raises(MalformedResponseError, match="Content-Range"):
            await client.read_content("file-1", offset=50, length=10)


async def test_a_retried_post_files_that_had_taken_effect_is_not_sent_twice(
        tmp_path, autojump_clock):
    payload = b"hello world\n" * 100
    source = tmp_path / "spool"
    source.write_bytes(payload)
    created: list[dict] = []
    posts = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append(request.read())
            created.append(file_json("file-new", size=len(payload), filename="notes.txt",
                                     created_at=2_000_000_000))
            return error(500, "internal error after commit", type="server_error")
        if request.url.path.endswith("/content"):
            return httpx.Response(200, content=payload)
        return httpx.Response(200, json={"object": "list", "data": created[::-1],
                                         "first_id": None, "last_id": None, "has_more": False})

    progress = []
    async with make_client(handler) as client:
        made = await client.create_file("notes.txt", "assistants", source,
                                        progress=progress.append)
    assert made.id == "file-new" and len(posts) == 1 and len(created) == 1
    assert b'filename="notes.txt"' in posts[0] and b'name="purpose"' in posts[0]


async def test_upload_in_parts_cancels_the_upload_when_a_part_fails(tmp_path, autojump_clock):
    source = tmp_path / "spool"
    source.write_bytes(b"z" * 1000)
    paths = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/uploads"):
            return httpx.Response(200, json={
                "id": "upload_1", "object": "upload", "bytes": 1000, "created_at": 1,
                "expires_at": 3601, "filename": "big.bin", "purpose": "assistants",
                "status": "pending", "file": None})
        if request.url.path.endswith("/parts"):
            return error(400, "part refused")
        return httpx.Response(200, json={
            "id": "upload_1", "object": "upload", "bytes": 1000, "created_at": 1,
            "expires_at": 3601, "filename": "big.bin", "purpose": "assistants",
            "status": "cancelled", "file": None})

    async with make_client(handler) as client:
        with pytest.raises(Exception, match="part refused"):
            await client.upload_in_parts("big.bin", "assistants", source, part_size=300,
                                         concurrency=2)
    assert paths[0] == "/v1/uploads" and paths[-1] == "/v1/uploads/upload_1/cancel"
    assert "/v1/uploads/upload_1/complete" not in paths


def test_file_region_reads_its_window_and_takes_back_progress_on_rewind(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(range(100)))
    counted = []
    region = FileRegion(path, 10, 20, progress=counted.append)
    assert region.read(5) == bytes(range(10, 15))
    assert region.read() == bytes(range(15, 30)) and region.read() == b""
    region.seek(0)
    assert sum(counted) == 0
    region.close()


def test_the_key_never_shows_in_reprs_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    secret = Secret(KEY)
    client = FilesClient(api_key=secret, base_url="http://test/v1")
    shown = repr(secret) + str(secret) + repr(client) + json.dumps(str(client._http.auth))
    assert KEY not in shown
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(secret)


@pytest.mark.parametrize("made_meanwhile", [1, 2])
async def test_when_content_is_refused_a_retried_post_decides_by_name_size_and_time(
        tmp_path, autojump_clock, caplog, made_meanwhile):
    # The server made the file but the answer was lost (500 after commit), and it does not
    # hand out assistants content to compare MD5s: one file of that name and size made while
    # the upload was under way is taken for it; with two, the mount cannot tell and uploads
    # again (a possible duplicate rather than a lost file), saying so.
    caplog.set_level(logging.INFO, logger="openai_fs")
    payload = b"hello world\n" * 100
    source = tmp_path / "spool"
    source.write_bytes(payload)
    now = int(time.time())
    created: list[dict] = []
    posts = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append(request)
            if len(posts) == 1:
                for n in range(made_meanwhile):
                    created.append(file_json(f"file-new{n}", size=len(payload),
                                             filename="notes.txt", created_at=now))
                return error(500, "internal error after commit", type="server_error")
            created.append(file_json("file-again", size=len(payload), filename="notes.txt",
                                     created_at=now))
            return httpx.Response(200, json=created[-1])
        if request.url.path.endswith("/content"):
            return error(400, "Not allowed to download files of purpose: assistants")
        return httpx.Response(200, json={"object": "list", "data": created[::-1],
                                         "first_id": None, "last_id": None, "has_more": False})

    async with make_client(handler) as client:
        made = await client.create_file("notes.txt", "assistants", source)
    if made_meanwhile == 1:
        assert made.id == "file-new0" and len(posts) == 1
        assert "judged by name, size, purpose and time" in caplog.text
    else:
        assert made.id == "file-again" and len(posts) == 2
        assert "possible duplicate" in caplog.text
