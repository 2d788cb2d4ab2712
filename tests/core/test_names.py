"""The reversible name rule (openai_fs/core/names.py): every server filename has one path component,
and the component gives the filename back."""

from __future__ import annotations

import os

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from openai_fs.core import names
from openai_fs.core.names import DOT, ESCAPE, MAX_NAME_BYTES, NUL, SLASH

#: the characters the rule treats specially, and its own replacement characters
SPECIAL = ["/", "\0", ".", "..", DOT, SLASH, NUL, ESCAPE, "\ud800", "\udfff", " "]
#: any character, lone surrogates included (server names are arbitrary JSON strings)
any_char = st.characters(codec=None, exclude_categories=())
filenames = st.lists(st.one_of(st.sampled_from(SPECIAL), any_char), max_size=40).map("".join)
file_ids = st.from_regex(r"file-[A-Za-z0-9]{1,30}", fullmatch=True)


@given(filenames)
@example(".")
@example("..")
@example(DOT)
@example(DOT * 2)
@example(ESCAPE)
@example(ESCAPE + DOT)
@example(DOT + DOT + DOT)
@example("a/b\0c")
@example(SLASH + NUL + ESCAPE)
@example("\ud800")
def test_decode_gives_back_every_filename(filename):
    assert names.decode(names.encode(filename)) == filename


@given(filenames)
@example(".")
@example("..")
@example("/")
@example("\0")
def test_encode_never_yields_what_a_path_component_cannot_hold(filename):
    component = names.encode(filename)
    assert "/" not in component and "\0" not in component
    assert component not in (".", "..")


@given(filenames, filenames)
def test_different_filenames_get_different_components(first, second):
    if first != second:
        assert names.encode(first) != names.encode(second)


def test_the_documented_examples():
    assert names.encode("a/b") == "a" + SLASH + "b"
    assert names.encode("x\0") == "x" + NUL
    assert names.encode(".") == DOT and names.encode("..") == DOT * 2
    assert names.encode("notes.txt") == "notes.txt"       # ordinary names stay as they are
    assert names.encode(SLASH) == ESCAPE + SLASH


@given(st.one_of(filenames, st.text(any_char, min_size=200, max_size=400),
                 st.text(alphabet="日本語ü€𝄞", min_size=60, max_size=300)), file_ids)
@example("x" * 1000 + ".jsonl", "file-abc")
@example("日" * 200 + ".txt", "file-abc")
@example("𝄞" * 100 + ".tar", "file-abc")
@example("", "file-abc")
@example("a\ud800" * 100 + ".txt", "file-abc")
@example("a" * 300, "file-abc")
@example("report.final." + "e" * 100, "file-abc")
def test_with_id_keeps_the_extension_and_the_id_and_fits(filename, file_id):
    component = names.encode(filename)
    stem, ext = os.path.splitext(component)
    shown = names.with_id(component, file_id)
    raw = names.name_bytes(shown)
    assert 0 < len(raw) <= MAX_NAME_BYTES
    assert names.fits(shown)
    assert f"({file_id})" in shown
    assert "/" not in shown and "\0" not in shown
    if len(names.name_bytes(ext)) <= 32:
        assert shown.endswith(f"({file_id}){ext}")
        kept = shown[:-len(f" ({file_id}){ext}")] if len(shown) > len(f"({file_id}){ext}") \
            else ""
    else:
        stem = component
        kept = shown[:-len(f" ({file_id})")] if len(shown) > len(f"({file_id})") else ""
    # the stem is cut, never changed: what is kept is the start of it (a cut never splits a
    # character, and no character of the kept part is lost, leading spaces included)
    assert stem.startswith(kept), (stem, kept)


@pytest.mark.parametrize("char", ["é", "日", "𝄞"])
def test_with_id_never_splits_a_multibyte_character(char):
    for length in range(80, 130):
        shown = names.with_id(char * length + ".txt", "file-0123456789")
        raw = names.name_bytes(shown)
        assert len(raw) <= MAX_NAME_BYTES
        raw.decode("utf-8")         # strict: a split character would not decode
        assert shown.startswith(char) and shown.endswith(" (file-0123456789).txt")
        assert set(shown.split(" (")[0]) == {char}


def test_fits_counts_bytes_not_characters():
    assert names.fits("a" * 255) and not names.fits("a" * 256)
    assert names.fits("日" * 85) and not names.fits("日" * 86)     # 3 bytes each
    assert not names.fits("")
