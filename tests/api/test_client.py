"""The API client against the emulator over real HTTP on 127.0.0.1. Every response the client
sees is validated against the OpenAPI description (``spec_checker``)."""

from __future__ import annotations

import hashlib
import logging
import random

import pytest
import trio

from openai_fs.api import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    DownloadRefusedError,
    ExpiresAfter,
    FilesClient,
    MalformedResponseError,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from openai_fs.emulator.control import EmulatorProcess
from openai_fs.api.content import RESUME_PROGRESS
from openai_fs.api.secret import Secret

MiB = 1024 * 1024
KEY = "sk-client-test-KEYKEYKEY-0123456789"
QUICK = RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.05, timeout=2.0)


@pytest.fixture
async def client(emulator, spec_checker):
    async with FilesClient(api_key=Secret(KEY), base_url=emulator.base_url, retry=QUICK,
                           event_hooks={"response": [spec_checker.async_hook]}) as made:
        yield made


def requests_to(control, method: str, pattern: str) -> list[dict]:
    import re
    return [r for r in control.requests() if r["method"] == method and re.search(pattern, r["path"])]


async def test_every_files_endpoint(client, emulator, tmp_path):
    made = await client.create_file("hello.txt", "vision", b"hello world")
    assert (made.filename, made.purpose, made.bytes, made.expires_at) == (
        "hello.txt", "vision", 11, None)
    spool = tmp_path / "notes.jsonl"
    spool.write_bytes(b'{"a": 1}\n')
    progress: list[int] = []
    from_disk = await client.create_file("notes.jsonl", "batch", spool,
                                         expires_after=ExpiresAfter(7200),
                                         progress=progress.append)
    assert from_disk.expires_at == from_disk.created_at + 7200 and sum(progress) == 9
    assert (await client.retrieve(made.id)) == made
    assert await client.read_content(made.id) == b"hello world"
    listed = (await client.list_all()).files
    assert {f.id for f in listed} == {made.id, from_disk.id}
    assert [f.id for f in (await client.list_all(purpose="batch")).files] == [from_disk.id]
    assert await client.delete(made.id) is True
    with pytest.raises(NotFoundError) as caught:
        await client.retrieve(made.id)
    assert caught.value.status == 404 and caught.value.request_id.startswith("req_")
    with pytest.raises(NotFoundError):
        await client.delete(made.id)


async def test_listing_follows_every_page(client, emulator):
    emulator.control.seed_files([{"filename": f"f{n}.txt", "purpose": "evals",
                                  "content": b"x", "created_at": 1_700_000_000 + n}
                                 for n in range(25)])
    emulator.control.set_config(page_cap=10)
    emulator.control.clear_requests()
    listing = await client.list_all(purpose="evals", limit=10_000)
    assert listing.complete
    files = listing.files
    assert [f.filename for f in files] == [f"f{n}.txt" for n in reversed(range(25))]
    pages = requests_to(emulator.control, "GET", "/v1/files$")
    assert len(pages) == 3
    assert [p["query"].get("after") for p in pages[1:]] == [files[9].id, files[19].id]
    ascending = (await client.list_all(purpose="evals", order="asc", limit=7)).files
    assert [f.filename for f in ascending] == [f"f{n}.txt" for n in range(25)]


async def test_streaming_a_file_larger_than_any_buffer(client):
    data = random.Random(1).randbytes(24 * MiB + 13)
    made = await client.create_file("big.bin", "vision", data)
    digest, total, biggest = hashlib.sha256(), 0, 0
    async for at, chunk in client.stream_content(made.id):
        assert at == total
        digest.update(chunk)
        total += len(chunk)
        biggest = max(biggest, len(chunk))
    assert total == len(data) and digest.digest() == hashlib.sha256(data).digest()
    assert biggest <= 4 * MiB          # chunks as they arrive, never the whole body


@pytest.mark.parametrize("ignore_range", [False, True])
async def test_ranges_whether_the_server_honours_them_or_not(client, emulator, ignore_range):
    data = random.Random(2).randbytes(3 * MiB)
    made = await client.create_file("r.bin", "vision", data)
    emulator.control.set_config(ignore_range=ignore_range)
    emulator.control.clear_requests()
    assert await client.read_content(made.id, offset=1_000_000, length=4096) == \
        data[1_000_000:1_004_096]
    assert await client.read_content(made.id, offset=3 * MiB - 10) == data[-10:]
    assert client.range_supported is (not ignore_range)
    statuses = [r["status"] for r in requests_to(emulator.control, "GET", "/content$")]
    assert statuses == ([200, 200] if ignore_range else [206, 206])


