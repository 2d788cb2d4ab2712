"""``/v1/files``: create, retrieve, list (order, filter, paging), delete, expiry, persistence, errors."""

from __future__ import annotations

import time

import httpx
import pytest

from openai_fs.core import purposes
from openai_fs.emulator.control import EmulatorProcess

from .helpers import TEST_API_KEY, MiB, assert_error, chunks, created, multipart_stream, post_file

pytestmark = pytest.mark.timeout(120)


def test_create_retrieve_content_delete(api):
    before = int(time.time())
    f = created(post_file(api, "notes.txt", b"hello world\n"))
    assert f["id"].startswith("file-") and len(f["id"]) == len("file-") + 24 and f["id"][5:].isalnum()
    assert f == {"id": f["id"], "object": "file", "bytes": 12, "created_at": f["created_at"],
                 "filename": "notes.txt", "purpose": "user_data", "status": "processed"}
    assert before - 1 <= f["created_at"] <= time.time() + 1
    assert api.get(f"/files/{f['id']}").json() == f
    content = api.get(f"/files/{f['id']}/content")
    assert content.content == b"hello world\n"
    assert content.headers["content-type"] == "application/octet-stream"
    assert content.headers["content-length"] == "12"
    deleted = api.delete(f"/files/{f['id']}")
    assert deleted.json() == {"id": f["id"], "object": "file", "deleted": True}
    assert_error(api.get(f"/files/{f['id']}"), 404, param="id", contains=f"No such File object: {f['id']}")
    assert_error(api.get(f"/files/{f['id']}/content"), 404, param="id")
    assert_error(api.delete(f"/files/{f['id']}"), 404, param="id")
    assert api.get("/files").json()["data"] == []


def test_unknown_ids_are_404(api):
    for response in (api.get("/files/file-nope"), api.delete("/files/file-nope"),
                     api.get("/files/file-nope/content")):
        assert_error(response, 404, param="id", contains="No such File object: file-nope",
                     type="invalid_request_error", code=None)


@pytest.mark.parametrize("purpose", purposes.UPLOADABLE_PURPOSES)
def test_every_uploadable_purpose(api, purpose):
    name = "data.jsonl" if purpose in purposes.JSONL_PURPOSES else "data.bin"
    f = created(post_file(api, name, b'{"a": 1}\n', purpose=purpose))
    assert f["purpose"] == purpose
    assert [x["id"] for x in api.get("/files", params={"purpose": purpose}).json()["data"]] == [f["id"]]


def test_batch_files_expire_after_30_days_by_default(api):
    f = created(post_file(api, "in.jsonl", b"{}\n", purpose="batch"))
    assert f["expires_at"] == f["created_at"] + purposes.BATCH_DEFAULT_EXPIRY_SECONDS
    other = created(post_file(api, "in.jsonl", b"{}\n", purpose="user_data"))
    assert "expires_at" not in other


def test_expires_after(api):
    f = created(post_file(api, "a.txt", b"x", **{"expires_after[anchor]": "created_at",
                                                  "expires_after[seconds]": "3600"}))
    assert f["expires_at"] == f["created_at"] + 3600
    batch = created(post_file(api, "b.jsonl", b"{}\n", purpose="batch",
                              **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "7200"}))
    assert batch["expires_at"] == batch["created_at"] + 7200


