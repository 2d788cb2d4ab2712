"""Helpers for the FUSE tests (fixtures are in conftest.py)."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import httpx

KEY = "sk-test-fuse-0123456789abcdef"


def wait_for(condition, timeout: float = 20.0, interval: float = 0.02, message: str = ""):
    """Poll ``condition`` until it returns something true, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message or condition}")


def run(*command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a real program; its output as text."""
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120,
                          **kwargs)


def content_requests(control, file_id: str | None = None) -> list[dict]:
    pattern = f"/files/{file_id}/content" if file_id else "/content$"
    return [r for r in control.requests() if re.search(pattern, r["path"])]


def list_requests(control) -> list[dict]:
    return [r for r in control.requests() if r["method"] == "GET" and r["path"].endswith("/files")]


def interrupt(mounted, sig: int = signal.SIGTERM) -> int:
    mounted.process.send_signal(sig)
    code = mounted.process.wait(timeout=30)
    mounted.stopped = True
    return code


def kill(mounted) -> None:
    """SIGKILL the mount process (a crash), then remove what is left of its mount."""
    mounted.process.send_signal(signal.SIGKILL)
    mounted.process.wait(timeout=30)
    subprocess.run(["fusermount3", "-u", "-z", str(mounted.path)], capture_output=True)
    mounted.stopped = True


def delete_on_server(emulator, file_id: str) -> None:
    """Delete a file the way another client would (straight through the API)."""
    httpx.delete(f"{emulator.base_url}/files/{file_id}",
                 headers={"Authorization": "Bearer another-client"}).raise_for_status()


def upload_on_server(emulator, filename: str, purpose: str, content: bytes) -> dict:
    """Upload a file the way another client would (POST /files)."""
    response = httpx.post(f"{emulator.base_url}/files", data={"purpose": purpose},
                          files={"file": (filename, content)},
                          headers={"Authorization": "Bearer another-client"}, timeout=120)
    response.raise_for_status()
    return response.json()
