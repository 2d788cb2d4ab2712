"""Uploads that begin while the file is still being written (openai_fs/core/early_upload.py).

A file written past 8 MiB starts its POST /files before close(); whatever the writer does
afterwards (rewrites, renames, rm, failures), the server must end with exactly what the file
held at close(), as it would without the early start.
"""

from __future__ import annotations

import os
import sys
import time

from fusetools import run, wait_for
from test_write import MiB, only_file, payload, posts, server_content, server_files

START = 8 * MiB


def write_in_pieces(handle, data: bytes, piece: int = MiB) -> None:
    for at in range(0, len(data), piece):
        handle.write(data[at:at + piece])
        handle.flush()      # Python's buffer, not the file: every piece reaches the mount now


def post_in_flight(emulator) -> dict:
    """Wait for a POST /files the emulator has begun and not answered yet."""
    def found():
        return next((r for r in posts(emulator)
                     if r["path"] == "/v1/files" and r["status"] is None), None)
    return wait_for(found, timeout=20, message="no POST /files began before close()")


def test_a_large_file_is_uploading_before_it_is_closed(mount, emulator):
    data = payload(START + 3 * MiB + 5, seed=21)
    mounted = mount()
    emulator.control.clear_requests()
    with open(mounted / "user_data" / "big.bin", "wb") as handle:
        write_in_pieces(handle, data[:START + MiB])
        early = post_in_flight(emulator)
        assert server_files(emulator) == []         # no file until the body ends
        shown = run(sys.executable, "-m", "openai_fs", "status", str(mounted.path)).stdout
        assert "user_data/big.bin:" in shown and "sent while it is still being written" in shown
        write_in_pieces(handle, data[START + MiB:])
    made = only_file(emulator, "user_data", "big.bin")
    assert server_content(emulator, made["id"]) == data
    sent = [r for r in posts(emulator) if r["path"] == "/v1/files"]
    assert [r["seq"] for r in sent] == [early["seq"]] and sent[0]["status"] == 200
    assert sent[0]["request_bytes"] > len(data)


def test_a_rewrite_of_bytes_already_sent_uploads_what_the_file_holds_at_close(mount, emulator):
    data = bytearray(payload(START + 2 * MiB, seed=22))
    mounted = mount()
    emulator.control.clear_requests()
    with open(mounted / "user_data" / "edited.bin", "wb") as handle:
        write_in_pieces(handle, bytes(data))
        post_in_flight(emulator)
        handle.seek(10)
        handle.write(b"CHANGED")
        data[10:17] = b"CHANGED"
    made = only_file(emulator, "user_data", "edited.bin")
    assert server_content(emulator, made["id"]) == bytes(data)
    statuses = [r["status"] for r in posts(emulator) if r["path"] == "/v1/files"]
    assert statuses == [None, 200]      # the early request was given up midway: no file from it
    assert len(server_files(emulator)) == 1


def test_a_file_renamed_or_removed_while_uploading_leaves_only_what_it_should(mount, emulator):
    data = payload(START + MiB, seed=23)
    mounted = mount()
    folder = mounted / "user_data"
    with open(folder / "draft.bin", "wb") as renamed, open(folder / "gone.bin", "wb") as removed:
        write_in_pieces(renamed, data)
        write_in_pieces(removed, data)
        wait_for(lambda: len([r for r in posts(emulator) if r["status"] is None]) == 2,
                 timeout=20, message="both files should be uploading")
        os.rename(folder / "draft.bin", folder / "final.bin")
        os.unlink(folder / "gone.bin")
        renamed.write(b"tail")
        removed.write(b"tail")
    made = only_file(emulator, "user_data", "final.bin")
    assert server_content(emulator, made["id"]) == data + b"tail"
    assert [f["filename"] for f in server_files(emulator)] == ["final.bin"]


def test_a_file_outgrowing_one_post_goes_through_the_uploads_api(mount, emulator):
    data = payload(START + 3 * MiB, seed=24)
    mounted = mount("--multipart-threshold", "10M", "--part-size", "4M")
    emulator.control.clear_requests()
    with open(mounted / "assistants" / "grows.bin", "wb") as handle:
        write_in_pieces(handle, data[:START + MiB])
        post_in_flight(emulator)
        write_in_pieces(handle, data[START + MiB:])
    made = only_file(emulator, "assistants", "grows.bin")
    assert server_content(emulator, made["id"]) == data
    assert [r["status"] for r in posts(emulator) if r["path"] == "/v1/files"] == [None]
    assert len([r for r in posts(emulator) if r["path"].endswith("/parts")]) == 3
    assert len(server_files(emulator)) == 1


