"""Where the real service is stricter than the spec, and the emulator follows it by default
(spec/NOTES.md, "Where the real service differs"): content refused for some purposes."""

from __future__ import annotations

import httpx
import pytest

from openai_fs import purposes
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


def test_the_session_emulator_starts_permissive_and_reset_restores_it(emulator, ctl, api):
    ids = seed_every_purpose(ctl)
    assert ctl.config()["downloadable"] == "all"
    assert api.get(f"/files/{ids['assistants']}/content").content == CONTENT
    ctl.use_real_service_defaults()
    assert api.get(f"/files/{ids['assistants']}/content").status_code == 400
    ctl.reset()
    assert ctl.config()["downloadable"] == "all"


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
