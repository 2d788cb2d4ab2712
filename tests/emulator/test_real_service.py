"""Where the real service is stricter than the spec, and the emulator follows it by default
(spec/NOTES.md, "Where the real service differs"): content refused for some purposes, and
content sent whole and chunked, without Content-Length or Accept-Ranges, whatever Range asks."""

from __future__ import annotations

import email.message
import urllib.parse

import httpx
import pytest

from openai_fs.core import purposes
from openai_fs.emulator.config import REAL_DOWNLOADABLE
from openai_fs.emulator.control import EmulatorProcess

from .helpers import TEST_API_KEY, assert_error

pytestmark = pytest.mark.timeout(60)

REFUSED = ("assistants", "user_data", "fine-tune", "evals")
SERVED = ("batch", "vision", "assistants_output", "batch_output", "fine-tune-results")
CONTENT = b"the bytes of the file\n"


def refusal(purpose: str) -> dict:
    return {"error": {"message": f"Not allowed to download files of purpose: {purpose}",
                      "type": "invalid_request_error", "param": None, "code": None}}


def seed_every_purpose(ctl) -> dict[str, str]:
    """purpose -> id of a file of that purpose (output purposes included)."""
    seeded = ctl.seed_files([{"filename": f"{p}.jsonl", "purpose": p, "content": CONTENT}
                             for p in purposes.KNOWN_PURPOSES])
    return {f["purpose"]: f["id"] for f in seeded}


@pytest.fixture
def real_api(real_emulator, spec_checker):
    with httpx.Client(base_url=real_emulator.base_url, headers={"Authorization": f"Bearer {TEST_API_KEY}"},
                      timeout=30, event_hooks={"response": [spec_checker.sync_hook]}) as client:
        yield client


def client_of(emu: EmulatorProcess, spec_checker) -> httpx.Client:
    return httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {TEST_API_KEY}"}, timeout=30,
                        event_hooks={"response": [spec_checker.sync_hook]})


def test_the_table_covers_every_known_purpose():
    assert set(REFUSED) | set(SERVED) == set(purposes.KNOWN_PURPOSES)
    assert set(REAL_DOWNLOADABLE) == set(SERVED)


@pytest.mark.parametrize("purpose", REFUSED)
def test_content_of_a_refused_purpose_is_a_400(real_api, ctl, purpose):
    ids = seed_every_purpose(ctl)
    r = real_api.get(f"/files/{ids[purpose]}/content")
    assert r.status_code == 400 and r.json() == refusal(purpose)
    assert r.headers["content-type"] == "application/json"
    assert real_api.head(f"/files/{ids[purpose]}/content").status_code == 400
    # the file itself is there: its object, listing and delete work
    assert real_api.get(f"/files/{ids[purpose]}").json()["purpose"] == purpose
    assert ids[purpose] in [f["id"] for f in real_api.get("/files", params={"purpose": purpose}).json()["data"]]
    assert real_api.delete(f"/files/{ids[purpose]}").json()["deleted"] is True


@pytest.mark.parametrize("purpose", SERVED)
def test_content_of_a_served_purpose_is_the_bytes(real_api, ctl, purpose):
    ids = seed_every_purpose(ctl)
    r = real_api.get(f"/files/{ids[purpose]}/content")
    assert r.status_code == 200 and r.content == CONTENT


def test_an_unknown_file_is_still_a_404(real_api):
    assert_error(real_api.get("/files/file-nope/content"), 404, param="id")


def test_uploaded_files_are_refused_too(real_api):
    r = real_api.post("/files", files={"file": ("a.txt", b"mine", "text/plain")}, data={"purpose": "assistants"})
    assert r.status_code == 200
    assert real_api.get(f"/files/{r.json()['id']}/content").json() == refusal("assistants")


