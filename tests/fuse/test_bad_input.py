"""Bad input through a real mount: names the API allows and a path cannot hold (or the other
way round), empty, huge and too large files, a full spool disk, a wrong, revoked or missing
key, and server answers that are broken."""

from __future__ import annotations

import errno
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from checktools import (MiB, live_files, need, openai_fs, server_range, server_sha256,
                        small_tmpfs)
from fusetools import run, wait_for
from openai_fs.emulator.control import EmulatorProcess

GiB = 1024 * MiB


def xattr(path, name: str) -> bytes:
    return os.getxattr(path, f"user.openai.{name}")


def spool_is_empty(mounted) -> bool:
    return not any(Path(mounted.status()["uploads"]["spool_dir"]).iterdir())


def posts(emulator) -> list[str]:
    return [r["path"] for r in emulator.control.requests() if r["method"] == "POST"]


# ------------------------------------------------------------------------------ names

def test_a_name_of_256_bytes_is_enametoolong_and_255_bytes_is_fine(mount, emulator):
    mounted = mount()
    mounted.expect_log(r"name too long")
    folder = mounted / "user_data"
    longest = "n" * 251 + ".txt"                          # 255 bytes
    (folder / longest).write_bytes(b"fits")
    for too_long in ("n" * 252 + ".txt", "é" * 126 + ".txt"):   # 256 and 256 bytes
        assert len(too_long.encode()) == 256
        with pytest.raises(OSError) as caught:
            (folder / too_long).write_bytes(b"does not fit")
        assert caught.value.errno == errno.ENAMETOOLONG
        with pytest.raises(OSError) as caught:
            os.rename(folder / longest, folder / too_long)
        assert caught.value.errno == errno.ENAMETOOLONG
    assert [(f["filename"], f["bytes"]) for f in live_files(emulator)] == [(longest, 4)]
    assert os.listdir(folder) == [longest]


def test_a_server_name_of_300_bytes_is_shown_cut_with_its_id_and_works_as_a_file(
        mount, seed, emulator, tmp_path):
    long_name = "report-" + "x" * 289 + ".csv"            # 300 bytes
    made = seed(long_name, "vision", b"a,b\n1,2\n")
    mounted = mount()
    [shown] = os.listdir(mounted / "vision")
    assert len(shown.encode()) <= 255
    assert shown.startswith("report-xxx") and shown.endswith(f" ({made['id']}).csv")
    path = mounted / "vision" / shown
    assert path.read_bytes() == b"a,b\n1,2\n"
    assert xattr(path, "filename") == long_name.encode()
    # replacing it keeps the full server name, and rm removes it
    (tmp_path / "new.csv").write_bytes(b"a,b\n3,4\n")
    run("cp", str(tmp_path / "new.csv"), str(path))
    [replaced] = live_files(emulator)
    assert replaced["filename"] == long_name and replaced["id"] != made["id"]
    assert server_sha256(emulator, replaced["id"]) == hashlib.sha256(b"a,b\n3,4\n").hexdigest()
    [shown] = os.listdir(mounted / "vision")
    assert replaced["id"] in shown
    os.unlink(mounted / "vision" / shown)
    assert live_files(emulator) == []


#: server name -> the name shown (SEMANTICS section 2: only / and NUL are mapped)
ODD_NAMES = {
    "line\nbreak.txt": "line\nbreak.txt",
    "carriage\rreturn.txt": "carriage\rreturn.txt",
    "tab\tand\x01control.txt": "tab\tand\x01control.txt",
    'say "hi".txt': 'say "hi".txt',
    "it's.txt": "it's.txt",
    "C:\\Users\\me\\notes.txt": "C:\\Users\\me\\notes.txt",
    "smile \U0001F600 \u2603.txt": "smile \U0001F600 \u2603.txt",
    "-rf $(reboot) *?[].txt": "-rf $(reboot) *?[].txt",
    " leading and trailing ": " leading and trailing ",
    "caf\u00e9.txt": "caf\u00e9.txt",                      # NFC ...
    "cafe\u0301.txt": "cafe\u0301.txt",                     # ... and NFD: two files
    "a/b\0c.txt": "a\uff0fb\u2400c.txt",
    "a\uff0fb\u2400c.txt": "a\u201b\uff0fb\u201b\u2400c.txt",
    "..": "\uff0e\uff0e",
}


