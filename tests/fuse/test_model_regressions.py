"""Failures the model test (test_model.py) found, shrunk and kept as plain tests: real syscalls
on a real mount, no Hypothesis. Each says what is expected and why, and what the mount did
when the model test found it (the fix named where there is one)."""

from __future__ import annotations

import os

from fusetools import delete_on_server, upload_on_server


def live_files(emulator) -> list[tuple[str, int]]:
    """(filename, bytes) of every file on the server, oldest first."""
    return [(f["filename"], f["bytes"]) for f in emulator.control.state()["files"]
            if not f["deleted"]]


def test_by_id_drops_a_file_deleted_elsewhere(mount, emulator):
    # Shrunk from: create assistants/a.jsonl, check, delete it on the server, check.
    # docs/SEMANTICS.md: "ls .by-id lists every file of the account by id", and with
    # --dir-ttl 0 every listing is fresh. The unfiltered listing behind .by-id used to add the
    # files it found but never drop the ones it no longer found (fixed in d432e5d).
    mounted = mount("--dir-ttl", "0")
    made = upload_on_server(emulator, "a.jsonl", "assistants", b"")
    assert os.listdir(mounted / ".by-id") == [made["id"]]
    delete_on_server(emulator, made["id"])
    assert os.listdir(mounted / ".by-id") == []


