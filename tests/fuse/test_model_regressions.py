"""Failures the model test (test_model.py) found, shrunk and kept as plain tests: real syscalls
on a real mount, no Hypothesis. Each says what the model expected and why."""

from __future__ import annotations

import os

from fusetools import delete_on_server, upload_on_server


def test_by_id_drops_a_file_deleted_elsewhere(mount, emulator):
    # Shrunk from: create assistants/a.jsonl, check, delete it on the server, check.
    # docs/SEMANTICS.md: "ls .by-id lists every file of the account by id", and with
    # --dir-ttl 0 every listing is fresh. The unfiltered listing behind .by-id adds the files
    # it finds but never drops the ones it no longer finds.
    mounted = mount("--dir-ttl", "0")
    made = upload_on_server(emulator, "a.jsonl", "assistants", b"")
    assert os.listdir(mounted / ".by-id") == [made["id"]]
    delete_on_server(emulator, made["id"])
    assert os.listdir(mounted / ".by-id") == []
