"""bench/client_alone.py, the benchmark's "client alone, no FUSE" contender: it must move the
real bytes with each client, or its figure would be a ceiling for nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "client_alone.py"
KEY = "sk-bench-alone-0123456789"

pytestmark = pytest.mark.timeout(120)


def run_alone(emulator, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": KEY}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env or environ,
                          capture_output=True, text=True, timeout=100)


@pytest.mark.parametrize("client", ["openai-fs", "sdk"])
def test_each_client_downloads_and_uploads_the_real_bytes(emulator, tmp_path, client):
    content = os.urandom(3 * 1024 * 1024 + 17)
    seeded = emulator.control.seed_file("big.bin", "vision", content)
    emulator.control.clear_requests()

    done = run_alone(emulator, client, "download", seeded["id"])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bytes"] == len(content)
    assert report["seconds"] > 0 and report["cpu"] >= 0
    assert emulator.control.count("GET", rf"^/v1/files/{seeded['id']}/content$") == 1

    source = tmp_path / "up.bin"
    source.write_bytes(content[::-1])
    done = run_alone(emulator, client, "upload", str(source), f"{client}.bin")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bytes"] == len(content)
    with httpx.Client(base_url=emulator.base_url, headers={"Authorization": f"Bearer {KEY}"}) as api:
        made = api.get(f"files/{report['id']}").json()
        assert (made["filename"], made["purpose"]) == (f"{client}.bin", "user_data")
    assert emulator.control.stored_content(report["id"]) == content[::-1]
    assert KEY not in done.stdout + done.stderr


def test_without_the_environment_it_says_what_is_missing(emulator):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    done = run_alone(emulator, "sdk", "download", "file-x", env=environ)
    assert done.returncode == 2
    assert "OPENAI_BASE_URL and OPENAI_API_KEY must be set" in done.stderr
    assert "Traceback" not in done.stderr
