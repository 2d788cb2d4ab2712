"""Drive an emulator from tests and benchmarks: run it in a child process and talk to its
``/_emulator/`` control API.

    with EmulatorProcess(tmp_path / "data") as emu:
        client = OpenAI(base_url=emu.base_url, api_key="sk-test")
        emu.control.add_fault("status", status=500, count=1)
        ...
        assert emu.control.count("GET", r"^/v1/files$") == 2
"""

from __future__ import annotations

import atexit
import base64
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Iterable, Sequence

import httpx

from openai_fs.emulator.config import ALL_PURPOSES, REAL_DOWNLOADABLE

READY_RE = re.compile(r"^openai-fs emulator listening on (http://(\S+):(\d+)/v1)$", re.MULTILINE)
#: Child output kept by ``output()`` (the oldest is dropped beyond this).
OUTPUT_LIMIT = 8 * 1024 * 1024
#: ``openai-fs serve`` options of ``EmulatorProcess(permissive=True)``: content of every purpose
#: is served (the real service refuses some), and Range is honoured (the real service ignores it).
PERMISSIVE_ARGS: tuple[str, ...] = ("--downloadable", ALL_PURPOSES, "--honour-range")

_running: "weakref.WeakSet[EmulatorProcess]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for proc in list(_running):
        proc.stop()


class EmulatorControlError(RuntimeError):
    pass


class EmulatorControl:
    """A synchronous client of ``/_emulator``."""

    def __init__(self, root_url: str, timeout: float = 60.0) -> None:
        self.root_url = root_url.rstrip("/")
        self._timeout = timeout
        self._client = self._new_client()

    def _new_client(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.root_url}/_emulator", timeout=self._timeout)

    def reconnect(self) -> None:
        """Drop pooled connections (after the server restarted)."""
        self._client.close()
        self._client = self._new_client()

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise EmulatorControlError(f"{method} /_emulator{path}: {response.status_code} {response.text}")
        return response.json()

    # request log
    def requests(self, since: int = 0) -> list[dict]:
        return self._call("GET", "/requests", params={"since": since} if since else None)

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """How many logged ``/v1`` requests have this method and a path matching this regex."""
        pattern = re.compile(path) if path is not None else None
        return sum(1 for r in self.requests()
                   if (method is None or r["method"] == method.upper())
                   and (pattern is None or pattern.search(r["path"])))

    # faults
    def add_fault(self, kind: str, **params: Any) -> dict:
        return self._call("POST", "/faults", json={"kind": kind, **params})

    def remove_fault(self, fault_id: str) -> None:
        self._call("DELETE", f"/faults/{fault_id}")

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def faults(self) -> list[dict]:
        return self._call("GET", "/faults")

    # runtime config: downloadable, honour_range, page_cap, latency, bandwidth
    def config(self) -> dict:
        return self._call("GET", "/config")

    def set_config(self, **changes: Any) -> dict:
        return self._call("PATCH", "/config", json=changes)

    def set_downloadable(self, purposes: str | Iterable[str]) -> dict:
        """Serve the content of these purposes only (``"all"``: of every purpose); the others
        answer 400 "Not allowed to download files of purpose: P"."""
        value = purposes if purposes == ALL_PURPOSES else list(purposes)
        return self.set_config(downloadable=value)

    def use_real_service_defaults(self) -> dict:
        """Behave like the real service until the next reset, whatever the server was started
        with: content refused for the purposes it refuses, sent whole and chunked, Range ignored."""
        return self.set_config(downloadable=list(REAL_DOWNLOADABLE), honour_range=False)

    def use_permissive(self) -> dict:
        """Serve every purpose's content and honour Range until the next reset (what
        ``EmulatorProcess(permissive=True)`` starts with)."""
        return self.set_config(downloadable=ALL_PURPOSES, honour_range=True)

    # state
    def state(self) -> dict:
        return self._call("GET", "/state")

    def reset(self) -> None:
        self._call("POST", "/reset")

    def advance_clock(self, seconds: float) -> None:
        self._call("POST", "/clock", json={"advance": seconds})

    # hostile listing entries
    def add_listing_extras(self, entries: Sequence[Any], purpose: str | None = None) -> dict:
        """Append these raw JSON values, unvalidated, to the ``data`` of every ``GET /files`` page
        (of ``purpose`` and unfiltered listings, or of every listing when None); ``GET /files/{id}``
        answers an object among them whose ``id`` matches. Until ``clear_listing_extras`` or reset."""
        return self._call("POST", "/listing_extras", json={"purpose": purpose, "entries": list(entries)})

    def listing_extras(self) -> list[dict]:
        return self._call("GET", "/listing_extras")

    def clear_listing_extras(self) -> None:
        self._call("DELETE", "/listing_extras")

    def stored_content(self, file_id: str, start: int = 0, length: int | None = None) -> bytes:
        """What the server holds for a file (``length`` bytes from ``start``, or all of it),
        whatever its purpose (the public API refuses the content of some purposes, as the real
        service does)."""
        headers = {} if length is None else {"Range": f"bytes={start}-{start + length - 1}"}
        response = self._client.get(f"/files/{file_id}/content", headers=headers)
        if response.status_code >= 400:
            raise EmulatorControlError(f"GET /_emulator/files/{file_id}/content: {response.status_code} "
                                       f"{response.text}")
        return response.content

    def stored_content_stream(self, file_id: str):
        """``with control.stored_content_stream(id) as response``: the same, streamed."""
        return self._client.stream("GET", f"/files/{file_id}/content")

    def seed_file(self, filename: str, purpose: str, content: bytes, created_at: int | None = None,
                  expires_at: int | None = None) -> dict:
        return self._call("POST", "/seed", json=_seed_item(filename, purpose, content, created_at, expires_at))

    def seed_files(self, files: Sequence[dict]) -> list[dict]:
        """Seed many files in one request; each item takes ``seed_file``'s keyword arguments."""
        return self._call("POST", "/seed", json=[_seed_item(**f) for f in files])


