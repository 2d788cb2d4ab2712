"""The README's set-up commands are the ones CI runs and the docs they point to exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(bash \.ci/setup[^\n]*)\n```", text)


def test_the_readme_gives_two_setup_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert "mount --demo" in demo
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), "the test command of .ci/run differs from the README's"


def test_files_the_readme_points_to_exist():
    for relative in ("docs/SEMANTICS.md", "man/openai-fs.1", "bench/run.py", ".ci/setup"):
        assert (ROOT / relative).exists(), relative
