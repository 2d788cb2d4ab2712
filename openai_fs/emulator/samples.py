"""Sample files for ``serve --seed-demo`` (and so for ``openai-fs mount --demo``).

A few small files in every known purpose, chosen to show the mount's naming rules: two files
with the same filename in one purpose, and a filename containing a ``/``. Unless the server is
started with ``--downloadable``, the content of those in ``assistants``, ``user_data``,
``fine-tune`` and ``evals`` is refused, as the real service refuses it.
"""

from __future__ import annotations

import json
import struct
import zlib

from openai_fs.emulator.store import FileRecord, Store


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG with a colour gradient, built without any imaging library."""
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter type: none
        for x in range(width):
            row += bytes((x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 128))
        rows.append(bytes(row))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


def _jsonl(*objects: dict) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


def _chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]}


def _batch_request(n: int, prompt: str) -> dict:
    return {"custom_id": f"request-{n}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}}


def sample_files() -> list[tuple[str, str, bytes]]:
    """``(purpose, filename, content)`` for every sample, oldest first."""
    return [
        ("assistants", "README.md",
         b"# openai-fs demo\n\nEvery directory of this mount is a purpose of the OpenAI Files API.\n"),
        ("assistants", "notes/2024/plan.txt",
         b"A filename may contain a slash; the mount shows it under a mapped name.\n"),
        ("batch", "requests.jsonl",
         _jsonl(_batch_request(1, "Say hello."), _batch_request(2, "Name three rivers."))),
        ("fine-tune", "train.jsonl",
         _jsonl(_chat("What is 2 + 2?", "4."), _chat("Capital of France?", "Paris."))),
        ("fine-tune", "validation.jsonl", _jsonl(_chat("What is 3 + 3?", "6."))),
        ("vision", "gradient.png", png(32, 32)),
        ("user_data", "data.csv", b"city,population\nParis,2102650\nLyon,522250\n"),
        ("user_data", "data.csv", b"city,population\nBerlin,3596999\nHamburg,1851596\n"),
        ("evals", "eval-set.jsonl",
         _jsonl({"item": {"input": "2 + 2", "expected": "4"}},
                {"item": {"input": "10 / 4", "expected": "2.5"}})),
        ("assistants_output", "summary.md", b"# Summary\n\nThe assistant read README.md.\n"),
        ("batch_output", "batch_demo_output.jsonl",
         _jsonl({"id": "batch_req_1", "custom_id": "request-1", "response": {"status_code": 200},
                 "error": None})),
        ("fine-tune-results", "step_metrics.csv",
         b"step,train_loss,train_accuracy\n1,1.92,0.41\n2,1.37,0.55\n3,0.98,0.68\n"),
    ]


def seed_demo(store: Store) -> list[FileRecord]:
    """Blocking: add the samples, one minute apart so the order of creation is visible."""
    samples = sample_files()
    start = store.clock.seconds() - 60 * len(samples)
    return [store.add_file(store.write_blob(content), filename, purpose, len(content),
                           created_at=start + 60 * i)
            for i, (purpose, filename, content) in enumerate(samples)]