async def test_the_uploads_flow_with_parallel_parts(client, emulator, tmp_path):
    data = random.Random(3).randbytes(5 * MiB + 7)
    spool = tmp_path / "big.bin"
    spool.write_bytes(data)
    sent: list[int] = []
    made = await client.upload_in_parts("big.bin", "vision", spool, part_size=MiB,
                                        concurrency=3, progress=sent.append)
    assert made.bytes == len(data) and sum(sent) == len(data)
    assert await client.read_content(made.id) == data
    assert len(requests_to(emulator.control, "POST", "/parts$")) == 6
    [upload] = emulator.control.state()["uploads"]
    assert upload["status"] == "completed"
    # and the individual calls
    upload = await client.create_upload("small.bin", "vision", 6, "application/octet-stream")
    first = await client.add_upload_part(upload.id, b"abc")
    second = await client.add_upload_part(upload.id, b"def")
    done = await client.complete_upload(upload, [second.id, first.id],
                                        md5=hashlib.md5(b"defabc").hexdigest())
    assert done.status == "completed" and await client.read_content(done.file.id) == b"defabc"
    other = await client.create_upload("x.bin", "vision", 1, "application/octet-stream")
    assert (await client.cancel_upload(other.id)).status == "cancelled"


async def test_a_failed_part_cancels_the_upload(client, emulator, tmp_path):
    spool = tmp_path / "big.bin"
    spool.write_bytes(b"q" * (3 * MiB))
    emulator.control.add_fault("status", path="/parts$", status=400, skip=1)
    with pytest.raises(BadRequestError):
        await client.upload_in_parts("big.bin", "vision", spool, part_size=MiB,
                                     concurrency=2)
    assert [u["status"] for u in emulator.control.state()["uploads"]] == ["cancelled"]
    assert [f for f in emulator.control.state()["files"] if not f["deleted"]] == []


async def test_429_and_500_are_retried_and_counted(client, emulator):
    made = await client.create_file("r.txt", "vision", b"retry me")
    emulator.control.add_fault("status", path=f"/files/{made.id}$", status=429,
                               retry_after_ms=5, count=2)
    emulator.control.clear_requests()
    assert (await client.retrieve(made.id)).id == made.id
    assert len(requests_to(emulator.control, "GET", f"/files/{made.id}$")) == 3
    emulator.control.add_fault("status", path=f"/files/{made.id}$", status=500)
    emulator.control.clear_requests()
    with pytest.raises(ServerError) as caught:
        await client.retrieve(made.id)
    assert len(requests_to(emulator.control, "GET", f"/files/{made.id}$")) == 4  # 1 + 3 retries
    assert caught.value.type == "server_error" and caught.value.request_id
    emulator.control.clear_faults()
    emulator.control.add_fault("status", path=f"/files/{made.id}$", status=429,
                               retry_after=3600)
    with pytest.raises(RateLimitError):
        await client.retrieve(made.id)


async def test_a_post_that_took_effect_before_the_connection_dropped_is_not_repeated(
        client, emulator):
    emulator.control.add_fault("drop_after_commit", method="POST", path="^/v1/files$", count=1)
    made = await client.create_file("once.txt", "vision", b"only one copy")
    files = [f for f in emulator.control.state()["files"] if not f["deleted"]]
    assert [f["id"] for f in files] == [made.id]
    assert len(requests_to(emulator.control, "POST", "^/v1/files$")) == 1


async def test_a_body_of_unknown_length_is_sent_as_it_comes(client, emulator):
    pieces = [bytes([n]) * (100_000 + n) for n in range(5)]

    async def written_slowly():
        for piece in pieces:
            await trio.sleep(0.05)
            yield piece

    name = "naïve name (1).txt"
    streamed = await client.create_file_streamed(name, "vision", written_slowly())
    at_once = await client.create_file(name, "vision", b"".join(pieces))
    assert (streamed.filename, streamed.bytes) == (at_once.filename, at_once.bytes)
    assert await client.read_content(streamed.id) == b"".join(pieces)


