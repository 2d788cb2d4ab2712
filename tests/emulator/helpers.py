"""Small helpers for the emulator's tests."""

from __future__ import annotations

import hashlib
import random
import time
from typing import Callable, Iterable, Iterator

import httpx

#: The key test clients send. The session emulator accepts any key; tests of a configured key
#: start their own emulator.
TEST_API_KEY = "sk-emulator-test-0123456789"
MiB = 1024 * 1024
BOUNDARY = "emulator-test-boundary-7f3a"


def post_file(api: httpx.Client, filename: str, content: bytes, purpose: str | None = "user_data",
              mime: str = "application/octet-stream", **fields: str) -> httpx.Response:
    data = dict(fields)
    if purpose is not None:
        data["purpose"] = purpose
    return api.post("/files", files={"file": (filename, content, mime)}, data=data)


def created(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def assert_error(response: httpx.Response, status: int, *, param: object = ..., code: object = ...,
                 type: str | None = None, contains: str | None = None) -> dict:
    """The response is an OpenAI error with this status (and param/code/type/message when given)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not ...:
        assert error["param"] == param, error
    if code is not ...:
        assert error["code"] == code, error
    if type is not None:
        assert error["type"] == type, error
    if contains is not None:
        assert contains in error["message"], error
    return error


def chunks(size: int, seed: int, chunk: int = MiB) -> Iterator[bytes]:
    """``size`` pseudo-random bytes (reproducible from ``seed``), in chunks."""
    rng = random.Random(seed)
    while size > 0:
        n = min(chunk, size)
        yield rng.randbytes(n)
        size -= n


def sha256_of(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def multipart_stream(text_fields: list[tuple[str, str]], file_field: str, filename: str, size: int,
                     body: Iterable[bytes]) -> tuple[dict[str, str], Iterator[bytes]]:
    """A ``multipart/form-data`` body streamed from ``body`` (``size`` bytes) without holding it:
    the headers (with Content-Length) and the byte iterator."""
    head = b"".join(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in text_fields)
    head += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    def generate() -> Iterator[bytes]:
        yield head
        yield from body
        yield tail

    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
               "Content-Length": str(len(head) + size + len(tail))}
    return headers, generate()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll until ``condition()`` holds (for output a child process writes asynchronously)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