def test_a_file_replaced_by_a_rename_is_deleted_when_its_replacement_is_removed(mount, emulator):
    # Shrunk from: open a new file for writing, rename it over an uploaded file, rm it, close.
    # A rename over a file replaces it (the mount hides it at once and deletes it once the
    # moved file is uploaded, docs/SEMANTICS.md section 10). When the moved file is removed
    # before its upload, the replaced file must go too (as on any filesystem: mv new a; rm a
    # leaves no a). It used to stay on the server, hidden from the mount only (for the 5
    # minutes the mount trusts its own delete over listings); fixed in d432e5d.
    mounted = mount("--dir-ttl", "0")
    upload_on_server(emulator, "a.txt", "assistants", b"old")
    directory = mounted / "assistants"
    fd = os.open(directory / "new.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        os.write(fd, b"new")
        os.rename(directory / "new.txt", directory / "a.txt")
        os.unlink(directory / "a.txt")
    finally:
        os.close(fd)
    assert os.listdir(directory) == []
    assert live_files(emulator) == [], "the replaced file is still on the server, hidden"


def test_a_file_being_written_can_be_moved_after_its_original_was_deleted_elsewhere(
        mount, emulator):
    # open(O_TRUNC) keeps the file in the mount while it is written, even when another client
    # deletes the server file meanwhile: ls shows it and cat reads the new bytes. mv must work
    # too: the mount has every byte of it locally. It used to fail with ENOENT, because the
    # move re-uploaded the server copy of the file (gone) instead of the local bytes; since
    # 61bd07e a changed file moves like a new one.
    mounted = mount("--dir-ttl", "0")
    old = upload_on_server(emulator, "a.txt", "assistants", b"old")
    directory = mounted / "assistants"
    fd = os.open(directory / "a.txt", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"new bytes")
        delete_on_server(emulator, old["id"])
        assert os.listdir(directory) == ["a.txt"]
        assert (directory / "a.txt").read_bytes() == b"new bytes"
        os.rename(directory / "a.txt", directory / "b.txt")
    finally:
        os.close(fd)
    assert os.listdir(directory) == ["b.txt"]
    assert (directory / "b.txt").read_bytes() == b"new bytes"
    assert live_files(emulator) == [("b.txt", len(b"new bytes"))]


def test_close_uploads_while_the_writer_also_reads_it(mount, emulator):
    # Shrunk from: open a new file for writing, open it for reading too, close the writer.
    # docs/SEMANTICS.md section 6: close() returns 0 only once the file exists on the server,
    # and a close() uploads when it ends the writing of the process that opened the file; a
    # descriptor that only reads is not writing. The mount used to count any descriptor of the
    # file that the opener held, so it took this close for a copy's and did not upload: the
    # file stayed "not uploaded" until the reader closed too (and was then uploaded at
    # release, where no one hears of a failure). Fixed in 61bd07e.
    mounted = mount("--dir-ttl", "0")
    path = mounted / "assistants" / "a.txt"
    writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    reader = None
    try:
        os.write(writer, b"hello")
        reader = os.open(path, os.O_RDONLY)
        assert os.pread(reader, 100, 0) == b"hello"
        os.close(writer)
        writer = None
        assert live_files(emulator) == [("a.txt", 5)], "close() returned before the upload"
        assert os.getxattr(path, "user.openai.status") != b"not uploaded"
    finally:
        for fd in (writer, reader):
            if fd is not None:
                os.close(fd)


def test_mv_onto_a_name_whose_file_was_deleted_elsewhere(mount, emulator):
    # Found as: rename over a file being written whose server file another client deleted
    # (the mount keeps showing it for its local bytes). The plain form needs no writer: with
    # the default --dir-ttl, the mount still lists a.txt after another client deleted it, and
    # mv b.txt a.txt uploads b's bytes as a.txt, then fails with ENOENT because deleting the
    # replaced a.txt answers 404. The copy stayed on the server next to b.txt. The replaced
    # file being gone already is what the move wanted: it must succeed (fixed in 61bd07e).
    upload_on_server(emulator, "b.txt", "vision", b"bbbb")
    a = upload_on_server(emulator, "a.txt", "vision", b"aaa")
    mounted = mount()
    directory = mounted / "vision"
    assert sorted(os.listdir(directory)) == ["a.txt", "b.txt"]
    delete_on_server(emulator, a["id"])
    os.rename(directory / "b.txt", directory / "a.txt")
    assert os.listdir(directory) == ["a.txt"]
    assert (directory / "a.txt").read_bytes() == b"bbbb"
    assert live_files(emulator) == [("a.txt", 4)]


def test_a_file_replaced_twice_by_renames_is_deleted(mount, emulator):
    # Found as: rename an uploaded file over a file being written that had itself been renamed
    # over an uploaded one. mv new a.txt (new not uploaded yet) replaces a.txt: the mount hides
    # it and deletes it once new is uploaded. mv b.txt a.txt then replaces new, and with it
    # the promise: the old a.txt is never deleted. It stays on the server next to b's copy,
    # hidden from the mount (for the 5 minutes it trusts its own delete), then both show as
    # "a (id).txt". Any filesystem leaves one a.txt here, with b's bytes. Fixed by handing
    # the replaced file's pending deletes on to the file that replaces it (uploads.py, move).
    upload_on_server(emulator, "a.txt", "vision", b"old a")
    upload_on_server(emulator, "b.txt", "vision", b"bbbb")
    mounted = mount("--dir-ttl", "0")
    directory = mounted / "vision"
    fd = os.open(directory / "new.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        os.write(fd, b"new")
        os.rename(directory / "new.txt", directory / "a.txt")
        os.rename(directory / "b.txt", directory / "a.txt")
    finally:
        os.close(fd)
    assert os.listdir(directory) == ["a.txt"]
    assert (directory / "a.txt").read_bytes() == b"bbbb"
    assert live_files(emulator) == [("a.txt", 4)]


def test_a_file_replaced_by_two_new_files_in_turn_is_deleted(mount, emulator):
    # The same with two files being written: n1 replaces a.txt, n2 replaces n1. Once both
    # are closed, a.txt must hold n2's bytes and nothing else be left; the old a.txt stays
    # (hidden). Fixed with the previous one.
    upload_on_server(emulator, "a.txt", "assistants", b"old a")
    mounted = mount("--dir-ttl", "0")
    directory = mounted / "assistants"
    first = os.open(directory / "n1.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    second = os.open(directory / "n2.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        os.write(first, b"one")
        os.write(second, b"two!")
        os.rename(directory / "n1.txt", directory / "a.txt")
        os.rename(directory / "n2.txt", directory / "a.txt")
    finally:
        os.close(first)
        os.close(second)
    assert os.listdir(directory) == ["a.txt"]
    assert (directory / "a.txt").read_bytes() == b"two!"
    assert live_files(emulator) == [("a.txt", 4)]


def test_an_empty_file_deleted_elsewhere_while_open_for_writing_can_be_moved(mount, emulator):
    # Shrunk from: upload an empty fine-tune/b.jsonl elsewhere, open it with O_APPEND, delete
    # it on the server, mv it to assistants/a.jsonl. The mount keeps showing a file a writer
    # holds (docs/SEMANTICS.md section 9), so the move must work: an empty file's bytes are
    # known without asking the server. It used to download them first, got 404 and answered
    # ENOENT; fixed by never fetching a zero-byte file (uploads.py).
    made = upload_on_server(emulator, "b.jsonl", "fine-tune", b"")
    mounted = mount("--dir-ttl", "0")
    fd = os.open(mounted / "fine-tune" / "b.jsonl", os.O_WRONLY | os.O_APPEND)
    try:
        delete_on_server(emulator, made["id"])
        assert os.listdir(mounted / "fine-tune") == ["b.jsonl"]
        os.rename(mounted / "fine-tune" / "b.jsonl", mounted / "assistants" / "a.jsonl")
        assert os.listdir(mounted / "assistants") == ["a.jsonl"]
        assert os.listdir(mounted / "fine-tune") == []
    finally:
        os.close(fd)
    assert live_files(emulator) == [("a.jsonl", 0)]
