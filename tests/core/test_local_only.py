"""Which names stay local (openai_fs/core/local_only.py)."""

from __future__ import annotations

import os

import pytest

from openai_fs.core.local_only import LocalOnly


@pytest.mark.parametrize("name", [
    ".report.txt.swp", ".notes.swo", ".x.swx", "report.txt~", "#notes.org#", ".#notes.org",
    "a.kate-swp", ".~lock.report.odt#", "~$report.docx", ".DS_Store", "._photo.jpg",
    "Thumbs.db", "desktop.ini", ".directory"])
def test_editor_and_desktop_temporaries_are_kept_local(name):
    assert LocalOnly().matches(name)


@pytest.mark.parametrize("name", [
    "report.txt", "4913", "2024", "notes.swp", ".hidden", "a~b", "lock.txt", "train.jsonl",
    ".goutputstream-ABC123"])
def test_ordinary_names_are_not(name):
    assert not LocalOnly().matches(name)


def test_vims_probe_is_local_only_when_made_the_way_vim_makes_it():
    kept = LocalOnly()
    exclusive = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    assert kept.is_vim_probe("4913", exclusive) and kept.is_vim_probe("5036", exclusive)
    assert not kept.is_vim_probe("4913", os.O_CREAT | os.O_WRONLY)      # touch 4913
    assert not kept.is_vim_probe("4914", exclusive)
    assert not kept.is_vim_probe("1234", exclusive)


def test_more_patterns_and_none():
    assert LocalOnly(["*.bak"]).matches("old.bak")
    nothing = LocalOnly(defaults=False)
    assert not nothing.matches(".report.txt.swp")
    assert not nothing.is_vim_probe("4913", os.O_CREAT | os.O_EXCL)
    assert LocalOnly(["*.bak"], defaults=False).matches("x.bak")