def test_downloadable_at_runtime(real_api, ctl):
    ids = seed_every_purpose(ctl)
    assert ctl.set_downloadable(["assistants", "user_data", "assistants"])["downloadable"] == ["assistants",
                                                                                              "user_data"]
    assert real_api.get(f"/files/{ids['assistants']}/content").content == CONTENT
    assert real_api.get(f"/files/{ids['user_data']}/content").content == CONTENT
    assert real_api.get(f"/files/{ids['batch']}/content").json() == refusal("batch")
    assert ctl.set_downloadable([])["downloadable"] == []
    assert real_api.get(f"/files/{ids['vision']}/content").json() == refusal("vision")
    assert ctl.use_permissive()["downloadable"] == "all"
    for purpose, file_id in ids.items():
        assert real_api.get(f"/files/{file_id}/content").content == CONTENT, purpose
    assert ctl.use_real_service_defaults()["downloadable"] == sorted(SERVED)


def test_a_purpose_the_table_does_not_know_is_refused_unless_listed(real_api, ctl):
    f = ctl.seed_file("x.bin", "moderation", CONTENT)
    assert real_api.get(f"/files/{f['id']}/content").json() == refusal("moderation")
    ctl.set_downloadable("all")
    assert real_api.get(f"/files/{f['id']}/content").content == CONTENT


def test_the_session_emulator_starts_like_the_real_service_and_reset_restores_it(
        emulator_server, api):
    ctl = emulator_server.control
    ctl.reset()
    ids = seed_every_purpose(ctl)
    assert ctl.config()["downloadable"] == sorted(SERVED)
    assert api.get(f"/files/{ids['assistants']}/content").status_code == 400
    ctl.use_permissive()
    assert api.get(f"/files/{ids['assistants']}/content").content == CONTENT
    ctl.reset()
    assert ctl.config()["downloadable"] == sorted(SERVED)


def test_serve_refuses_by_default(tmp_path, spec_checker):
    with EmulatorProcess(tmp_path / "data") as emu, client_of(emu, spec_checker) as client:
        assert emu.control.config()["downloadable"] == sorted(SERVED)
        ids = seed_every_purpose(emu.control)
        for purpose, file_id in ids.items():
            r = client.get(f"/files/{file_id}/content")
            if purpose in SERVED:
                assert r.status_code == 200 and r.content == CONTENT, purpose
            else:
                assert r.json() == refusal(purpose), purpose


def test_downloadable_from_the_command_line(tmp_path, spec_checker):
    with EmulatorProcess(tmp_path / "data", extra_args=["--downloadable", " user_data, assistants ,"]) as emu, \
            client_of(emu, spec_checker) as client:
        assert emu.control.config()["downloadable"] == ["assistants", "user_data"]
        ids = seed_every_purpose(emu.control)
        assert client.get(f"/files/{ids['user_data']}/content").content == CONTENT
        assert client.get(f"/files/{ids['batch']}/content").json() == refusal("batch")
        # reset goes back to the command line's setting
        emu.control.use_permissive()
        emu.control.reset()
        assert emu.control.config()["downloadable"] == ["assistants", "user_data"]


def test_permissive_process_serves_everything(tmp_path, spec_checker):
    with EmulatorProcess(tmp_path / "data", permissive=True) as emu, client_of(emu, spec_checker) as client:
        ids = seed_every_purpose(emu.control)
        for purpose, file_id in ids.items():
            assert client.get(f"/files/{file_id}/content").content == CONTENT, purpose
        emu.control.use_real_service_defaults()
        emu.control.reset()
        assert emu.control.config()["downloadable"] == "all"


# -- content framing: chunked, Content-Disposition, no Content-Length, Range ignored ----------

def assert_real_framing(r: httpx.Response) -> None:
    assert r.status_code == 200
    assert r.headers["transfer-encoding"] == "chunked"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment; filename=")
    for absent in ("content-length", "accept-ranges", "content-range"):
        assert absent not in r.headers, absent


def test_content_is_chunked_without_length_or_ranges(real_api, ctl):
    f = ctl.seed_file("report.pdf", "vision", CONTENT)
    r = real_api.get(f"/files/{f['id']}/content")
    assert_real_framing(r)
    assert r.headers["content-disposition"] == 'attachment; filename="report.pdf"'
    assert r.content == CONTENT
    head = real_api.head(f"/files/{f['id']}/content")
    assert head.status_code == 200 and head.content == b"" and "content-length" not in head.headers