def test_a_streamed_upload_that_failed_is_sent_again_and_never_twice(mount, emulator):
    # the first POST /files creates the file but its answer is lost: the retry from the spool
    # must find that file instead of making a second one
    emulator.control.add_fault("drop_after_commit", method="POST", path="/v1/files$", count=1)
    data = payload(START + MiB, seed=25)
    mounted = mount()
    mounted.expect_log(r"the upload sent while it was written failed")
    with open(mounted / "user_data" / "once.bin", "wb") as handle:
        write_in_pieces(handle, data)
        post_in_flight(emulator)
    made = only_file(emulator, "user_data", "once.bin")
    assert server_content(emulator, made["id"]) == data
    assert len(server_files(emulator)) == 1
    assert mounted.log().count("did reach the server") == 1


def test_a_dropped_streamed_upload_is_sent_again_from_the_spool(mount, emulator):
    emulator.control.add_fault("drop", method="POST", path="/v1/files$", count=1)
    data = payload(START + MiB, seed=26)
    mounted = mount()
    mounted.expect_log(r"the upload sent while it was written failed")
    with open(mounted / "user_data" / "again.bin", "wb") as handle:
        write_in_pieces(handle, data)
    made = only_file(emulator, "user_data", "again.bin")
    assert server_content(emulator, made["id"]) == data
    assert len(server_files(emulator)) == 1


def test_a_server_that_wants_the_length_up_front_turns_early_uploads_off(mount, emulator):
    # a front end that refuses chunked bodies answers 411 Length Required
    emulator.control.add_fault("status", status=411, method="POST", path="/v1/files$",
                               count=1, message="Length Required")
    mounted = mount()
    mounted.expect_log(r"the upload sent while it was written failed")
    mounted.expect_log(r"does not take an upload whose length is not known in advance")
    first, second = payload(START + MiB, seed=30), payload(START + MiB, seed=31)
    with open(mounted / "user_data" / "first.bin", "wb") as handle:
        write_in_pieces(handle, first)
    assert server_content(emulator, only_file(emulator, "user_data", "first.bin")["id"]) == first
    emulator.control.clear_requests()
    with open(mounted / "user_data" / "second.bin", "wb") as handle:
        write_in_pieces(handle, second)
        time.sleep(0.5)
        assert posts(emulator) == []        # no early start any more
    assert server_content(emulator, only_file(emulator, "user_data", "second.bin")["id"]) == second
    statuses = [r["status"] for r in posts(emulator) if r["path"] == "/v1/files"]
    assert statuses == [200]


def test_upload_on_close_sends_nothing_before_close(mount, emulator):
    data = payload(START + 2 * MiB, seed=27)
    mounted = mount("--upload-on-close")
    emulator.control.clear_requests()
    with open(mounted / "user_data" / "late.bin", "wb") as handle:
        write_in_pieces(handle, data)
        time.sleep(0.5)
        assert posts(emulator) == []
    made = only_file(emulator, "user_data", "late.bin")
    assert server_content(emulator, made["id"]) == data


def test_the_spool_sent_early_leaves_the_page_cache_behind_the_request(mount, emulator,
                                                                      tmp_path):
    data = payload(64 * MiB, seed=29)
    cache = tmp_path / "let-go-cache"
    mounted = mount(cache_dir=cache)
    with open(mounted / "user_data" / "streamed.bin", "wb") as handle:
        write_in_pieces(handle, data)
    made = only_file(emulator, "user_data", "streamed.bin")
    assert server_content(emulator, made["id"]) == data
    (copy,) = (cache / "content").glob(f"*/{made['id']}")      # the spool, kept as the cache
    assert copy.stat().st_size == len(data)     # (reading it would bring it back to memory)
    resident = int(run("fincore", "--bytes", "--noheadings", "--output", "RES",
                       str(copy)).stdout.split()[0])
    # without letting go, every written byte would still be in the page cache
    assert resident < len(data) // 2, f"{resident} of {len(data)} bytes still cached"


def test_a_spool_sent_after_close_keeps_only_its_latest_pages_while_written(mount, emulator,
                                                                         tmp_path):
    data = payload(64 * MiB, seed=30)
    cache = tmp_path / "let-go-spool"
    mounted = mount("--upload-on-close", cache_dir=cache)
    with open(mounted / "user_data" / "later.bin", "wb") as handle:
        write_in_pieces(handle, data)
        (spool,) = [path for path in (cache / "spool").glob("mount-*/*")
                    if path.suffix != ".json"]
        assert spool.stat().st_size == len(data)

        def resident() -> int:
            return int(run("fincore", "--bytes", "--noheadings", "--output", "RES",
                           str(spool)).stdout.split()[0])
        # pages behind the writer are let go once written back (by a worker thread)
        wait_for(lambda: resident() < len(data) // 2, timeout=20,
                 message="the spool's pages stayed in the page cache while it was written")
        assert posts(emulator) == []
    made = only_file(emulator, "user_data", "later.bin")
    assert server_content(emulator, made["id"]) == data