def test_server_names_with_odd_characters_are_listed_read_and_kept_exactly(mount, seed):
    ids = {name: seed(name, "vision", name.encode())["id"] for name in ODD_NAMES}
    mounted = mount()
    folder = mounted / "vision"
    assert sorted(os.listdir(folder)) == sorted(ODD_NAMES.values())
    for server_name, shown in ODD_NAMES.items():
        path = folder / shown
        assert path.read_bytes() == server_name.encode(), repr(shown)
        assert xattr(path, "filename") == server_name.encode(), repr(shown)
        assert xattr(path, "id") == ids[server_name].encode()
    # ls and a shell glob see the same names
    listed = run("ls", "-1b", str(folder)).stdout.splitlines()
    assert len(listed) == len(ODD_NAMES) and "line\\nbreak.txt" in listed
    found = run("sh", "-c", 'for f in "$1"/*; do cat "$f"; echo; done', "sh", str(folder))
    assert 'say "hi".txt' in found.stdout and "C:\\Users\\me\\notes.txt" in found.stdout


#: a log line as the mount writes it
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} "
                      r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def test_a_name_with_a_newline_cannot_forge_a_line_of_the_log(mount, seed):
    """Names come from the server (anyone with the key can upload any name) and go into the
    log; a newline in one must not start a new, made-up log line."""
    forged = "notes\n2030-01-01 00:00:00.000 ERROR openai_fs.fuse.operations: forged line.txt"
    seed(forged, "assistants", b"x")
    mounted = mount()
    mounted.expect_log(r"forged line")      # asserted below
    [shown] = os.listdir(mounted / "assistants")
    os.unlink(mounted / "assistants" / shown)
    assert mounted.unmount() == 0
    lines = mounted.log().splitlines()
    assert all(LOG_LINE.match(line) for line in lines)
    [line] = [line for line in lines if "forged line" in line]
    assert " INFO openai_fs.core.changes: deleted assistants/notes" in line, \
        f"the name made a log line of its own: {line!r}"


