"""``GET /v1/files/{id}/content`` on the (permissive) session emulator: Range handling (honoured or
ignored), HEAD, streaming big files. The real service's framing: ``test_real_service.py``."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from openai_fs.emulator.control import EmulatorProcess

from .helpers import MiB, assert_error, chunks, created, multipart_stream, post_file, sha256_of, wait_for

pytestmark = pytest.mark.timeout(120)

CONTENT = bytes(range(256)) * 4  # 1024 bytes


@pytest.fixture
def file_id(api):
    return created(post_file(api, "data.bin", CONTENT))["id"]


@pytest.mark.parametrize("header, first, last", [
    ("bytes=0-9", 0, 9),
    ("bytes=1000-", 1000, 1023),
    ("bytes=-24", 1000, 1023),
    ("bytes=-5000", 0, 1023),
    ("bytes=100-100", 100, 100),
    ("bytes=1000-999999", 1000, 1023),
    ("bytes=0-1023", 0, 1023),
])
def test_single_ranges_get_206(api, file_id, header, first, last):
    r = api.get(f"/files/{file_id}/content", headers={"Range": header})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {first}-{last}/1024"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-length"] == str(last - first + 1)
    assert r.content == CONTENT[first:last + 1]


@pytest.mark.parametrize("header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_ranges_get_416(api, file_id, header):
    r = api.get(f"/files/{file_id}/content", headers={"Range": header})
    assert_error(r, 416)
    assert r.headers["content-range"] == "bytes */1024"


def test_empty_file_ranges(api):
    fid = created(post_file(api, "empty.bin", b""))["id"]
    r = api.get(f"/files/{fid}/content")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "0"
    for header in ("bytes=0-", "bytes=-1"):
        r = api.get(f"/files/{fid}/content", headers={"Range": header})
        assert_error(r, 416)
        assert r.headers["content-range"] == "bytes */0"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=0-1, -2", "bytes=9-2", "items=0-1", "bytes=a-b",
                                    "bytes=", "0-1"])
def test_multi_and_unparsable_ranges_get_the_whole_file(api, file_id, header):
    r = api.get(f"/files/{file_id}/content", headers={"Range": header})
    assert r.status_code == 200
    assert "content-range" not in r.headers
    assert r.headers["accept-ranges"] == "bytes"
    assert r.content == CONTENT


def test_range_ignored_at_runtime(api, ctl, file_id):
    assert ctl.set_config(honour_range=False)["honour_range"] is False
    for header in ("bytes=0-9", "bytes=5000-"):
        r = api.get(f"/files/{file_id}/content", headers={"Range": header})
        assert r.status_code == 200
        assert "accept-ranges" not in r.headers and "content-range" not in r.headers
        assert "content-length" not in r.headers and r.headers["transfer-encoding"] == "chunked"
        assert r.content == CONTENT
    ctl.set_config(honour_range=True)
    assert api.get(f"/files/{file_id}/content", headers={"Range": "bytes=0-9"}).status_code == 206


def test_the_old_inverse_key_ignore_range_still_works(api, ctl, file_id):
    assert ctl.set_config(ignore_range=True)["honour_range"] is False
    assert "ignore_range" not in ctl.config()
    assert api.get(f"/files/{file_id}/content", headers={"Range": "bytes=0-9"}).status_code == 200
    assert ctl.set_config(ignore_range=False)["honour_range"] is True
    assert api.get(f"/files/{file_id}/content", headers={"Range": "bytes=0-9"}).status_code == 206
    with pytest.raises(Exception, match="contradict"):
        ctl.set_config(ignore_range=True, honour_range=True)
    assert ctl.set_config(ignore_range=True, honour_range=False)["honour_range"] is False


def test_bandwidth_limit_is_validated_and_keeps_bodies_intact(api, ctl, file_id):
    assert ctl.set_config(bandwidth=50_000_000)["bandwidth"] == 50_000_000
    assert api.get(f"/files/{file_id}/content").content == CONTENT
    r = api.get(f"/files/{file_id}/content", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == CONTENT[100:200]
    for bad in (0, -1, True, "fast"):
        with pytest.raises(Exception, match="bandwidth"):
            ctl.set_config(bandwidth=bad)
    assert ctl.set_config(bandwidth=None)["bandwidth"] is None


def test_honour_range_from_the_command_line(tmp_path, spec_checker):
    with EmulatorProcess(tmp_path / "data", extra_args=["--honour-range"]) as emu, \
            httpx.Client(base_url=emu.base_url, headers={"Authorization": "Bearer k"},
                         event_hooks={"response": [spec_checker.sync_hook]}) as client:
        assert emu.control.config()["honour_range"] is True
        fid = created(post_file(client, "d.bin", CONTENT, purpose="vision"))["id"]
        r = client.get(f"/files/{fid}/content", headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and r.content == CONTENT[:10] and r.headers["accept-ranges"] == "bytes"
        r = client.get(f"/files/{fid}/content")
        assert r.status_code == 200 and r.headers["content-length"] == str(len(CONTENT))
        # reset goes back to the command line's setting
        emu.control.set_config(honour_range=False)
        emu.control.reset()
        assert emu.control.config()["honour_range"] is True


def test_head_sends_headers_only(api, file_id):
    r = api.head(f"/files/{file_id}/content")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == "1024"
    assert r.headers["content-type"] == "application/octet-stream"


def test_range_requests_are_logged(api, ctl, file_id):
    ctl.clear_requests()
    api.get(f"/files/{file_id}/content", headers={"Range": "bytes=0-9"})
    [entry] = ctl.requests()
    assert entry["range"] == "bytes=0-9"
    assert entry["status"] == 206 and entry["response_bytes"] == 10


def test_streams_a_file_bigger_than_any_buffer(api, ctl):
    size = 64 * MiB + 12345
    headers, body = multipart_stream([("purpose", "user_data")], "file", "big.bin", size, chunks(size, 3))
    f = created(api.post("/files", content=body, headers=headers))
    assert f["bytes"] == size
    expected = sha256_of(chunks(size, 3))
    digest = hashlib.sha256()
    received = 0
    with api.stream("GET", f"/files/{f['id']}/content") as r:
        assert r.status_code == 200 and r.headers["content-length"] == str(size)
        for piece in r.iter_raw(256 * 1024):
            digest.update(piece)
            received += len(piece)
    assert received == size and digest.hexdigest() == expected
    # the tail, by range
    tail = api.get(f"/files/{f['id']}/content", headers={"Range": f"bytes={size - 100}-"})
    assert tail.status_code == 206
    *_, last_chunk = chunks(size, 3)
    assert tail.content == last_chunk[-100:]


def test_client_leaving_mid_download_stops_the_stream(api, ctl):
    size = 64 * MiB
    headers, body = multipart_stream([("purpose", "user_data")], "file", "big.bin", size, chunks(size, 4))
    f = created(api.post("/files", content=body, headers=headers))
    ctl.clear_requests()
    with httpx.Client(headers=api.headers) as other:
        with other.stream("GET", f"{api.base_url}files/{f['id']}/content") as r:
            next(r.iter_raw(MiB))
    wait_for(lambda: ctl.requests()[0]["duration"] is not None, what="the download to end")
    entry = ctl.requests()[0]
    assert entry["status"] == 200 and entry["response_bytes"] < size
    assert api.get("/files").status_code == 200


def test_client_leaving_mid_upload_leaves_nothing(api, ctl, emulator):
    def body():
        yield from chunks(8 * MiB, 5)
        raise RuntimeError("client gives up")

    headers, stream = multipart_stream([("purpose", "user_data")], "file", "big.bin", 32 * MiB, body())
    with pytest.raises(RuntimeError, match="client gives up"):
        api.post("/files", content=stream, headers=headers)
    wait_for(lambda: ctl.requests() and ctl.requests()[0]["duration"] is not None, what="the upload to end")
    assert ctl.state()["files"] == []
    wait_for(lambda: list((emulator.data_dir / "tmp").iterdir()) == [], what="the temp blob to go")