def _seed_item(filename: str, purpose: str, content: bytes, created_at: int | None = None,
               expires_at: int | None = None) -> dict:
    item: dict[str, Any] = {"filename": filename, "purpose": purpose,
                            "content_b64": base64.b64encode(content).decode()}
    if created_at is not None:
        item["created_at"] = created_at
    if expires_at is not None:
        item["expires_at"] = expires_at
    return item


class EmulatorProcess:
    """``openai-fs serve`` in a child process, on loopback. A context manager (start/stop).

    By default the server behaves like the real service (content of some purposes refused).
    ``permissive=True`` starts it with :data:`PERMISSIVE_ARGS` instead, and its control API's
    reset goes back to that."""

    def __init__(self, data_dir: Path, *, api_key: str | None = None, extra_args: Sequence[str] = (),
                 port: int = 0, env: dict | None = None, host: str = "127.0.0.1",
                 startup_timeout: float = 20.0, permissive: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.api_key = api_key
        self.permissive = permissive
        self.extra_args = list(extra_args)
        self.port = port
        self.env = dict(env or {})
        self.host = host
        self.startup_timeout = startup_timeout
        self.base_url = ""
        self.control: EmulatorControl | None = None  # set by start()
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._output: list[str] = []
        self._output_size = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()

    # the key reaches the child through a 0600 file, never through argv
    @property
    def _key_file(self) -> Path:
        return self.data_dir.parent / f".{self.data_dir.name}.api-key"

    def _write_key(self) -> None:
        self._key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.api_key or "")

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the emulator is not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def output(self) -> str:
        """What the child wrote to stdout and stderr so far."""
        with self._lock:
            return "".join(self._output)

    def _read_output(self, stream) -> None:
        for line in iter(stream.readline, ""):
            with self._lock:
                self._output.append(line)
                self._output_size += len(line)
                while self._output_size > OUTPUT_LIMIT and len(self._output) > 1:
                    self._output_size -= len(self._output.pop(0))
            if READY_RE.match(line.rstrip("\n")):
                self._ready.set()
        stream.close()

    def start(self) -> None:
        if self.running():
            raise RuntimeError("the emulator is already running")
        args = [sys.executable, "-m", "openai_fs", "serve", "--host", self.host, "--port", str(self.port),
                "--data-dir", str(self.data_dir)]
        if self.api_key is not None:
            self._write_key()
            args += ["--api-key-file", str(self._key_file)]
        if self.permissive:
            args += PERMISSIVE_ARGS
        args += self.extra_args
        # the emulator has its own key (or none): a user's real one stays out of its environment
        inherited = {name: text for name, text in os.environ.items() if name != "OPENAI_API_KEY"}
        env = {**inherited, **self.env, "PYTHONUNBUFFERED": "1"}
        self._ready.clear()
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, env=env, text=True, errors="replace")
        self._reader = threading.Thread(target=self._read_output, args=(self._proc.stdout,),
                                        name=f"emulator-output-{self._proc.pid}", daemon=True)
        self._reader.start()
        _running.add(self)
        deadline = time.monotonic() + self.startup_timeout
        while not self._ready.wait(0.02):
            if self._proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"the emulator exited with status {self._proc.returncode} before it "
                                   f"was ready:\n{self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the emulator was not ready within {self.startup_timeout} s:\n{self.output()}")
        match = READY_RE.search(self.output())
        assert match is not None
        self.port = int(match.group(3))
        self.base_url = f"http://{self.host}:{self.port}/v1"
        root = self.base_url[:-len("/v1")]
        if self.control is None or self.control.root_url != root:
            self.control = EmulatorControl(root)
        else:
            self.control.reconnect()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        _running.discard(self)
        if self.api_key is not None:
            try:
                self._key_file.unlink()
            except FileNotFoundError:
                pass

    def restart(self) -> None:
        """Stop and start again on the same port with the same data directory."""
        self.stop()
        self.start()

    def __enter__(self) -> "EmulatorProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.control is not None:
            self.control.close()
