"""POSIX edges a pjdfstest-style run meets (docs/SEMANTICS.md): names too long to look up,
directory times, and two processes writing one new name at once."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import pytest

from checktools import live_files
from fusetools import upload_on_server, wait_for


@pytest.mark.parametrize("where", ["batch", ".by-id", "."])
def test_looking_up_a_name_over_255_bytes_is_enametoolong(mount, where):
    mounted = mount()
    for name in ("n" * 256, "é" * 200, "x" * 1024):
        with pytest.raises(OSError) as caught:
            os.stat(mounted / where / name)
        assert caught.value.errno == errno.ENAMETOOLONG, (where, len(name.encode()))
    with pytest.raises(FileNotFoundError):
        os.stat(mounted / where / ("n" * 255))


def test_a_directory_mtime_moves_when_a_name_comes_or_goes(mount, emulator, seed):
    seed("first.jsonl", "batch", b"{}\n")
    mounted = mount("--dir-ttl", "1")
    folder = mounted / "batch"

    def mtime() -> int:
        return os.stat(folder).st_mtime_ns

    def changed(action) -> None:
        before = mtime()
        time.sleep(0.01)
        action()
        wait_for(lambda: mtime() > before, timeout=5, message="the directory's mtime to move")

    assert os.listdir(folder) == ["first.jsonl"]
    changed(lambda: (folder / "made.jsonl").write_bytes(b"{}\n"))             # create
    changed(lambda: os.rename(folder / "made.jsonl", folder / "moved.jsonl"))  # rename
    changed(lambda: os.unlink(folder / "moved.jsonl"))                          # rm
    # another client adds a file: seen at the next listing, and so is the mtime
    changed(lambda: (upload_on_server(emulator, "other.jsonl", "batch", b"{}\n"),
                     wait_for(lambda: "other.jsonl" in os.listdir(folder), timeout=5)))
    # nothing changes: the mtime stays
    before = mtime()
    time.sleep(1.2)
    assert sorted(os.listdir(folder)) == ["first.jsonl", "other.jsonl"]
    assert mtime() == before
    assert os.stat(folder).st_ctime_ns == before


WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
print("open", flush=True)
for line in sys.stdin:
    command, _, rest = line.strip().partition(" ")
    if command == "write":
        offset, data = rest.split(" ", 1)
        os.pwrite(fd, data.encode(), int(offset))
        print("written", flush=True)
    elif command == "close":
        try:
            os.close(fd)
            print("closed", flush=True)
        except OSError as exc:
            print(f"error {exc.errno}", flush=True)
        break
"""


class Writer:
    """A process that opens a path for writing (O_CREAT, not O_EXCL) and does as told."""

    def __init__(self, path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        assert self.process.stdout.readline().strip() == "open"

    def tell(self, line: str) -> str:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def close(self) -> str:
        answer = self.tell("close")
        self.process.wait(timeout=30)
        return answer


def test_two_processes_writing_one_new_name_share_it_and_the_last_close_wins(
        mount, emulator):
    mounted = mount()
    path = mounted / "batch" / "shared.jsonl"
    first, second = Writer(path), Writer(path)
    # one file, as on any POSIX filesystem: their bytes interleave where they write
    assert first.tell("write 0 AAAA") == "written"
    assert second.tell("write 4 BBBB") == "written"
    assert os.listdir(mounted / "batch") == ["shared.jsonl"]
    assert path.read_bytes() == b"AAAABBBB"
    # the first close uploads what the file holds then
    assert first.close() == "closed"
    [uploaded] = live_files(emulator, "batch")
    assert emulator.control.stored_content(uploaded["id"]) == b"AAAABBBB"
    # the other writer goes on; its close uploads the file as it is at that close, which
    # replaces the first upload: one file on the server, holding the state at the last close
    assert second.tell("write 8 CCCC") == "written"
    assert second.close() == "closed"
    [final] = live_files(emulator, "batch")
    assert final["id"] != uploaded["id"] and final["filename"] == "shared.jsonl"
    assert emulator.control.stored_content(final["id"]) == b"AAAABBBBCCCC"
    assert path.read_bytes() == b"AAAABBBBCCCC"
    assert os.listdir(mounted / "batch") == ["shared.jsonl"]
