"""``/v1/uploads``: create, parts, complete, cancel, expiry, and their errors."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from openai_fs.core import purposes

from .helpers import MiB, assert_error, chunks, created, multipart_stream

pytestmark = pytest.mark.timeout(120)


def new_upload(api, size, filename="big.bin", purpose="assistants", **extra):
    body = {"filename": filename, "purpose": purpose, "bytes": size, "mime_type": "application/octet-stream", **extra}
    return created(api.post("/uploads", json=body))


def add_part(api, upload_id, data):
    return api.post(f"/uploads/{upload_id}/parts", files={"data": ("upload", data, "application/octet-stream")})


def test_upload_flow(api, ctl, emulator):
    before = int(time.time())
    pieces = [b"a" * 1000, b"b" * 2000, b"c" * 3]
    data = b"".join(pieces)
    up = new_upload(api, len(data))
    assert up["id"].startswith("upload_") and len(up["id"]) == len("upload_") + 24
    assert up == {"id": up["id"], "object": "upload", "bytes": 3003, "created_at": up["created_at"],
                  "filename": "big.bin", "purpose": "assistants", "status": "pending",
                  "expires_at": up["created_at"] + 3600, "file": None}
    assert up["created_at"] >= before - 1
    # parts sent out of order, plus a retried duplicate that complete does not name
    p3 = created(add_part(api, up["id"], pieces[2]))
    p1 = created(add_part(api, up["id"], pieces[0]))
    created(add_part(api, up["id"], pieces[0]))
    p2 = created(add_part(api, up["id"], pieces[1]))
    assert p1["id"].startswith("part_") and p1 == {"id": p1["id"], "object": "upload.part",
                                                   "created_at": p1["created_at"], "upload_id": up["id"]}
    [state_up] = ctl.state()["uploads"]
    assert state_up["status"] == "pending" and state_up["parts"] == 4
    done = created(api.post(f"/uploads/{up['id']}/complete",
                            json={"part_ids": [p1["id"], p2["id"], p3["id"]],
                                  "md5": hashlib.md5(data).hexdigest()}))
    assert done["status"] == "completed" and done["id"] == up["id"]
    f = done["file"]
    assert f["object"] == "file" and f["bytes"] == 3003 and f["filename"] == "big.bin"
    assert f["purpose"] == "assistants" and f["status"] == "processed" and "expires_at" not in f
    assert api.get(f"/files/{f['id']}").json() == f
    assert api.get(f"/files/{f['id']}/content").content == data
    [state_up] = ctl.state()["uploads"]
    assert state_up["status"] == "completed" and state_up["parts"] == 0 and state_up["file_id"] == f["id"]
    assert list((emulator.data_dir / "parts").iterdir()) == []
    # completing twice is an error, not a no-op
    assert_error(api.post(f"/uploads/{up['id']}/complete", json={"part_ids": [p1["id"]]}), 400,
                 contains="completed")
    assert_error(add_part(api, up["id"], b"more"), 400, contains="completed")
    assert_error(api.post(f"/uploads/{up['id']}/cancel"), 400, contains="completed")


def test_big_parts_stream_to_disk(api):
    sizes = [64 * MiB, 3 * MiB + 7]
    up = new_upload(api, sum(sizes), filename="big.jsonl", purpose="fine-tune")
    ids, md5 = [], hashlib.md5()
    for seed, size in enumerate(sizes):
        headers, body = multipart_stream([], "data", "upload", size, chunks(size, seed))
        ids.append(created(api.post(f"/uploads/{up['id']}/parts", content=body, headers=headers))["id"])
        for c in chunks(size, seed):
            md5.update(c)
    f = created(api.post(f"/uploads/{up['id']}/complete", json={"part_ids": ids, "md5": md5.hexdigest()}))["file"]
    digest = hashlib.md5()
    with api.stream("GET", f"/files/{f['id']}/content") as r:
        for piece in r.iter_raw(MiB):
            digest.update(piece)
    assert digest.hexdigest() == md5.hexdigest()


def test_part_over_64_mib_is_413(api, ctl):
    up = new_upload(api, 100 * MiB)
    size = purposes.MAX_PART_BYTES + 1
    headers, body = multipart_stream([], "data", "upload", size, chunks(size, 9, 4 * MiB))
    assert_error(api.post(f"/uploads/{up['id']}/parts", content=body, headers=headers), 413, code="file_too_large")
    assert ctl.state()["uploads"][0]["parts"] == 0


def test_expires_after_and_batch_default_apply_to_the_file(api):
    up = new_upload(api, 2, filename="x.bin", expires_after={"anchor": "created_at", "seconds": 7200})
    part = created(add_part(api, up["id"], b"ok"))
    f = created(api.post(f"/uploads/{up['id']}/complete", json={"part_ids": [part["id"]]}))["file"]
    assert f["expires_at"] == f["created_at"] + 7200
    up = new_upload(api, 2, filename="x.jsonl", purpose="batch")
    part = created(add_part(api, up["id"], b"{}"))
    f = created(api.post(f"/uploads/{up['id']}/complete", json={"part_ids": [part["id"]]}))["file"]
    assert f["expires_at"] == f["created_at"] + purposes.BATCH_DEFAULT_EXPIRY_SECONDS


def test_empty_upload(api):
    up = new_upload(api, 0, filename="empty.txt")
    f = created(api.post(f"/uploads/{up['id']}/complete", json={"part_ids": []}))["file"]
    assert f["bytes"] == 0
    assert api.get(f"/files/{f['id']}/content").content == b""


VALID = {"filename": "a.bin", "purpose": "assistants", "bytes": 10, "mime_type": "application/octet-stream"}


@pytest.mark.parametrize("change, param, contains", [
    ({"colour": "blue"}, None, "Unrecognized request argument supplied: colour"),
    ({"filename": None}, "filename", None),
    ({"filename": ""}, "filename", None),
    ({"purpose": "user_data"}, "purpose", None),
    ({"purpose": "batch_output"}, "purpose", None),
    ({"bytes": -1}, "bytes", None),
    ({"bytes": purposes.MAX_UPLOAD_BYTES + 1}, "bytes", None),
    ({"bytes": "10"}, "bytes", None),
    ({"bytes": True}, "bytes", None),
    ({"mime_type": ""}, "mime_type", None),
    ({"expires_after": {"anchor": "created_at", "seconds": 60}}, "expires_after", None),
    ({"expires_after": {"anchor": "now", "seconds": 3600}}, "expires_after", None),
    ({"expires_after": {"seconds": 3600}}, "expires_after", None),
    ({"purpose": "batch", "filename": "a.jsonl", "bytes": purposes.MAX_BATCH_BYTES + 1}, "bytes", "200 MB"),
    ({"purpose": "fine-tune", "filename": "a.csv"}, "filename", ".jsonl"),
    ({"purpose": "batch", "filename": "a.txt"}, "filename", ".jsonl"),
])
def test_create_upload_errors(api, ctl, change, param, contains):
    body = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    assert_error(api.post("/uploads", json=body), 400, param=param, contains=contains)
    assert ctl.state()["uploads"] == []


def test_a_filename_with_a_lone_surrogate_is_400(api, ctl):
    # JSON can carry one as an escape; httpx would refuse to encode it, so send the text
    body = json.dumps({**VALID, "filename": "a\ud800.bin"}).encode()
    response = api.post("/uploads", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, param="filename", contains="lone surrogate")
    assert ctl.state()["uploads"] == []


@pytest.mark.parametrize("missing", ["filename", "purpose", "bytes", "mime_type"])
def test_create_upload_missing_fields(api, missing):
    body = {k: v for k, v in VALID.items() if k != missing}
    assert_error(api.post("/uploads", json=body), 400, param=missing,
                 contains=f"Missing required parameter: '{missing}'")


def test_create_upload_bad_bodies(api):
    assert_error(api.post("/uploads", content=b"{not json", headers={"Content-Type": "application/json"}), 400,
                 contains="could not parse the JSON body")
    assert_error(api.post("/uploads", json=[VALID]), 400)
    assert api.post("/uploads", json={**VALID, "bytes": purposes.MAX_UPLOAD_BYTES}).status_code == 200
    assert api.post("/uploads", json={**VALID, "purpose": "batch", "filename": "b.jsonl",
                                      "bytes": purposes.MAX_BATCH_BYTES}).status_code == 200


def test_part_errors(api, ctl):
    assert_error(add_part(api, "upload_nope", b"x"), 404, param="id", contains="upload_nope")
    up = new_upload(api, 10)
    assert_error(api.post(f"/uploads/{up['id']}/parts", files={"file": ("upload", b"x")}), 400,
                 contains="Unrecognized request argument supplied: file")
    assert_error(api.post(f"/uploads/{up['id']}/parts", files={"data": ("upload", b"x"), "extra": (None, "1")}), 400,
                 contains="Unrecognized request argument supplied: extra")
    assert_error(api.post(f"/uploads/{up['id']}/parts", files={"data": ("upload", b"x"), "data ": (None, "1")}), 400)
    assert_error(api.post(f"/uploads/{up['id']}/parts", content=b"x", headers={"Content-Type": "application/octet-stream"}),
                 400, contains="multipart/form-data")
    # a multipart body without the data field
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    assert_error(api.post(f"/uploads/{up['id']}/parts", content=b"--b--\r\n", headers=headers), 400,
                 param="data", contains="Missing required parameter: 'data'")
    # "data" as a plain (filename-less) field is accepted: it is the part's bytes
    assert created(api.post(f"/uploads/{up['id']}/parts", files={"data": (None, "0123456789")}))
    assert ctl.state()["uploads"][0]["parts"] == 1


def test_complete_errors(api):
    assert_error(api.post("/uploads/upload_nope/complete", json={"part_ids": []}), 404, param="id")
    up = new_upload(api, 6)
    other = new_upload(api, 3)
    a = created(add_part(api, up["id"], b"abc"))["id"]
    b = created(add_part(api, up["id"], b"def"))["id"]
    foreign = created(add_part(api, other["id"], b"xyz"))["id"]
    url = f"/uploads/{up['id']}/complete"
    assert_error(api.post(url, json={"part_ids": [a, foreign]}), 400, param="part_ids", contains=foreign)
    assert_error(api.post(url, json={"part_ids": [a, "part_unknown"]}), 400, param="part_ids")
    assert_error(api.post(url, json={"part_ids": [a, a]}), 400, param="part_ids", contains="more than once")
    error = assert_error(api.post(url, json={"part_ids": [a]}), 400)
    assert "3" in error["message"] and "6" in error["message"]
    assert_error(api.post(url, json={"part_ids": [a, b], "md5": "0" * 32}), 400, param="md5")
    assert_error(api.post(url, json={"part_ids": [a, b], "extra": 1}), 400,
                 contains="Unrecognized request argument supplied: extra")
    assert_error(api.post(url, json={}), 400, param="part_ids")
    assert_error(api.post(url, json={"part_ids": "abc"}), 400, param="part_ids")
    # after all those refusals the Upload is still pending and completes with the right md5
    done = created(api.post(url, json={"part_ids": [b, a], "md5": hashlib.md5(b"defabc").hexdigest().upper()}))
    assert api.get(f"/files/{done['file']['id']}/content").content == b"defabc"


def test_cancel(api, ctl, emulator):
    up = new_upload(api, 3)
    part = created(add_part(api, up["id"], b"abc"))
    cancelled = created(api.post(f"/uploads/{up['id']}/cancel"))
    assert cancelled["status"] == "cancelled" and cancelled["file"] is None and cancelled["id"] == up["id"]
    assert ctl.state()["uploads"][0]["parts"] == 0
    assert list((emulator.data_dir / "parts").iterdir()) == []
    assert_error(api.post(f"/uploads/{up['id']}/cancel"), 400, contains="cancelled")
    assert_error(add_part(api, up["id"], b"x"), 400, contains="cancelled")
    assert_error(api.post(f"/uploads/{up['id']}/complete", json={"part_ids": [part["id"]]}), 400,
                 contains="cancelled")
    assert_error(api.post("/uploads/upload_nope/cancel"), 404)
    assert ctl.state()["files"] == []


def test_uploads_expire_after_an_hour(api, ctl, emulator):
    up = new_upload(api, 3)
    part = created(add_part(api, up["id"], b"abc"))
    ctl.advance_clock(3601)
    assert_error(add_part(api, up["id"], b"x"), 400, contains="expired")
    assert_error(api.post(f"/uploads/{up['id']}/complete", json={"part_ids": [part["id"]]}), 400,
                 contains="expired")
    [state] = ctl.state()["uploads"]
    assert state["status"] == "expired" and state["parts"] == 0
    assert list((emulator.data_dir / "parts").iterdir()) == []
