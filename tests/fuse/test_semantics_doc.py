"""Every console example of docs/SEMANTICS.md, run in a fresh mount and compared.

A block's ``$ command`` lines run one by one with ``sh -c`` in the mount point, stdout and
stderr together; the lines until the next ``$`` are the expected output. ``{id}`` matches a
file id, a line ``...`` any number of lines, and ``...`` inside a line any text. Comments
``<!-- seed: PURPOSE NAME CONTENT -->`` right before a block put files on the server first.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "SEMANTICS.md"
BLOCK = re.compile(r"((?:<!-- seed: .*? -->\n)*)```console\n(.*?)```", re.DOTALL)
SEED = re.compile(r"<!-- seed: (\S+) (\S+) (.*?) -->")


def examples() -> list[tuple[str, list[tuple[str, str, str]], str]]:
    text = DOC.read_text(encoding="utf-8")
    found = []
    for match in BLOCK.finditer(text):
        line = text[:match.start()].count("\n") + 1
        seeds = SEED.findall(match.group(1))
        found.append((f"line {line}", seeds, match.group(2)))
    return found


def steps(block: str) -> list[tuple[str, list[str]]]:
    result: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            result.append((line[2:], []))
        else:
            assert result, f"output before any command: {line!r}"
            result[-1][1].append(line)
    return result


def pattern(expected: list[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line == "...":
            parts.append(r"(?:.*\n)*?")
            continue
        escaped = re.escape(line).replace(re.escape("{id}"), r"file-[A-Za-z0-9]+")
        escaped = escaped.replace(re.escape("..."), r".*?")
        parts.append(escaped + r"\n")
    return re.compile("".join(parts) + r"\Z")


@pytest.mark.parametrize("where, seeds, block", examples(), ids=lambda v: v if
                         isinstance(v, str) and v.startswith("line") else "")
def test_example(where, seeds, block, mount, emulator):
    for purpose, name, content in seeds:
        emulator.control.seed_file(name, purpose, content.encode())
    mounted = mount()
    # the examples show refusals on purpose: their log lines are expected
    mounted.expect_log(r"refused|cannot be uploaded|made by the platform|does not hand out")
    for command, expected in steps(block):
        result = subprocess.run(["sh", "-c", command], cwd=mounted.path, capture_output=True,
                                text=True, timeout=60,
                                env={**os.environ, "LC_ALL": "C"})
        output = result.stdout + result.stderr
        if output and not output.endswith("\n"):
            output += "\n"
        assert pattern(expected).match(output), (
            f"{DOC.name} {where}: `{command}` printed:\n{output}\nexpected:\n"
            + "\n".join(expected))


def test_the_document_has_examples():
    assert len(examples()) >= 8