async def test_an_abandoned_streamed_upload_makes_no_file(client, emulator):
    async def stalls():
        yield b"the beginning"
        await trio.sleep_forever()

    with trio.move_on_after(0.5):
        await client.create_file_streamed("never.txt", "vision", stalls())
    posted = requests_to(emulator.control, "POST", "^/v1/files$")
    assert len(posted) == 1
    await trio.sleep(0.2)       # the emulator notices the closed connection
    assert [f for f in emulator.control.state()["files"] if not f["deleted"]] == []
    assert list((emulator.data_dir / "tmp").iterdir()) == []


async def test_error_mapping(client, emulator):
    with pytest.raises(BadRequestError) as caught:
        await client.create_file("a.txt", "batch", b"not jsonl")
    assert caught.value.code == "invalid_file_format" and caught.value.param == "file"
    with pytest.raises(BadRequestError) as caught:
        await client.create_file("a.txt", "nonsense", b"x")
    assert caught.value.param == "purpose"
    emulator.control.add_fault("malformed", path="^/v1/files$", method="GET", count=1)
    with pytest.raises(MalformedResponseError):
        await client.list_page()
    made = await client.create_file("t.bin", "vision", b"t" * 100_000)
    emulator.control.add_fault("truncate", path="/content$", after_bytes=10)
    with pytest.raises(APIConnectionError):
        await client.read_content(made.id)


async def test_a_download_that_breaks_again_and_again_but_moves_on_completes(client, emulator):
    breaks = QUICK.max_retries + 6
    data = random.Random(5).randbytes((breaks + 1) * RESUME_PROGRESS)
    made = await client.create_file("long.bin", "vision", data)
    emulator.control.set_config(honour_range=True)      # a resume asks for the rest only
    # nine answers in a row break, more than the 3 retries of QUICK, but each resumed
    # request brings a MiB more (a break after fewer new bytes counts: see test_error_mapping)
    emulator.control.add_fault("truncate", path="/content$", after_bytes=RESUME_PROGRESS,
                               count=breaks)
    assert await client.read_content(made.id) == data
    assert len(requests_to(emulator.control, "GET", "/content$")) == breaks + 1
    # breaks that bring nothing new still use the budget up
    emulator.control.add_fault("truncate", path="/content$", after_bytes=0)
    with pytest.raises(APIConnectionError):
        await client.read_content(made.id)


async def test_connection_refused_is_a_connection_error():
    async with FilesClient(api_key=Secret(KEY), base_url="http://127.0.0.1:9/v1",
                           retry=QUICK) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.list_page()
    assert caught.value.request_sent is False


async def test_a_wrong_key_and_the_key_never_leaks(tmp_path, caplog, spec_checker):
    caplog.set_level(logging.DEBUG)
    with EmulatorProcess(tmp_path / "locked", api_key=KEY) as server:
        async with FilesClient(api_key=Secret("sk-wrong-key-0000000000"), retry=QUICK,
                               base_url=server.base_url,
                               event_hooks={"response": [spec_checker.async_hook]}) as client:
            with pytest.raises(AuthenticationError) as caught:
                await client.list_page()
            assert caught.value.code == "invalid_api_key"
        async with FilesClient(api_key=Secret(KEY), base_url=server.base_url, retry=QUICK,
                               event_hooks={"response": [spec_checker.async_hook]}) as client:
            # a server that echoes the key, whole and masked the way the real API does
            server.control.add_fault("status", status=500,
                                     message=f"oops: {KEY} ({KEY[:8]}****{KEY[-4:]})")
            with pytest.raises(ServerError) as echoed:
                await client.list_page()
            assert "oops" in str(echoed.value)
    for text in (str(caught.value), repr(caught.value), str(echoed.value),
                 repr(echoed.value), caplog.text):
        assert KEY not in text and "KEYKEYKEY" not in text and KEY[-4:] not in text


@pytest.mark.parametrize("purpose", ["assistants", "user_data", "fine-tune", "evals"])
async def test_content_the_real_service_refuses_is_a_download_refused_error(client, purpose):
    name = "refused.jsonl" if purpose == "fine-tune" else "refused.txt"
    made = await client.create_file(name, purpose, b"kept to itself")
    with pytest.raises(DownloadRefusedError) as caught:
        await client.read_content(made.id)
    assert caught.value.status == 400 and caught.value.purpose == purpose
    assert isinstance(caught.value, BadRequestError)
