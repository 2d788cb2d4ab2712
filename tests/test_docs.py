"""The man page documents every command and option the parser knows."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from openai_fs.commands.cli import SUBCOMMANDS, build_parser

MAN = Path(__file__).resolve().parent.parent / "man" / "openai-fs.1"
#: the installed console script, next to the interpreter running the tests
SCRIPT = str(Path(sys.executable).parent / "openai-fs")


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    flags = set()
    for action in parser._actions:              # argparse has no public accessor for these
        flags.update(flag for flag in action.option_strings if flag.startswith("--"))
    flags.discard("--help")
    return flags


def test_every_command_and_option_is_in_the_man_page():
    page = MAN.read_text().replace("\\-", "-")
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == set(SUBCOMMANDS)
    for name, sub in commands.choices.items():
        assert f"openai-fs {name}" in page, name
        for flag in flags_of(sub):
            assert flag in page, f"{name} {flag} is not in man/openai-fs.1"


def test_the_man_page_renders_without_warnings():
    result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_every_subcommand_has_a_help_that_explains_itself():
    for name in SUBCOMMANDS:
        result = subprocess.run([SCRIPT, name, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and len(result.stdout.splitlines()) > 8, name
