"""The official ``openai`` SDK against the emulator: the proof that it speaks the real format.

Every response the SDK sees goes through the spec validator (``sdk`` fixture's http_client hook).
The emulator behaves like the real service here (``real_emulator``): content of some purposes
is refused and content comes chunked, without Content-Length, whatever Range asks.
"""

from __future__ import annotations

import hashlib

import httpx
import openai
import pytest

from openai_fs.emulator.control import EmulatorProcess
from spec_validation import async_httpx_hook, async_sdk_http_client, sdk_http_client

from .helpers import TEST_API_KEY

pytestmark = pytest.mark.timeout(60)


def test_list_auto_paging(sdk, ctl):
    seeded = ctl.seed_files([{"filename": f"{i}.txt", "purpose": "assistants", "content": b"x" * i,
                              "created_at": 1_700_000_000 + i} for i in range(23)])
    ctl.set_config(page_cap=5)
    ctl.clear_requests()
    ids = [f.id for f in sdk.files.list()]
    assert ids == [f["id"] for f in reversed(seeded)]
    assert ctl.count("GET", r"^/v1/files$") == 5
    ctl.clear_requests()
    asc = [f.id for f in sdk.files.list(order="asc", limit=10, purpose="assistants")]
    assert asc == [f["id"] for f in seeded]
    assert ctl.count("GET", r"^/v1/files$") == 5  # the cap, not the limit, sets the page size
    page = sdk.files.list(limit=4)
    assert len(page.data) == 4 and page.has_more is True
    assert page.first_id == page.data[0].id and page.last_id == page.data[-1].id


def test_empty_listing(sdk):
    page = sdk.files.list(purpose="evals")
    assert page.data == [] and page.has_more is False and list(page) == []


def test_create_retrieve_content_delete(sdk, ctl):
    # vision: a purpose whose content the real service hands back
    f = sdk.files.create(file=("notes.md", b"# hi\n", "text/markdown"), purpose="vision",
                         expires_after={"anchor": "created_at", "seconds": 3600})
    assert isinstance(f, openai.types.FileObject)
    assert (f.filename, f.bytes, f.purpose, f.status, f.object) == ("notes.md", 5, "vision", "processed", "file")
    assert f.expires_at == f.created_at + 3600
    assert sdk.files.retrieve(f.id) == f
    assert sdk.files.content(f.id).content == b"# hi\n"
    with sdk.files.with_streaming_response.content(f.id) as response:
        assert b"".join(response.iter_bytes()) == b"# hi\n"
    evals = sdk.files.create(file=("set.jsonl", b"{}\n", "application/jsonl"), purpose="evals")
    assert sdk.files.retrieve(evals.id).purpose == "evals"
    deleted = sdk.files.delete(f.id)
    assert deleted.deleted is True and deleted.id == f.id and deleted.object == "file"
    assert [x.id for x in sdk.files.list()] == [evals.id]


@pytest.mark.parametrize("purpose", ["assistants", "user_data", "fine-tune", "evals"])
def test_content_of_a_refused_purpose_raises_bad_request(sdk, ctl, purpose):
    f = ctl.seed_file("data.jsonl", purpose, b"{}\n")
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.files.content(f["id"])
    assert exc.value.status_code == 400
    assert exc.value.message == f"Error code: 400 - Not allowed to download files of purpose: {purpose}"
    assert exc.value.body == {"message": f"Not allowed to download files of purpose: {purpose}",
                              "type": "invalid_request_error", "param": None, "code": None}
    assert exc.value.type == "invalid_request_error" and exc.value.code is None and exc.value.param is None
    assert ctl.count("GET", r"/content$") == 1  # a 400 is not retried
    with pytest.raises(openai.BadRequestError, match="Not allowed to download files of purpose"):
        with sdk.files.with_streaming_response.content(f["id"]):
            pass


def test_uploaded_assistants_file_cannot_be_downloaded(sdk):
    f = sdk.files.create(file=("notes.md", b"# mine\n", "text/markdown"), purpose="assistants")
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.files.content(f.id)
    assert exc.value.body["message"] == "Not allowed to download files of purpose: assistants"
    assert sdk.files.retrieve(f.id).purpose == "assistants"


def test_content_streams_chunked_without_a_length(sdk, ctl):
    data = bytes(range(256)) * 12_000  # 3 MB
    f = ctl.seed_file("out.jsonl", "batch_output", data)
    raw = sdk.files.with_raw_response.content(f["id"])
    assert raw.headers["transfer-encoding"] == "chunked" and "content-length" not in raw.headers
    assert raw.content == data and sdk.files.content(f["id"]).content == data
    with sdk.files.with_streaming_response.content(f["id"]) as response:
        assert b"".join(response.iter_bytes(64 * 1024)) == data


def test_uploads_flow(sdk, ctl):
    data = bytes(range(256)) * 1000
    upload = sdk.uploads.create(bytes=len(data), filename="requests.jsonl", mime_type="application/jsonl",
                                purpose="batch")
    assert upload.status == "pending" and upload.file is None
    parts = [sdk.uploads.parts.create(upload_id=upload.id, data=data[i:i + 100_000])
             for i in range(0, len(data), 100_000)]
    assert all(p.upload_id == upload.id and p.object == "upload.part" for p in parts)
    done = sdk.uploads.complete(upload_id=upload.id, part_ids=[p.id for p in parts],
                                md5=hashlib.md5(data).hexdigest())
    assert done.status == "completed" and done.file is not None and done.file.bytes == len(data)
    assert sdk.files.content(done.file.id).content == data


