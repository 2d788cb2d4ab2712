"""Authentication: any key by default, only the configured key otherwise; the key is never shown."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import httpx
import pytest

from openai_fs.emulator.control import EmulatorProcess

from .helpers import assert_error, wait_for

pytestmark = pytest.mark.timeout(60)

SECRET = "sk-proj-SECRETsecret0123456789abcdef"
WRONG = "sk-proj-WRONGwrong9876543210fedcba"


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"Authorization": "Bearer"},
                                     {"Authorization": "Basic dXNlcjpwYXNz"}])
def test_missing_key_is_401(emulator, headers, spec_checker):
    with httpx.Client(event_hooks={"response": [spec_checker.sync_hook]}) as client:
        for method, path in [("GET", "/files"), ("POST", "/files"), ("GET", "/files/file-x/content"),
                             ("POST", "/uploads"), ("GET", "/nowhere")]:
            r = client.request(method, emulator.base_url + path, headers=headers)
            assert_error(r, 401, type="invalid_request_error", code=None, param=None,
                         contains="You didn't provide an API key")


def test_any_key_works_without_a_configured_key(emulator):
    for key in ("k", "sk-anything", WRONG):
        r = httpx.get(emulator.base_url + "/files", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200


def test_control_api_needs_no_key(emulator):
    assert httpx.get(emulator.base_url.replace("/v1", "/_emulator/state")).status_code == 200


def test_configured_key(tmp_path, spec_checker):
    with EmulatorProcess(tmp_path / "data", api_key=SECRET, extra_args=["--access-log", "--log-level", "debug"]) as emu:
        key_file = tmp_path / ".data.api-key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        cmdline = open(f"/proc/{emu.pid}/cmdline", "rb").read().decode()
        assert SECRET not in cmdline and "--api-key-file" in cmdline
        with httpx.Client(base_url=emu.base_url, event_hooks={"response": [spec_checker.sync_hook]}) as client:
            ok = client.get("/files", headers={"Authorization": f"Bearer {SECRET}"})
            assert ok.status_code == 200
            for key in (WRONG, SECRET[:-1], SECRET + "x", SECRET.upper()):
                r = client.get("/files", headers={"Authorization": f"Bearer {key}"})
                error = assert_error(r, 401, code="invalid_api_key", type="invalid_request_error",
                                     contains="Incorrect API key provided.")
                assert key not in r.text and SECRET not in r.text
                assert key[-6:] not in error["message"] and SECRET[-6:] not in error["message"]
            assert_error(client.get("/files"), 401, code=None)
        wait_for(lambda: emu.output().count("GET /v1/files") >= 6, what="access log lines")
    assert not key_file.exists()
    output = emu.output()
    for text in (SECRET, WRONG, SECRET[-8:], WRONG[-8:]):
        assert text not in output


def test_api_key_file_and_api_key_options(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    for args in (["--api-key-file", str(key_file)], ["--api-key", SECRET]):
        with EmulatorProcess(tmp_path / "data", extra_args=args) as emu:
            url = emu.base_url + "/files"
            assert httpx.get(url, headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200
            assert httpx.get(url, headers={"Authorization": f"Bearer {WRONG}"}).status_code == 401


def test_empty_key_file_is_refused(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("\n")
    result = subprocess.run([sys.executable, "-m", "openai_fs", "serve", "--port", "0", "--data-dir",
                             str(tmp_path / "data"), "--api-key-file", str(key_file)],
                            capture_output=True, text=True, timeout=30, env=os.environ)
    assert result.returncode != 0 and "holds no key" in result.stderr