@pytest.mark.parametrize("fields", [
    {"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"},
    {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"},
    {"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"},
    {"expires_after[anchor]": "created_at", "expires_after[seconds]": "soon"},
    {"expires_after[anchor]": "created_at"},
    {"expires_after[seconds]": "3600"},
])
def test_bad_expires_after(api, ctl, fields):
    assert_error(post_file(api, "a.txt", b"x", **fields), 400, param="expires_after")
    assert ctl.state()["files"] == []


def test_create_errors(api, ctl, emulator):
    assert_error(post_file(api, "a.txt", b"x", purpose=None), 400, param="purpose",
                 contains="Missing required parameter: 'purpose'")
    assert_error(post_file(api, "a.txt", b"x", purpose="batch_output"), 400, param="purpose")
    assert_error(post_file(api, "a.txt", b"x", purpose="nonsense"), 400, param="purpose")
    assert_error(api.post("/files", data={"purpose": "user_data"}, files={"other": ("a", b"x")}), 400,
                 contains="Unrecognized request argument supplied: other")
    assert_error(post_file(api, "a.txt", b"x", colour="blue"), 400,
                 contains="Unrecognized request argument supplied: colour")
    # a multipart body with no file at all
    assert_error(api.post("/files", files={"purpose": (None, "user_data")}), 400, param="file",
                 contains="Missing required parameter: 'file'")
    # "file" sent as a text field, without a filename
    assert_error(api.post("/files", files={"purpose": (None, "user_data"), "file": (None, "abc")}), 400,
                 param="file")
    assert_error(api.post("/files", json={"purpose": "user_data", "file": "abc"}), 400,
                 contains="multipart/form-data")
    assert_error(api.post("/files", content=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=x"}),
                 400)
    for purpose in purposes.JSONL_PURPOSES:
        assert_error(post_file(api, "train.csv", b"a,b\n", purpose=purpose), 400, param="file",
                     code="invalid_file_format")
    assert ctl.state()["files"] == []
    assert list((emulator.data_dir / "tmp").iterdir()) == []


def test_filenames_are_stored_as_sent(api):
    for name in ("notes/2024/plan.txt", "  spaced  .txt", "ünïcødé €.txt", "back\\slash.txt", ".hidden", "a" * 300):
        f = created(post_file(api, name, b"x"))
        assert f["filename"] == name
        assert api.get(f"/files/{f['id']}").json()["filename"] == name


def seed(ctl, n, purpose="user_data", created_at=None, prefix="f"):
    return [ctl.seed_file(f"{prefix}{i}.txt", purpose, f"{i}".encode(),
                          created_at=None if created_at is None else created_at + i) for i in range(n)]


def test_list_order_and_purpose_filter(api, ctl):
    a = seed(ctl, 3, "assistants", created_at=1_700_000_000, prefix="a")
    u = seed(ctl, 2, "user_data", created_at=1_700_000_100, prefix="u")
    o = seed(ctl, 1, "batch_output", created_at=1_700_000_050, prefix="o")
    desc = api.get("/files").json()
    assert [f["id"] for f in desc["data"]] == [x["id"] for x in (u[1], u[0], o[0], a[2], a[1], a[0])]
    assert desc["first_id"] == u[1]["id"] and desc["last_id"] == a[0]["id"] and desc["has_more"] is False
    asc = api.get("/files", params={"order": "asc"}).json()
    assert [f["id"] for f in asc["data"]] == [x["id"] for x in (a[0], a[1], a[2], o[0], u[0], u[1])]
    assert [f["id"] for f in api.get("/files", params={"purpose": "assistants"}).json()["data"]] == \
        [x["id"] for x in reversed(a)]
    assert [f["id"] for f in api.get("/files", params={"purpose": "batch_output"}).json()["data"]] == [o[0]["id"]]
    empty = api.get("/files", params={"purpose": "no-such-purpose"}).json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def test_same_created_at_keeps_insertion_order(api, ctl):
    ids = [ctl.seed_file(f"{i}.txt", "user_data", b"x", created_at=1_700_000_000)["id"] for i in range(5)]
    assert [f["id"] for f in api.get("/files", params={"order": "asc"}).json()["data"]] == ids
    assert [f["id"] for f in api.get("/files").json()["data"]] == ids[::-1]


def pages(api, **params):
    out, after = [], None
    while True:
        q = dict(params, **({"after": after} if after else {}))
        page = api.get("/files", params=q).json()
        out.append(page)
        if not page["has_more"]:
            return out
        after = page["data"][-1]["id"]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_paging_with_limit(api, ctl, order):
    files = seed(ctl, 25, created_at=1_700_000_000)
    got = pages(api, limit=10, order=order)
    assert [len(p["data"]) for p in got] == [10, 10, 5]
    assert [p["has_more"] for p in got] == [True, True, False]
    ids = [f["id"] for p in got for f in p["data"]]
    expected = [f["id"] for f in files]
    assert ids == (expected if order == "asc" else expected[::-1])
    for p in got:
        assert p["first_id"] == p["data"][0]["id"] and p["last_id"] == p["data"][-1]["id"]
    # exactly full pages: the last full page still says has_more until nothing follows
    assert [len(p["data"]) for p in pages(api, limit=5)] == [5, 5, 5, 5, 5]


def test_page_cap_limits_every_page(api, ctl):
    files = seed(ctl, 16, created_at=1_700_000_000)
    assert ctl.set_config(page_cap=7)["page_cap"] == 7
    got = pages(api)
    assert [len(p["data"]) for p in got] == [7, 7, 2]
    assert [f["id"] for p in got for f in p["data"]] == [f["id"] for f in reversed(files)]
    assert [len(p["data"]) for p in pages(api, limit=3)] == [3, 3, 3, 3, 3, 1]
    ctl.set_config(page_cap=None)
    assert len(api.get("/files").json()["data"]) == 16


def test_after_a_deleted_id_still_works(api, ctl):
    files = seed(ctl, 6, created_at=1_700_000_000)
    first = api.get("/files", params={"limit": 3}).json()
    cursor = first["last_id"]
    assert cursor == files[3]["id"]
    api.delete(f"/files/{cursor}").raise_for_status()
    rest = api.get("/files", params={"limit": 3, "after": cursor}).json()
    assert [f["id"] for f in rest["data"]] == [files[2]["id"], files[1]["id"], files[0]["id"]]
    assert rest["has_more"] is False
    asc = api.get("/files", params={"order": "asc", "after": cursor}).json()
    assert [f["id"] for f in asc["data"]] == [files[4]["id"], files[5]["id"]]


def test_list_parameter_errors(api):
    assert_error(api.get("/files", params={"after": "file-neverexisted"}), 400, param="after")
    for bad in ("0", "10001", "-1", "ten", ""):
        assert_error(api.get("/files", params={"limit": bad}), 400, param="limit")
    assert_error(api.get("/files", params={"order": "sideways"}), 400, param="order")
    assert api.get("/files", params={"limit": "1"}).status_code == 200
    assert api.get("/files", params={"limit": "10000"}).status_code == 200


def test_expiry_follows_the_emulator_clock(api, ctl, emulator):
    f = created(post_file(api, "a.txt", b"soon gone", **{"expires_after[anchor]": "created_at",
                                                         "expires_after[seconds]": "3600"}))
    keep = created(post_file(api, "b.txt", b"stays"))
    blob = emulator.data_dir / "files" / f["id"]
    assert blob.exists()
    ctl.advance_clock(3600 - 5 - (time.time() - f["created_at"]))
    assert api.get(f"/files/{f['id']}").status_code == 200
    ctl.advance_clock(10)
    assert_error(api.get(f"/files/{f['id']}"), 404, param="id")
    assert_error(api.get(f"/files/{f['id']}/content"), 404)
    assert_error(api.delete(f"/files/{f['id']}"), 404)
    assert [x["id"] for x in api.get("/files").json()["data"]] == [keep["id"]]
    state = {x["id"]: x for x in ctl.state()["files"]}
    assert state[f["id"]]["deleted"] and state[f["id"]]["expired"]
    assert not blob.exists()
    # new files are stamped with the advanced clock
    later = created(post_file(api, "c.txt", b"x"))
    assert later["created_at"] >= f["created_at"] + 3600


def test_unknown_urls_and_methods(api):
    assert_error(api.get("/nothing"), 404, contains="Invalid URL (GET /v1/nothing)", param=None, code=None)
    assert_error(api.get("/files/file-x/other"), 404, contains="Invalid URL")
    assert_error(api.get("/"), 404)
    assert_error(api.get("/files/"), 404)
    r = api.put("/files")
    assert_error(r, 405)
    assert "POST" in r.headers["allow"]
    assert_error(api.post("/files/file-x"), 405)
    assert_error(api.get("/uploads"), 405)


def test_every_response_has_a_request_id(emulator):
    ids = set()
    with httpx.Client() as client:
        for url, headers in [(f"{emulator.base_url}/files", {"Authorization": f"Bearer {TEST_API_KEY}"}),
                             (f"{emulator.base_url}/files", {}),
                             (f"{emulator.base_url}/nowhere", {}),
                             (emulator.base_url.replace("/v1", "/other"), {}),
                             (emulator.base_url.replace("/v1", "/_emulator/config"), {})]:
            rid = client.get(url, headers=headers).headers["x-request-id"]
            assert rid.startswith("req_") and len(rid) == 36 and int(rid[4:], 16) >= 0
            ids.add(rid)
    assert len(ids) == 5


def test_too_large_post_is_refused_while_streaming(api, ctl, emulator):
    size = purposes.MAX_POST_FILE_BYTES + 64 * MiB
    headers, body = multipart_stream([("purpose", "assistants")], "file", "big.bin", size, chunks(size, 1, 4 * MiB))
    assert_error(api.post("/files", content=body, headers=headers), 413, code="file_too_large",
                 type="invalid_request_error")
    [entry] = ctl.requests()
    # the server stopped reading soon after the limit (the rest was drained without processing)
    assert purposes.MAX_POST_FILE_BYTES < entry["request_bytes"] < purposes.MAX_POST_FILE_BYTES + 8 * MiB
    assert ctl.state()["files"] == []
    assert list((emulator.data_dir / "tmp").iterdir()) == []
    # the connection is still usable
    assert api.get("/files").status_code == 200


def test_batch_limit_is_200_mib(api, ctl):
    size = purposes.MAX_BATCH_BYTES + 1
    headers, body = multipart_stream([("purpose", "batch")], "file", "big.jsonl", size, chunks(size, 2, 4 * MiB))
    assert_error(api.post("/files", content=body, headers=headers), 413, code="file_too_large",
                 contains="200 MB")
    assert ctl.requests()[0]["request_bytes"] < purposes.MAX_BATCH_BYTES + 8 * MiB
    assert ctl.state()["files"] == []


def test_files_survive_a_restart(tmp_path):
    with EmulatorProcess(tmp_path / "data") as emu, \
            httpx.Client(base_url=emu.base_url, headers={"Authorization": "Bearer k"}) as client:
        # vision: a purpose whose content the emulator serves by default, as the real service does
        kept = created(post_file(client, "kept.txt", b"still here", purpose="vision"))
        gone = created(post_file(client, "gone.txt", b"deleted", purpose="vision"))
        newest = created(post_file(client, "newest.txt", b"newest", purpose="vision"))
        client.delete(f"/files/{gone['id']}").raise_for_status()
        up = client.post("/uploads", json={"filename": "u.bin", "purpose": "vision", "bytes": 3,
                                           "mime_type": "application/octet-stream"}).json()
        part = client.post(f"/uploads/{up['id']}/parts", files={"data": ("upload", b"abc")}).json()
        port = emu.port
        emu.restart()
        assert emu.port == port
        client.headers["Connection"] = "close"
        assert client.get(f"/files/{kept['id']}").json() == kept
        assert client.get(f"/files/{kept['id']}/content").content == b"still here"
        assert_error(client.get(f"/files/{gone['id']}"), 404)
        assert [f["id"] for f in client.get("/files").json()["data"]] == [newest["id"], kept["id"]]
        after = client.get("/files", params={"after": gone["id"]}).json()
        assert [f["id"] for f in after["data"]] == [kept["id"]]
        done = client.post(f"/uploads/{up['id']}/complete", json={"part_ids": [part["id"]]}).json()
        assert client.get(f"/files/{done['file']['id']}/content").content == b"abc"
