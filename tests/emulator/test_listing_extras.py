"""Hostile listing entries (``/_emulator/listing_extras``): raw JSON values appended, unvalidated,
to every ``GET /files`` page, and answered by ``GET /files/{id}``.

The clients here do not validate against the spec: these answers break it on purpose."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from openai_fs.emulator.control import EmulatorControlError

from .helpers import TEST_API_KEY, assert_error, created, post_file

pytestmark = pytest.mark.timeout(60)


def entry(file_id, **fields) -> dict:
    return {"id": file_id, "object": "file", "bytes": 3, "created_at": 1_700_000_000, "filename": "f.txt",
            "purpose": "assistants", "status": "processed", **fields}


HOSTILE = [
    entry("../../x"),
    entry("a/b"),
    entry("nul\x00id"),
    entry(""),
    entry("x" * 10_240),
    {"object": "file"},                                  # no id, no anything
    {"id": 5, "bytes": "12", "filename": None},         # wrong types
    entry("file-negative", bytes=-5),
    entry("file-yesterday", created_at="yesterday"),
    entry("file-long-name", filename="n" * 100_000),
    entry("file-slashes", filename="../../etc/passwd"),
    entry("file-nul-name", filename="a\x00b"),
    entry("file-nested", purpose={"not": "a string"}, status=None, extra=[1, 2, 3]),
    entry("file-float", bytes=1.5, created_at=1e300),
    "a bare string",
    42,
    None,
    [1, 2, 3],
]


@pytest.fixture
def raw(emulator):
    """An httpx client of the session emulator that does not check the spec."""
    with httpx.Client(base_url=emulator.base_url, headers={"Authorization": f"Bearer {TEST_API_KEY}"},
                      timeout=30) as client:
        yield client


def by_id(raw: httpx.Client, file_id: str) -> httpx.Response:
    return raw.get("/files/" + quote(file_id, safe=""))


def test_entries_are_appended_raw_to_every_listing(raw, ctl):
    real = created(post_file(raw, "real.txt", b"abc"))
    assert ctl.add_listing_extras(HOSTILE) == {"added": len(HOSTILE), "total": len(HOSTILE)}
    listing = raw.get("/files").json()
    assert listing["data"] == [real] + HOSTILE
    # the ids and has_more describe the store's files only
    assert (listing["first_id"], listing["last_id"], listing["has_more"]) == (real["id"], real["id"], False)
    for purpose in ("assistants", "batch", "no-such-purpose"):
        assert raw.get("/files", params={"purpose": purpose}).json()["data"][-len(HOSTILE):] == HOSTILE
    # and to every page
    second = created(post_file(raw, "second.txt", b"de"))
    page1 = raw.get("/files", params={"limit": 1}).json()
    page2 = raw.get("/files", params={"limit": 1, "after": page1["last_id"]}).json()
    assert page1["data"] == [second] + HOSTILE and page1["has_more"] is True
    assert page2["data"] == [real] + HOSTILE and page2["has_more"] is False


def test_entries_of_one_purpose(raw, ctl):
    ctl.add_listing_extras([entry("file-a1")], purpose="assistants")
    ctl.add_listing_extras([entry("file-every")])
    ctl.add_listing_extras([entry("file-b1", purpose="batch")], purpose="batch")

    def ids(**params) -> list:
        return [e["id"] for e in raw.get("/files", params=params).json()["data"]]

    assert ids(purpose="assistants") == ["file-a1", "file-every"]
    assert ids(purpose="batch") == ["file-every", "file-b1"]
    assert ids(purpose="vision") == ["file-every"]
    assert ids() == ["file-a1", "file-every", "file-b1"]
    assert [x["purpose"] for x in ctl.listing_extras()] == ["assistants", None, "batch"]


def test_an_injected_entry_is_answered_by_id(raw, ctl):
    real = created(post_file(raw, "real.txt", b"abc"))
    ctl.add_listing_extras(HOSTILE)
    for hostile in HOSTILE:
        if isinstance(hostile, dict) and isinstance(hostile.get("id"), str):
            r = by_id(raw, hostile["id"])
            assert r.status_code == 200, hostile["id"][:40]
            assert r.json() == hostile
    # the id of an object is matched as a string only; the rest is as before
    assert_error(raw.get("/files/5"), 404)
    assert raw.get(f"/files/{real['id']}").json() == real
    assert_error(raw.get("/files/file-unknown"), 404)
    assert_error(raw.get("/files/..%2F..%2Fy"), 404)
    # content, delete and the other methods do not know them
    assert_error(raw.get("/files/file-negative/content"), 404)
    assert_error(raw.delete("/files/file-negative"), 404)


def test_an_injected_entry_may_shadow_a_real_file(raw, ctl):
    real = created(post_file(raw, "real.txt", b"abc"))
    ctl.add_listing_extras([{"id": real["id"], "bytes": "many"}])
    assert raw.get(f"/files/{real['id']}").json() == {"id": real["id"], "bytes": "many"}
    assert raw.get(f"/files/{real['id']}/content").content == b"abc"


def test_faults_apply_to_lookups_of_injected_entries(raw, ctl):
    ctl.add_listing_extras([entry("file-x")])
    ctl.add_fault("status", status=503, count=1)
    assert_error(by_id(raw, "file-x"), 503)
    assert by_id(raw, "file-x").json() == entry("file-x")
    assert [e["status"] for e in ctl.requests()] == [503, 200]


def test_clear_reset_and_bad_bodies(raw, ctl):
    ctl.add_listing_extras([entry("file-x")])
    ctl.clear_listing_extras()
    assert ctl.listing_extras() == [] and raw.get("/files").json()["data"] == []
    assert_error(by_id(raw, "file-x"), 404)
    ctl.add_listing_extras([entry("file-x")], purpose="vision")
    ctl.reset()
    assert ctl.listing_extras() == [] and raw.get("/files", params={"purpose": "vision"}).json()["data"] == []
    for body in ({"entries": {"id": "x"}}, {"purpose": 3, "entries": []}, {"entries": [], "colour": 1}, "x", 5):
        with pytest.raises(EmulatorControlError):
            ctl._call("POST", "/listing_extras", json=body)
    assert ctl._call("POST", "/listing_extras", json=[1, {"id": "y"}]) == {"added": 2, "total": 2}
    assert ctl.listing_extras() == [{"purpose": None, "entry": 1}, {"purpose": None, "entry": {"id": "y"}}]