class FakeFilesAPI(http.server.ThreadingHTTPServer):
    """Just enough of ``GET /files``, ``/files/{id}`` and ``/files/{id}/content`` to serve
    names the emulator cannot store: JSON allows lone surrogates (``"\\ud800"``), SQLite's
    UTF-8 does not."""

    def __init__(self, files: dict[str, tuple[str, bytes]]) -> None:
        super().__init__(("127.0.0.1", 0), _FakeHandler)
        self.objects = {file_id: {"id": file_id, "object": "file", "bytes": len(data),
                                  "created_at": 1_700_000_000, "filename": name,
                                  "purpose": "assistants", "status": "processed"}
                        for file_id, (name, data) in files.items()}
        self.contents = {file_id: data for file_id, (_, data) in files.items()}
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _FakeHandler(http.server.BaseHTTPRequestHandler):
    server: FakeFilesAPI

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        parts = url.path.split("/")
        if url.path == "/v1/files":
            data = [f for f in self.server.objects.values()
                    if f["purpose"] == query.get("purpose", [f["purpose"]])[0]]
            self._send({"object": "list", "data": data, "has_more": False})
        elif len(parts) == 4 and parts[3] in self.server.objects:
            self._send(self.server.objects[parts[3]])
        elif len(parts) == 5 and parts[3] in self.server.contents and parts[4] == "content":
            self._send_bytes(self.server.contents[parts[3]], "application/octet-stream")
        else:
            self._send({"error": {"message": "no such file", "type": "invalid_request_error"}},
                       status=404)

    def _send(self, body: dict, status: int = 200) -> None:
        self._send_bytes(json.dumps(body).encode("ascii"), "application/json", status)

    def _send_bytes(self, data: bytes, kind: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_server_names_with_lone_surrogates_are_listed_and_read(mount):
    names = {"file-high": "high\ud800.txt", "file-low": "low\udcff.txt",
             "file-pair": "reversed\udc00\ud800.txt"}
    server = FakeFilesAPI({file_id: (name, name.encode("utf-8", "surrogatepass"))
                           for file_id, name in names.items()})
    server.thread.start()
    try:
        mounted = mount(env={"OPENAI_BASE_URL": server.base_url})
        folder = bytes(mounted / "assistants")
        shown = sorted(os.listdir(folder))
        # a path component is bytes: a lone surrogate shows as its 3-byte (WTF-8) form
        expected = sorted(name.encode("utf-8", "surrogatepass") for name in names.values())
        assert shown == expected
        for file_id, name in names.items():
            path = os.path.join(folder, name.encode("utf-8", "surrogatepass"))
            with open(path, "rb") as handle:
                assert handle.read() == name.encode("utf-8", "surrogatepass")
            assert os.getxattr(path, "user.openai.id") == file_id.encode()
            assert os.getxattr(path, "user.openai.filename").decode(
                "utf-8", "surrogatepass") == name
        assert mounted.unmount() == 0
    finally:
        server.shutdown()
        server.server_close()


def test_names_with_quotes_backslashes_and_newlines_created_through_the_mount(mount,
                                                                              emulator):
    mounted = mount()
    mounted.expect_log(r"refused, a name with quotes, backslashes or control characters")
    mounted.expect_log(r"refused, the name uses the escape mark")
    odd = ['say "hi".txt', "C:\\temp\\x.txt", "tab\there.txt", "line\nbreak.txt",
           "smile \U0001F600.txt"]
    for name in odd:                     # assistants: the Uploads API carries any name
        (mounted / "assistants" / name).write_bytes(name.encode())
    for purpose in ("user_data", "evals"):
        (mounted / purpose / "smile \U0001F600.txt").write_bytes(b"fine")
        for name in odd[:3]:             # POST /files only: such names are refused
            with pytest.raises(OSError) as caught:
                (mounted / purpose / name).write_bytes(b"refused")
            assert caught.value.errno == errno.EINVAL, (purpose, name)
    # a mapped name is uploaded unmapped; a name the rule cannot produce is refused
    (mounted / "vision" / "dir\uff0ffile.txt").write_bytes(b"slash")
    with pytest.raises(OSError) as caught:
        (mounted / "vision" / "x\u201b\u201by.txt").write_bytes(b"refused")
    assert caught.value.errno == errno.EINVAL
    made = {(f["purpose"], f["filename"]): f for f in live_files(emulator)}
    assert set(made) == {("assistants", name) for name in odd} | {
        ("user_data", "smile \U0001F600.txt"), ("evals", "smile \U0001F600.txt"),
        ("vision", "dir/file.txt")}
    for name in odd:
        assert server_sha256(emulator, made[("assistants", name)]["id"]) == \
            hashlib.sha256(name.encode()).hexdigest()
        assert (mounted / "assistants" / name).read_bytes() == name.encode()


@pytest.mark.parametrize("name", [b"latin1-caf\xe9.txt", b"surrogate-\xed\xa0\x80.txt"],
                         ids=["latin1", "encoded-surrogate"])
def test_a_name_that_is_not_utf8_is_refused_at_create(mount, emulator, name):
    """The API's filenames are Unicode text; a path component that is not UTF-8 cannot become
    one unchanged, so it is refused like any other name that cannot be uploaded: EINVAL at
    create, one log line, and no bytes accepted that can then never be sent."""
    mounted = mount()
    mounted.expect_log(r"refused")
    folder = bytes(mounted / "assistants")
    try:
        fd = os.open(os.path.join(folder, name), os.O_CREAT | os.O_WRONLY, 0o644)
    except OSError as exc:
        assert exc.errno == errno.EINVAL
    else:
        try:
            os.write(fd, b"precious bytes")
        finally:
            try:
                os.close(fd)
                closed = "0"
            except OSError as exc:
                closed = exc.strerror
        pytest.fail(f"{name!r} was created; its close returned {closed}, the server has "
                    f"{[f['filename'] for f in live_files(emulator)]}, the folder lists "
                    f"{os.listdir(folder)}, the spool holds "
                    f"{os.listdir(mounted.status()['uploads']['spool_dir'])}")
    assert live_files(emulator) == [] and os.listdir(folder) == []
    assert "Traceback" not in mounted.log()


def test_names_that_collide_each_keep_a_name_of_their_own(mount, seed, emulator, tmp_path):
    first = seed("a.txt", "vision", b"first a")
    second = seed("a.txt", "vision", b"second a")
    # a real filename that equals the id-bearing name the first file is shown under
    impostor = seed(f"a ({first['id']}).txt", "vision", b"impostor")
    mounted = mount("--dir-ttl", "0")
    folder = mounted / "vision"
    shown = os.listdir(folder)
    assert len(shown) == len(set(shown)) == 3 and "a.txt" not in shown
    by_id = {xattr(folder / name, "id").decode(): (folder / name).read_bytes()
             for name in shown}
    assert by_id == {first["id"]: b"first a", second["id"]: b"second a",
                     impostor["id"]: b"impostor"}
    # a new file under the ambiguous name is written under that name, then joins the others
    (tmp_path / "a.txt").write_bytes(b"third a")
    run("cp", str(tmp_path / "a.txt"), str(folder / "a.txt"))
    named_a = [f for f in live_files(emulator) if f["filename"] == "a.txt"]
    assert len(named_a) == 3
    [third] = [f for f in named_a if f["id"] not in (first["id"], second["id"])]
    assert server_sha256(emulator, third["id"]) == hashlib.sha256(b"third a").hexdigest()
    shown = os.listdir(folder)
    assert len(shown) == len(set(shown)) == 4 and "a.txt" not in shown
    assert {xattr(folder / name, "id").decode() for name in shown} == \
        {first["id"], second["id"], impostor["id"], third["id"]}


# ------------------------------------------------------------------------------ sizes

def test_zero_byte_files_are_created_read_and_replace_others(mount, seed, emulator):
    full = seed("full.txt", "user_data", b"not empty")
    other = seed("other.txt", "user_data", b"not empty either")
    empty_on_server = seed("empty.bin", "vision", b"")
    mounted = mount()
    run("touch", str(mounted / "user_data" / "touched.txt"))
    (mounted / "assistants" / 'quoted "empty".txt').write_bytes(b"")   # via the Uploads API
    run("sh", "-c", f": > '{mounted / 'user_data' / 'full.txt'}'")      # O_TRUNC, no write
    run("truncate", "-s", "0", str(mounted / "user_data" / "other.txt"))
    files = {(f["purpose"], f["filename"]): f for f in live_files(emulator)}
    assert {key: f["bytes"] for key, f in files.items()} == {
        ("user_data", "touched.txt"): 0, ("assistants", 'quoted "empty".txt'): 0,
        ("user_data", "full.txt"): 0, ("user_data", "other.txt"): 0,
        ("vision", "empty.bin"): 0}
    assert full["id"] not in {f["id"] for f in files.values()}
    assert other["id"] not in {f["id"] for f in files.values()}
    for purpose, name in files:
        assert (mounted / purpose / name).read_bytes() == b""
        assert os.stat(mounted / purpose / name).st_size == 0
    assert (mounted / ".by-id" / empty_on_server["id"]).read_bytes() == b""


def test_a_sparse_1_gib_file_is_uploaded_with_exactly_its_bytes(mount, emulator):
    """``ftruncate`` to 1 GiB (what ``truncate -s 1G`` does, but on the descriptor that then
    writes, so the file is uploaded once), then a few bytes at the very end."""
    mounted = mount()
    tail = b"the end of a sparse file"
    path = mounted / "assistants" / "sparse.bin"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.ftruncate(fd, GiB)
        os.pwrite(fd, tail, GiB - len(tail))
        assert os.fstat(fd).st_size == GiB
    finally:
        os.close(fd)
    [made] = live_files(emulator)
    assert (made["purpose"], made["filename"], made["bytes"]) == ("assistants", "sparse.bin",
                                                                  GiB)
    assert server_range(emulator, made["id"], GiB - 4096, 4096) == \
        b"\0" * (4096 - len(tail)) + tail
    for start in (0, GiB // 2 - 3, GiB - 4096 - 65536):
        assert server_range(emulator, made["id"], start, 65536) == b"\0" * 65536
    expected = hashlib.sha256()
    zeros = b"\0" * (8 * MiB)
    for _ in range(GiB // len(zeros) - 1):
        expected.update(zeros)
    expected.update(zeros[:len(zeros) - len(tail)] + tail)
    assert server_sha256(emulator, made["id"]) == expected.hexdigest()
    # it went through the Uploads API (over 64M), completed, nothing left pending
    assert [u["status"] for u in emulator.control.state()["uploads"]] == ["completed"]
    with open(path, "rb") as handle:
        handle.seek(GiB - len(tail))
        assert handle.read() == tail


@pytest.mark.parametrize("purpose, suffix, limit, rule", [
    ("assistants", ".bin", 8 * GiB, r"a file may be at most 8 GB"),
    ("user_data", ".bin", 512 * MiB, r"user_data files can only be sent with POST /files"),
    ("batch", ".jsonl", 200 * MiB, r"batch files may be at most 200 MB"),
], ids=["8G", "user_data-512M", "batch-200M"])
def test_a_write_past_the_size_limit_is_efbig_and_nothing_is_uploaded(
        mount, emulator, purpose, suffix, limit, rule):
    mounted = mount()
    mounted.expect_log(rule)

    def straddle(fd: int) -> None:
        # the kernel may first write the part below the limit (a short write, as with
        # RLIMIT_FSIZE); writing the rest must then fail
        written = os.pwrite(fd, b"straddles", limit - 4)
        os.pwrite(fd, b"straddles"[written:], limit - 4 + written)

    refusals = {"write": lambda fd: os.pwrite(fd, b"y", limit), "straddle": straddle,
                "ftruncate": lambda fd: os.ftruncate(fd, limit + 1)}
    for what, refused in refusals.items():
        fd = os.open(mounted / purpose / f"{what}{suffix}", os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.pwrite(fd, b"x", limit - 1)          # exactly the limit: fine while open
            with pytest.raises(OSError) as caught:
                refused(fd)
            assert caught.value.errno == errno.EFBIG, what
        finally:
            with pytest.raises(OSError) as closing:
                os.close(fd)
        assert closing.value.errno == errno.EFBIG, what
    result = run("truncate", "-s", str(limit + 1), str(mounted / purpose / f"cmd{suffix}"),
                 check=False)
    assert result.returncode != 0 and "File too large" in result.stderr
    assert posts(emulator) == [] and live_files(emulator) == []
    wait_for(lambda: mounted.status()["open_files"] == 0, timeout=10)
    assert spool_is_empty(mounted)
    assert re.search(rule, mounted.log())
    assert_gone(mounted / purpose, [f"{what}{suffix}" for what in refusals] + [f"cmd{suffix}"])


def assert_gone(folder: Path, names: list[str]) -> None:
    """Files refused while being written are not on the server, so they are not shown either
    (SEMANTICS sections 7 and 12) and opening one is ENOENT."""
    shown = os.listdir(folder)
    assert shown == [], f"refused files are still listed: {shown}"
    for name in names:
        with pytest.raises(FileNotFoundError):
            (folder / name).read_bytes()


def test_a_full_spool_disk_is_enospc_uploads_nothing_and_the_mount_goes_on(
        mount, seed, emulator, tmp_path):
    seed("before.txt", "vision", b"readable before and after")
    need("mount", "mount")
    with small_tmpfs(tmp_path / "tiny", "2m") as tiny:
        mounted = mount(cache_dir=tiny / "cache")
        mounted.expect_log(r"the spool disk is full")
        emulator.control.clear_requests()
        fd = os.open(mounted / "user_data" / "big.bin", os.O_CREAT | os.O_WRONLY, 0o644)
        chunk, written = b"z" * 65536, 0
        try:
            with pytest.raises(OSError) as writing:
                while written < 4 * MiB:
                    written += os.write(fd, chunk)
        finally:
            with pytest.raises(OSError) as closing:
                os.close(fd)
        assert writing.value.errno == errno.ENOSPC and 0 < written < 2 * MiB
        assert closing.value.errno == errno.ENOSPC
        # nothing, not even the part that fitted, reached the server
        assert posts(emulator) == [] and live_files(emulator, "user_data") == []
        said = [line for line in mounted.log().splitlines() if " WARNING " in line
                or " ERROR " in line]
        assert len(said) == 1 and "the spool disk is full" in said[0] and \
            "will not be uploaded" in said[0], said
        wait_for(lambda: spool_is_empty(mounted), timeout=10, message="the spool to be freed")
        # the space is back: the mount reads and writes as before
        assert (mounted / "vision" / "before.txt").read_bytes() == \
            b"readable before and after"
        (mounted / "user_data" / "after.txt").write_bytes(b"written after")
        [after] = live_files(emulator, "user_data")
        assert after["filename"] == "after.txt" and after["bytes"] == 13
        (mounted / "user_data" / "after.txt").unlink()
        assert_gone(mounted / "user_data", ["big.bin"])
        assert mounted.unmount() == 0


# ------------------------------------------------------------------------------- keys

RIGHT_KEY = "sk-the-right-key-0123456789"
ROTATED_KEY = "sk-rotated-key-9876543210"
WRONG_KEY = "sk-wrong-key-SECRET-55555"


@pytest.fixture
def locked(tmp_path):
    """An emulator of our own that accepts only RIGHT_KEY."""
    with EmulatorProcess(tmp_path / "locked", api_key=RIGHT_KEY) as server:
        yield server


def test_a_wrong_key_at_mount_time_is_one_clear_line_and_a_failed_exit(mount, locked):
    mounted = mount(env={"OPENAI_API_KEY": WRONG_KEY, "OPENAI_BASE_URL": locked.base_url},
                    wait=False)
    mounted.expect_log(r"the server refused the API key")
    code = mounted.process.wait(timeout=60)
    output = mounted.output()
    mounted.stopped = True
    assert code != 0
    assert output.strip().splitlines() == [
        "openai-fs mount: the server refused the API key (401: Incorrect API key provided.)"]
    log = mounted.log()
    assert "refused the API key" in log and "Traceback" not in log
    assert WRONG_KEY not in output + log and "SECRET" not in output + log
    assert not os.path.ismount(mounted.path)


#: writes a file and closes it when told to: a process of its own, because any fork and exec
#: in the test process (restarting the emulator) would close a copy of the descriptor, and
#: every close of a changed file uploads it (SEMANTICS section 6)
WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
os.write(fd, b"written before, closed after")
print("written", flush=True)
sys.stdin.readline()
try:
    os.close(fd)
    print(0, flush=True)
except OSError as exc:
    print(exc.errno, flush=True)
"""


def test_a_key_revoked_while_mounted_is_eacces_with_one_log_line_and_the_mount_goes_on(
        mount, locked):
    seen = locked.control.seed_file("seen.txt", "vision", b"read before")
    later = locked.control.seed_file("later.txt", "vision", b"read after")
    mounted = mount("--dir-ttl", "0", env={"OPENAI_API_KEY": RIGHT_KEY,
                                           "OPENAI_BASE_URL": locked.base_url})
    mounted.expect_log(r"401 from ")
    folder = mounted / "vision"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder / "pending.txt")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    reader = os.open(folder / "seen.txt", os.O_RDONLY)
    try:
        assert writer.stdout.readline() == "written\n"
        assert os.read(reader, 100) == b"read before"
        locked.api_key = ROTATED_KEY            # the key is revoked: the server takes another
        locked.restart()
        before = len(mounted.log().splitlines())
        failing = {
            "ls": lambda: os.listdir(folder),
            "stat": lambda: os.stat(folder / "later.txt"),
            "by-id": lambda: (mounted / ".by-id" / later["id"]).read_bytes(),
            "create": lambda: (folder / "new.txt").write_bytes(b"x"),
        }
        for what, action in failing.items():
            with pytest.raises(OSError) as caught:
                action()
            assert caught.value.errno == errno.EACCES, (what, caught.value)
        writer.stdin.write("close\n")
        writer.stdin.flush()
        assert int(writer.stdout.readline()) == errno.EACCES
        # the mount goes on: what it holds is still served, and it answers status
        assert os.pread(reader, 100, 0) == b"read before"
        assert mounted.process.poll() is None and mounted.status()["pid"] > 0
    finally:
        os.close(reader)
        writer.kill()
        writer.wait(timeout=30)
    # one log line for each refused request, with the status and the request id
    lines = mounted.log().splitlines()[before:]
    problems = [line for line in lines if " WARNING " in line or " ERROR " in line]
    denied = [r for r in locked.control.requests() if r["status"] == 401]
    assert len(problems) == len(denied) > len(failing)
    assert all("401" in line and re.search(r"request_id=req_\w+", line) for line in problems)
    assert not any(line.startswith(("Traceback", " ")) for line in lines)
    assert RIGHT_KEY not in mounted.log() and ROTATED_KEY not in mounted.log()
    # with the key accepted again, everything works
    locked.api_key = RIGHT_KEY
    locked.restart()
    assert (folder / "later.txt").read_bytes() == b"read after"
    (folder / "new.txt").write_bytes(b"after the key came back")
    assert {f["filename"] for f in live_files(locked)} == {"seen.txt", "later.txt", "new.txt"}
    assert seen["id"] in {f["id"] for f in live_files(locked)}
    assert mounted.unmount() == 0


@pytest.mark.parametrize("how", ["unset", "blank", "missing-file", "empty-file"])
def test_a_missing_key_is_refused_with_a_clear_message(tmp_path, emulator, how):
    (tmp_path / "mnt").mkdir()
    env: dict[str, str | None] = {"OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": None}
    args = []
    if how == "blank":
        env["OPENAI_API_KEY"] = "   "
    if how.endswith("file"):
        key_file = tmp_path / "key"
        if how == "empty-file":
            key_file.write_text("\n")
            key_file.chmod(0o600)
        args = ["--api-key-file", str(key_file)]
    result = openai_fs("mount", "-f", str(tmp_path / "mnt"), "--cache-dir",
                       str(tmp_path / "c"), *args, env=env)
    assert result.returncode != 0
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    expected = {"unset": "no API key: set OPENAI_API_KEY", "blank": "no API key",
                "missing-file": f"cannot read the API key file {tmp_path / 'key'}",
                "empty-file": "is empty"}[how]
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not os.path.ismount(tmp_path / "mnt")


# ----------------------------------------------------------------- broken server answers

def test_a_malformed_listing_is_eio_and_the_mount_goes_on(mount, seed, emulator):
    made = seed("listed.txt", "batch_output", b"still reachable by id")
    mounted = mount("--dir-ttl", "0")
    mounted.expect_log(r"GET /files: the answer is not valid JSON \(request_id=req_\w+\)")
    emulator.control.add_fault("malformed", method="GET", path=r"^/v1/files$")
    for _ in range(3):
        with pytest.raises(OSError) as caught:
            os.listdir(mounted / "batch_output")
        assert caught.value.errno == errno.EIO
    result = run("ls", "-l", str(mounted / "batch_output"), check=False)
    assert result.returncode != 0 and "Input/output error" in result.stderr
    # the loop lives: status, and a file by id (no listing needed)
    assert mounted.status()["pid"] == mounted.process.pid
    assert (mounted / ".by-id" / made["id"]).read_bytes() == b"still reachable by id"
    emulator.control.clear_faults()
    assert os.listdir(mounted / "batch_output") == ["listed.txt"]
    errors = [line for line in mounted.log().splitlines() if " ERROR " in line]
    assert errors and all("not valid JSON" in line for line in errors)
    assert "Traceback" not in mounted.log()


def test_a_truncated_download_is_eio_and_the_mount_goes_on(mount, seed, emulator):
    data = os.urandom(2 * MiB)
    broken = seed("broken.bin", "vision", data)
    seed("fine.txt", "vision", b"fine")
    emulator.control.add_fault("truncate", path=f"/files/{broken['id']}/content",
                               after_bytes=100_000)
    mounted = mount("--retries", "1")
    mounted.expect_log(rf"read: GET /files/{broken['id']}/content: ")
    with pytest.raises(OSError) as caught:
        (mounted / "vision" / "broken.bin").read_bytes()
    assert caught.value.errno == errno.EIO
    result = run("cat", str(mounted / "vision" / "broken.bin"), check=False)
    assert result.returncode != 0 and "Input/output error" in result.stderr
    assert (mounted / "vision" / "fine.txt").read_bytes() == b"fine"
    assert mounted.process.poll() is None and mounted.status()["open_files"] == 0
    errors = [line for line in mounted.log().splitlines() if " ERROR " in line]
    assert errors and all(f"/files/{broken['id']}/content" in line for line in errors)
    assert "Traceback" not in mounted.log()
    emulator.control.clear_faults()
    assert (mounted / "vision" / "broken.bin").read_bytes() == data