def test_uploads_cancel(sdk):
    upload = sdk.uploads.create(bytes=10, filename="a.bin", mime_type="application/octet-stream",
                                purpose="assistants")
    sdk.uploads.parts.create(upload_id=upload.id, data=b"01234")
    cancelled = sdk.uploads.cancel(upload.id)
    assert cancelled.status == "cancelled" and cancelled.file is None
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.uploads.parts.create(upload_id=upload.id, data=b"56789")
    assert "cancelled" in exc.value.message


def test_upload_file_chunked(sdk, tmp_path):
    data = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(5000))  # 160000 bytes
    done = sdk.uploads.upload_file_chunked(file=data, filename="blob.bin", bytes=len(data),
                                           mime_type="application/octet-stream", purpose="vision",
                                           part_size=50_000, md5=hashlib.md5(data).hexdigest())
    assert done.status == "completed" and sdk.files.content(done.file.id).content == data
    path = tmp_path / "from-disk.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 1000)
    done = sdk.uploads.upload_file_chunked(file=path, mime_type="application/jsonl", purpose="batch",
                                           part_size=4096)
    assert done.file.filename == "from-disk.jsonl" and done.file.expires_at is not None
    assert sdk.files.content(done.file.id).content == path.read_bytes()


def test_typed_errors(sdk):
    with pytest.raises(openai.NotFoundError) as exc:
        sdk.files.retrieve("file-missing")
    assert exc.value.status_code == 404 and exc.value.param == "id" and "file-missing" in exc.value.message
    assert exc.value.request_id.startswith("req_")
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.files.create(file=("a.txt", b"x", "text/plain"), purpose="fine-tune")
    assert exc.value.code == "invalid_file_format" and exc.value.param == "file"
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.uploads.create(bytes=1, filename="a.txt", mime_type="text/plain", purpose="user_data")
    assert exc.value.param == "purpose"
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.files.list(after="file-never")
    assert exc.value.param == "after"


def test_authentication_error(tmp_path, spec_checker):
    with EmulatorProcess(tmp_path / "data", api_key="sk-the-right-one") as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="sk-a-wrong-one",
                               http_client=sdk_http_client(spec_checker))
        with pytest.raises(openai.AuthenticationError) as exc:
            client.files.list()
        assert exc.value.code == "invalid_api_key" and "sk-a-wrong-one" not in str(exc.value)
        assert emu.control.count() == 1  # 401 is not retried
        good = openai.OpenAI(base_url=emu.base_url, api_key="sk-the-right-one",
                             http_client=sdk_http_client(spec_checker))
        assert list(good.files.list()) == []


def test_rate_limit_after_retries(sdk, ctl):
    ctl.add_fault("status", status=429, retry_after_ms=5, path=r"^/v1/files$")
    with pytest.raises(openai.RateLimitError) as exc:
        sdk.files.list()
    assert exc.value.code == "rate_limit_exceeded" and exc.value.type == "requests"
    assert ctl.count("GET", r"^/v1/files$") == 3  # the SDK's default: 2 retries


def test_insufficient_quota_is_a_rate_limit_error_with_its_code(sdk, ctl):
    ctl.add_fault("insufficient_quota", path=r"^/v1/files$")
    with pytest.raises(openai.RateLimitError) as exc:
        sdk.files.list()
    assert exc.value.code == "insufficient_quota" and exc.value.type == "insufficient_quota"
    assert "exceeded your current quota" in exc.value.message
    assert ctl.count("GET", r"^/v1/files$") == 3  # the SDK retries it like any 429


def test_server_errors_are_retried(sdk, ctl):
    ctl.add_fault("status", status=500, count=2, method="GET")
    ctl.add_fault("status", status=500, count=1, method="POST")
    assert list(sdk.files.list()) == []
    f = sdk.files.create(file=("a.txt", b"x", "text/plain"), purpose="assistants")
    assert ctl.count("GET") == 3 and ctl.count("POST") == 2
    # the SDK has no idempotency on the wire, so a dropped-after-commit create duplicates the file
    ctl.add_fault("drop_after_commit", count=1, method="POST")
    sdk.files.create(file=("a.txt", b"x", "text/plain"), purpose="assistants")
    assert len([x for x in sdk.files.list() if x.filename == "a.txt"]) == 3
    assert f.id in [x.id for x in sdk.files.list()]


def test_with_raw_response_headers(sdk):
    raw = sdk.files.with_raw_response.list()
    assert raw.headers["x-request-id"].startswith("req_") and raw.status_code == 200
    assert raw.parse().data == []


async def test_async_sdk_and_async_hook(real_emulator, spec_checker):
    async with openai.AsyncOpenAI(base_url=real_emulator.base_url, api_key=TEST_API_KEY,
                                  http_client=async_sdk_http_client(spec_checker)) as client:
        f = await client.files.create(file=("a.txt", b"async", "text/plain"), purpose="vision")
        assert [x.id async for x in client.files.list()] == [f.id]
        assert (await client.files.content(f.id)).content == b"async"
        refused = await client.files.create(file=("b.txt", b"no", "text/plain"), purpose="user_data")
        with pytest.raises(openai.BadRequestError, match="Not allowed to download files of purpose: user_data"):
            await client.files.content(refused.id)
    async with httpx.AsyncClient(base_url=real_emulator.base_url,
                                 headers={"Authorization": f"Bearer {TEST_API_KEY}"},
                                 event_hooks={"response": [async_httpx_hook(spec_checker)]}) as client:
        r = await client.get(f"/files/{f.id}/content", headers={"Range": "bytes=1-3"})
        assert r.status_code == 200 and r.content == b"async"  # Range ignored, as the real service does
        assert (await client.get("/files/file-nope")).status_code == 404
    assert spec_checker.checked >= 7