@pytest.mark.parametrize("header", ["bytes=0-9", "bytes=5-", "bytes=-3", "bytes=1000-", "bytes=0-1,4-5", "junk"])
def test_range_is_ignored(real_api, ctl, header):
    f = ctl.seed_file("a.bin", "batch", CONTENT)
    ctl.clear_requests()
    r = real_api.get(f"/files/{f['id']}/content", headers={"Range": header})
    assert_real_framing(r)
    assert r.content == CONTENT
    [entry] = ctl.requests()
    assert entry["range"] == header and entry["status"] == 200 and entry["response_bytes"] == len(CONTENT)


def test_empty_and_big_files_are_chunked_too(real_api, ctl):
    empty = ctl.seed_file("empty.bin", "vision", b"")
    r = real_api.get(f"/files/{empty['id']}/content", headers={"Range": "bytes=0-"})
    assert_real_framing(r)
    assert r.content == b""
    data = bytes(range(251)) * 20_000  # about 5 MB: several chunks
    big = ctl.seed_file("big.bin", "batch_output", data)
    received = bytearray()
    with real_api.stream("GET", f"/files/{big['id']}/content") as r:
        assert_real_framing(r)
        for piece in r.iter_bytes():
            received += piece
    assert bytes(received) == data


@pytest.mark.parametrize("filename, header, decoded", [
    ("plain.txt", 'attachment; filename="plain.txt"', "plain.txt"),
    ('say "hi" \\ bye.txt', 'attachment; filename="say \\"hi\\" \\\\ bye.txt"', 'say "hi" \\ bye.txt'),
    ("notes/2024/plan.txt", 'attachment; filename="notes/2024/plan.txt"', "notes/2024/plan.txt"),
    ("café ünï.txt", "attachment; filename=\"caf_ _n_.txt\"; filename*=UTF-8''caf%C3%A9%20%C3%BCn%C3%AF.txt",
     "café ünï.txt"),
    ("tab\there\nnewline;x=1.txt", "attachment; filename=\"tab_here_newline;x=1.txt\"; "
     "filename*=UTF-8''tab%09here%0Anewline%3Bx%3D1.txt", "tab\there\nnewline;x=1.txt"),
    ("日本語.txt", "attachment; filename=\"___.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.txt",
     "日本語.txt"),
])
def test_content_disposition_quotes_and_encodes_the_filename(real_api, ctl, filename, header, decoded):
    f = ctl.seed_file(filename, "vision", CONTENT)
    r = real_api.get(f"/files/{f['id']}/content")
    assert r.headers["content-disposition"] == header
    # the name comes back whole: from filename* where there is one (clients prefer it), else
    # from the quoted filename as a standard parser reads it
    plain, _, extended = header.partition("; filename*=")
    if extended:
        charset, _, encoded = extended.partition("''")
        assert charset == "UTF-8" and urllib.parse.unquote(encoded, errors="strict") == decoded
    else:
        message = email.message.Message()
        message["content-disposition"] = plain
        assert message.get_filename() == decoded


def test_honour_range_at_runtime(real_api, ctl):
    f = ctl.seed_file("a.bin", "batch", CONTENT)
    assert ctl.set_config(honour_range=True)["honour_range"] is True
    r = real_api.get(f"/files/{f['id']}/content", headers={"Range": "bytes=4-8"})
    assert r.status_code == 206 and r.content == CONTENT[4:9]
    assert r.headers["content-range"] == f"bytes 4-8/{len(CONTENT)}" and r.headers["content-length"] == "5"
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-disposition"] == 'attachment; filename="a.bin"'
    assert_error(real_api.get(f"/files/{f['id']}/content", headers={"Range": "bytes=999-"}), 416)
    whole = real_api.get(f"/files/{f['id']}/content")
    assert whole.status_code == 200 and whole.headers["content-length"] == str(len(CONTENT))
    assert "transfer-encoding" not in whole.headers


def test_serve_frames_content_like_the_real_service_by_default(tmp_path, spec_checker):
    with EmulatorProcess(tmp_path / "data") as emu, client_of(emu, spec_checker) as client:
        assert emu.control.config()["honour_range"] is False
        f = emu.control.seed_file("a.bin", "batch", CONTENT)
        r = client.get(f"/files/{f['id']}/content", headers={"Range": "bytes=0-3"})
        assert_real_framing(r)
        assert r.content == CONTENT
