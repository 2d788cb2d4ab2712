"""Changing the server through a real mount: every step checked against the emulator's state."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import subprocess
import sys
import threading
import time

import pytest

from fusetools import KEY, delete_on_server, run, wait_for

MiB = 1024 * 1024


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def server_files(emulator, purpose: str | None = None) -> list[dict]:
    """Files on the server (not deleted), newest last."""
    files = [f for f in emulator.control.state()["files"] if not f.get("deleted")]
    return [f for f in files if purpose is None or f["purpose"] == purpose]


def server_content(emulator, file_id: str) -> bytes:
    """What the server holds for a file, whatever its purpose."""
    return emulator.control.stored_content(file_id)


def only_file(emulator, purpose: str, filename: str) -> dict:
    matches = [f for f in server_files(emulator, purpose) if f["filename"] == filename]
    assert len(matches) == 1, f"{purpose}/{filename}: {matches}"
    return matches[0]


def posts(emulator) -> list[dict]:
    return [r for r in emulator.control.requests() if r["method"] == "POST"]


def open_uploads(emulator) -> list[dict]:
    return [u for u in emulator.control.state()["uploads"] if u["status"] == "pending"]


def test_cp_of_a_small_file_is_one_post_and_exists_when_cp_returns(mount, emulator, tmp_path):
    source = tmp_path / "notes.txt"
    source.write_bytes(b"small file\n")
    mounted = mount()
    emulator.control.clear_requests()
    run("cp", str(source), str(mounted / "assistants"))
    made = only_file(emulator, "assistants", "notes.txt")
    assert server_content(emulator, made["id"]) == b"small file\n"
    posts = [r for r in emulator.control.requests() if r["method"] == "POST"]
    assert [r["path"] for r in posts] == ["/v1/files"]
    assert (mounted / "assistants" / "notes.txt").read_bytes() == b"small file\n"
    assert run("getfattr", "--only-values", "-n", "user.openai.id",
               str(mounted / "assistants" / "notes.txt")).stdout == made["id"]


def test_cp_of_a_large_file_uses_the_uploads_api_in_parallel_parts(mount, emulator, tmp_path):
    data = payload(5 * MiB + 777, seed=2)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    mounted = mount("--multipart-threshold", "1M", "--part-size", "1M",
                    "--upload-concurrency", "3")
    emulator.control.clear_requests()
    run("cp", str(source), str(mounted / "vision" / "big.bin"))
    made = only_file(emulator, "vision", "big.bin")
    assert hashlib.sha256(server_content(emulator, made["id"])).digest() == \
        hashlib.sha256(data).digest()
    paths = [r["path"] for r in emulator.control.requests() if r["method"] == "POST"]
    assert paths[0] == "/v1/uploads"
    assert sum(p.endswith("/parts") for p in paths) == 6
    assert paths[-1].endswith("/complete")
    assert open_uploads(emulator) == []
    # the bytes just written are kept: reading them back needs no download
    emulator.control.clear_requests()
    assert (mounted / "vision" / "big.bin").read_bytes() == data
    assert not [r for r in emulator.control.requests() if r["path"].endswith("/content")]


def test_cp_p_and_copy2_keep_working_although_modes_and_times_come_from_the_server(
        mount, emulator, tmp_path):
    source = tmp_path / "keep.txt"
    source.write_bytes(b"preserve me")
    os.utime(source, (1_000_000_000, 1_000_000_000))
    source.chmod(0o600)
    mounted = mount()
    run("cp", "-p", str(source), str(mounted / "user_data" / "cp-p.txt"))
    shutil.copy2(source, mounted / "user_data" / "copy2.txt")
    for name in ("cp-p.txt", "copy2.txt"):
        made = only_file(emulator, "user_data", name)
        assert server_content(emulator, made["id"]) == b"preserve me"
        info = os.stat(mounted / "user_data" / name)
        assert info.st_mode & 0o777 == 0o644 and int(info.st_mtime) == made["created_at"]
    os.chmod(mounted / "user_data" / "copy2.txt", 0o600)      # succeeds, changes nothing
    os.chown(mounted / "user_data" / "copy2.txt", os.getuid(), os.getgid())


def test_shell_redirection_append_and_touch(mount, emulator):
    mounted = mount()
    target = mounted / "evals" / "log.txt"
    run("sh", "-c", f"echo first > '{target}'")
    assert server_content(emulator, only_file(emulator, "evals", "log.txt")["id"]) == b"first\n"
    run("sh", "-c", f"echo second >> '{target}'")
    made = only_file(emulator, "evals", "log.txt")
    assert server_content(emulator, made["id"]) == b"first\nsecond\n"
    run("touch", str(mounted / "evals" / "empty.txt"))
    assert only_file(emulator, "evals", "empty.txt")["bytes"] == 0
    run("touch", str(target))               # touching an existing file changes nothing
    assert only_file(emulator, "evals", "log.txt")["id"] == made["id"]
    assert target.read_bytes() == b"first\nsecond\n"


def test_overwrite_uploads_the_new_bytes_then_deletes_the_old_file(mount, emulator, seed,
                                                                   tmp_path):
    old = seed("report.pdf", "assistants", b"old version")
    mounted = mount()
    source = tmp_path / "report.pdf"
    source.write_bytes(b"new version, longer")
    emulator.control.clear_requests()
    run("cp", str(source), str(mounted / "assistants" / "report.pdf"))
    new = only_file(emulator, "assistants", "report.pdf")
    assert new["id"] != old["id"]
    assert server_content(emulator, new["id"]) == b"new version, longer"
    order = [(r["method"], r["path"]) for r in emulator.control.requests()
             if r["method"] in ("POST", "DELETE")]
    assert order == [("POST", "/v1/files"), ("DELETE", f"/v1/files/{old['id']}")]
    assert (mounted / "assistants" / "report.pdf").read_bytes() == b"new version, longer"


def test_a_new_file_shows_at_once_with_its_current_size(mount, emulator):
    mounted = mount()
    path = mounted / "user_data" / "growing.bin"
    with open(path, "wb", buffering=0) as handle:
        handle.write(b"x" * 1000)
        assert "growing.bin" in os.listdir(mounted / "user_data")
        assert os.stat(path).st_size == 1000
        handle.write(b"y" * 500)
        assert os.stat(path).st_size == 1500
        assert server_files(emulator, "user_data") == []      # nothing sent before close
    assert only_file(emulator, "user_data", "growing.bin")["bytes"] == 1500


def test_seeks_rewrites_truncate_and_sparse_writes_before_close(mount, emulator):
    mounted = mount()
    path = mounted / "user_data" / "edited.bin"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"hello world", 0)
        os.pwrite(fd, b"HELLO", 0)
        os.pwrite(fd, b"!", 2 * MiB)              # sparse: a hole before it
        os.ftruncate(fd, 2 * MiB + 1)
        os.ftruncate(fd, 11)                      # and cut back again
        assert os.pread(fd, 11, 0) == b"HELLO world"
    finally:
        os.close(fd)
    made = only_file(emulator, "user_data", "edited.bin")
    assert server_content(emulator, made["id"]) == b"HELLO world"


def test_several_descriptors_of_one_file(mount, emulator):
    mounted = mount()
    path = mounted / "user_data" / "dup.txt"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    copy = os.dup(fd)
    os.write(fd, b"one ")
    os.close(fd)                        # first close: uploads what is there so far
    os.write(copy, b"two")
    os.close(copy)                      # last close: the final content replaces it
    made = only_file(emulator, "user_data", "dup.txt")
    assert server_content(emulator, made["id"]) == b"one two"
    pid = os.fork()
    if pid == 0:
        with open(path, "ab") as child:
            child.write(b" three")
        os._exit(0)
    os.waitpid(pid, 0)
    assert server_content(emulator, only_file(emulator, "user_data", "dup.txt")["id"]) == \
        b"one two three"


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_a_shell_redirection_uploads_once(mount, emulator, shell):
    mounted = mount()
    emulator.control.clear_requests()
    run(shell, "-c", f"echo once > '{mounted / 'evals' / 'once.txt'}'")
    assert server_content(emulator, only_file(emulator, "evals", "once.txt")["id"]) == b"once\n"
    # the shell's first close (before echo writes) comes while it still holds the file
    # through its stdout: no empty file is uploaded first, and nothing is deleted
    assert [r["method"] for r in emulator.control.requests()
            if r["method"] in ("POST", "DELETE")] == ["POST"]


def test_starting_a_program_while_writing_does_not_upload_the_partial_file(mount, emulator):
    mounted = mount()
    emulator.control.clear_requests()
    with open(mounted / "user_data" / "log.txt", "wb") as handle:
        handle.write(b"first half, ")
        handle.flush()
        # the program's copy of the descriptor is closed when it starts (close-on-exec)
        subprocess.run(["true"], check=True, close_fds=False)
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        assert [r for r in emulator.control.requests() if r["method"] == "POST"] == []
        handle.write(b"second half")
    made = only_file(emulator, "user_data", "log.txt")
    assert server_content(emulator, made["id"]) == b"first half, second half"
    assert len([r for r in emulator.control.requests() if r["method"] == "POST"]) == 1


def test_rm_deletes_on_the_server_and_already_gone_is_enoent(mount, emulator, seed):
    first = seed("a.txt", "assistants", b"a")
    second = seed("b.txt", "assistants", b"b")
    mounted = mount()
    run("rm", str(mounted / "assistants" / "a.txt"))
    assert [f["id"] for f in server_files(emulator, "assistants")] == [second["id"]]
    assert "a.txt" not in os.listdir(mounted / "assistants")
    delete_on_server(emulator, second["id"])
    with pytest.raises(FileNotFoundError):
        os.unlink(mounted / "assistants" / "b.txt")
    assert first["id"] not in [f["id"] for f in server_files(emulator)]


def test_an_open_handle_still_reads_after_rm(mount, emulator, seed):
    seed("open.txt", "vision", b"still readable after rm")
    mounted = mount()
    with open(mounted / "vision" / "open.txt", "rb") as handle:
        os.unlink(mounted / "vision" / "open.txt")
        assert server_files(emulator, "vision") == []
        assert handle.read() == b"still readable after rm"


def test_mv_within_and_across_purposes(mount, emulator, seed):
    original = seed("draft.jsonl", "vision", b'{"x": 1}\n')
    mounted = mount()
    run("mv", str(mounted / "vision" / "draft.jsonl"),
        str(mounted / "vision" / "final.jsonl"))
    renamed = only_file(emulator, "vision", "final.jsonl")
    assert server_content(emulator, renamed["id"]) == b'{"x": 1}\n'
    assert original["id"] not in [f["id"] for f in server_files(emulator)]
    run("mv", str(mounted / "vision" / "final.jsonl"), str(mounted / "batch"))
    moved = only_file(emulator, "batch", "final.jsonl")
    assert server_content(emulator, moved["id"]) == b'{"x": 1}\n'
    assert server_files(emulator, "vision") == []
    assert sorted(os.listdir(mounted / "batch")) == ["final.jsonl"]
    assert os.listdir(mounted / "vision") == []


def test_mv_of_a_file_not_uploaded_yet_is_free(mount, emulator):
    mounted = mount()
    with open(mounted / "user_data" / "temp.bin", "wb") as handle:
        handle.write(b"renamed while open")
        os.rename(mounted / "user_data" / "temp.bin", mounted / "user_data" / "final.bin")
        assert server_files(emulator) == []
    made = only_file(emulator, "user_data", "final.bin")
    assert server_content(emulator, made["id"]) == b"renamed while open"
    assert len(server_files(emulator)) == 1


def test_mv_breaking_a_rule_is_refused_and_changes_nothing(mount, emulator, seed):
    original = seed("notes.txt", "assistants", b"plain text")
    mounted = mount()
    mounted.expect_log(r"refused, batch files must be JSON Lines")
    result = run("mv", str(mounted / "assistants" / "notes.txt"), str(mounted / "batch"),
                 check=False)
    # rename answers EXDEV, mv falls back to copying, and the copy is refused by the rule
    assert result.returncode != 0
    assert "cannot create regular file" in result.stderr and "Invalid argument" in result.stderr
    assert [f["id"] for f in server_files(emulator)] == [original["id"]]
    assert os.listdir(mounted / "assistants") == ["notes.txt"]


@pytest.mark.parametrize("flags", [[], ["-a"]], ids=["rsync", "rsync-a"])
def test_rsync_leaves_exactly_the_intended_files(mount, emulator, tmp_path, flags):
    source = tmp_path / "src"
    source.mkdir()
    for n in range(3):
        (source / f"part{n}.txt").write_bytes(f"part {n}\n".encode() * (n + 1))
    mounted = mount()
    emulator.control.clear_requests()
    run("rsync", *flags, "--recursive", f"{source}/", f"{mounted / 'user_data'}/")
    names = sorted(f["filename"] for f in server_files(emulator, "user_data"))
    assert names == ["part0.txt", "part1.txt", "part2.txt"]
    # rsync writes .partN.txt.XXXXXX and renames it: the upload happens once, at the rename,
    # under the final name; the temporary name never reaches the server
    assert len(posts(emulator)) == 3
    assert all(not f["filename"].startswith(".") for f in emulator.control.state()["files"])
    for n in range(3):
        made = only_file(emulator, "user_data", f"part{n}.txt")
        assert server_content(emulator, made["id"]) == f"part {n}\n".encode() * (n + 1)
    # a second run over changed files replaces them, again without leftovers
    (source / "part1.txt").write_bytes(b"changed\n")
    os.utime(source / "part1.txt", (2_000_000_000, 2_000_000_000))
    run("rsync", *flags, "--recursive", f"{source}/", f"{mounted / 'user_data'}/")
    assert sorted(f["filename"] for f in server_files(emulator, "user_data")) == names
    assert server_content(emulator, only_file(emulator, "user_data", "part1.txt")["id"]) == \
        b"changed\n"


def test_gio_copy_and_replace_as_file_managers_do(mount, emulator, tmp_path):
    """gio copies like GNOME Files; onto an existing file (gio copy overwrites unless -i)
    GIO writes a .goutputstream-XXXXXX temp file and renames it over the target, and
    gio save does the same for an editor's save."""
    if shutil.which("gio") is None:
        pytest.fail("gio is missing: apt-get install libglib2.0-bin")
    source = tmp_path / "picture.png"
    source.write_bytes(b"\x89PNG first")
    mounted = mount()
    target = mounted / "vision" / "picture.png"
    run("gio", "copy", str(source), str(target))
    assert server_content(emulator, only_file(emulator, "vision", "picture.png")["id"]) == \
        b"\x89PNG first"
    source.write_bytes(b"\x89PNG second")
    run("gio", "copy", str(source), str(target))
    made = only_file(emulator, "vision", "picture.png")
    assert server_content(emulator, made["id"]) == b"\x89PNG second"
    emulator.control.clear_requests()
    run("gio", "save", str(target), input="saved by an editor")
    made = only_file(emulator, "vision", "picture.png")
    assert server_content(emulator, made["id"]) == b"saved by an editor"
    assert len(server_files(emulator)) == 1
    assert os.listdir(mounted / "vision") == ["picture.png"]
    # one upload (at the rename of .goutputstream-XXXXXX), then the old file's delete
    assert [r["method"] for r in emulator.control.requests()
            if r["method"] in ("POST", "DELETE")] == ["POST", "DELETE"]
    assert all(".goutputstream" not in f["filename"]
               for f in emulator.control.state()["files"])


def test_a_temporary_file_nobody_renames_is_still_uploaded(mount, emulator):
    mounted = mount()
    leftover = mounted / "user_data" / ".report.csv.Ab12Cd"      # rsync's temp name pattern
    leftover.write_bytes(b"rsync was killed before the rename")
    made = wait_for(lambda: [f for f in server_files(emulator, "user_data")
                             if f["filename"] == ".report.csv.Ab12Cd"],
                    timeout=20, interval=0.2, message="the leftover to be uploaded")
    assert server_content(emulator, made[0]["id"]) == b"rsync was killed before the rename"
    assert leftover.read_bytes() == b"rsync was killed before the rename"


def test_a_temporary_file_is_uploaded_before_an_unmount_completes(mount, emulator):
    mounted = mount()
    (mounted / "evals" / ".goutputstream-XyZ123").write_bytes(b"unmounted right away")
    assert mounted.unmount() == 0
    made = only_file(emulator, "evals", ".goutputstream-XyZ123")
    assert server_content(emulator, made["id"]) == b"unmounted right away"


def test_renaming_a_new_file_over_an_old_one_deletes_the_old_one_only_after_upload(
        mount, emulator, seed):
    old = seed("config.json", "assistants", b"old config")
    mounted = mount()
    emulator.control.clear_requests()
    with open(mounted / "assistants" / "config.json.new", "wb") as handle:
        handle.write(b"new config")
        os.rename(mounted / "assistants" / "config.json.new", mounted / "assistants" / "config.json")
        assert old["id"] in [f["id"] for f in server_files(emulator)]   # nothing sent yet
        assert os.listdir(mounted / "assistants") == ["config.json"]
    made = only_file(emulator, "assistants", "config.json")
    assert server_content(emulator, made["id"]) == b"new config"
    assert [(r["method"], r["path"]) for r in emulator.control.requests()
            if r["method"] in ("POST", "DELETE")] == [("POST", "/v1/files"),
                                                       ("DELETE", f"/v1/files/{old['id']}")]


def test_a_failed_upload_after_renaming_over_a_file_keeps_the_old_file(mount, emulator, seed):
    old = seed("config.json", "vision", b"old config")
    emulator.control.add_fault("status", method="POST", path="/v1/files$", status=400)
    mounted = mount()
    mounted.expect_log(r"upload of vision/config.json failed: 400")
    handle = open(mounted / "vision" / "config.json.new", "wb")
    handle.write(b"new config")
    os.rename(mounted / "vision" / "config.json.new", mounted / "vision" / "config.json")
    with pytest.raises(OSError):
        handle.close()
    assert [f["id"] for f in server_files(emulator)] == [old["id"]]
    emulator.control.clear_faults()
    assert (mounted / "vision" / "config.json").read_bytes() == b"old config"


def test_refusals_name_the_rule(mount, emulator, tmp_path):
    mounted = mount()
    mounted.expect_log(r"batch/notes\.txt: refused, batch files must be JSON Lines")
    mounted.expect_log(r"refused, fine-tune files must be JSON Lines")
    mounted.expect_log(r"batch files may be at most 200 MB")
    mounted.expect_log(r"a file may be at most 8 GB")
    cases = [
        (lambda: (mounted / "batch" / "notes.txt").write_bytes(b"x"), errno.EINVAL),
        (lambda: (mounted / "fine-tune" / "train.csv").write_bytes(b"x"), errno.EINVAL),
        (lambda: create_and_truncate(mounted / "batch" / "huge.jsonl", 201 * MiB),
         errno.EFBIG),
        (lambda: write_at(mounted / "assistants" / "past8g.bin", 8 * 1024 ** 3), errno.EFBIG),
        (lambda: (mounted / "batch_output" / "x.jsonl").write_bytes(b"x"), errno.EACCES),
        (lambda: os.mkdir(mounted / "assistants" / "sub"), errno.EPERM),
        (lambda: os.mkdir(mounted / "newpurpose"), errno.EPERM),
        (lambda: os.rmdir(mounted / "assistants"), errno.EPERM),
        (lambda: os.symlink("x", mounted / "assistants" / "link"), errno.EPERM),
    ]
    for action, expected in cases:
        with pytest.raises(OSError) as caught:
            action()
        assert caught.value.errno == expected, (action, caught.value)
    assert server_files(emulator) == []
    assert emulator.control.state()["uploads"] == []


def write_at(path, offset: int) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.pwrite(fd, b"x", offset)
    finally:
        os.close(fd)


def create_and_truncate(path, size: int) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def test_an_upload_failing_midway_fails_close_and_leaves_nothing_on_the_server(
        mount, emulator, tmp_path):
    data = payload(3 * MiB, seed=9)
    source = tmp_path / "doomed.bin"
    source.write_bytes(data)
    emulator.control.add_fault("status", path="/parts$", status=500, skip=1)
    mounted = mount("--multipart-threshold", "1M", "--part-size", "1M", "--retries", "1")
    mounted.expect_log(r"upload of assistants/doomed.bin failed: 500")
    result = run("cp", str(source), str(mounted / "assistants" / "doomed.bin"), check=False)
    assert result.returncode != 0 and "Input/output error" in result.stderr
    assert server_files(emulator) == []
    assert open_uploads(emulator) == []
    assert [u["status"] for u in emulator.control.state()["uploads"]] == ["cancelled"]
    assert "doomed.bin" not in os.listdir(mounted / "assistants")
    kept = list((mounted.cache_dir / "unsent").iterdir())
    assert len(kept) == 1 and kept[0].read_bytes() == data
    status = run(sys.executable, "-m", "openai_fs", "status", str(mounted.path)).stdout
    assert "Recently failed" in status and "doomed.bin" in status and str(kept[0]) in status


def test_a_failed_replacement_keeps_the_old_file_under_the_name(mount, emulator, seed,
                                                               tmp_path):
    old = seed("keep.txt", "vision", b"old and good")
    emulator.control.add_fault("status", method="POST", path="/v1/files$", status=400)
    mounted = mount()
    mounted.expect_log(r"upload of vision/keep.txt failed: 400")
    # a writer that checks close() (a shell ignores the close at its exit, on any filesystem)
    handle = open(mounted / "vision" / "keep.txt", "wb")
    handle.write(b"broken")
    with pytest.raises(OSError) as caught:
        handle.close()
    assert caught.value.errno == errno.EINVAL
    assert [f["id"] for f in server_files(emulator)] == [old["id"]]
    emulator.control.clear_faults()
    assert (mounted / "vision" / "keep.txt").read_bytes() == b"old and good"


def test_concurrent_writers_of_different_files(mount, emulator):
    mounted = mount()
    blobs = {f"w{n}.bin": payload(200_000 + n, seed=n) for n in range(8)}
    errors: list[BaseException] = []

    def writer(name: str, data: bytes) -> None:
        try:
            with open(mounted / "user_data" / name, "wb") as handle:
                for start in range(0, len(data), 65536):
                    handle.write(data[start:start + 65536])
        except BaseException as exc:    # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=item) for item in blobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    for name, data in blobs.items():
        assert server_content(emulator, only_file(emulator, "user_data", name)["id"]) == data


def test_status_shows_an_upload_in_flight_and_unmount_waits_for_it(emulator, tmp_path):
    data = payload(2 * MiB, seed=11)
    (tmp_path / "slow.bin").write_bytes(data)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": emulator.base_url}
    subprocess.run([sys.executable, "-m", "openai_fs", "mount", str(mnt), "--cache-dir",
                    str(tmp_path / "c"), "--log-file", str(tmp_path / "log")], env=env,
                   check=True, timeout=60)
    emulator.control.add_fault("latency", method="POST", path="/v1/files$", seconds=3)
    writer = subprocess.Popen(["cp", str(tmp_path / "slow.bin"), str(mnt / "assistants")])
    try:
        def in_flight():
            out = subprocess.run([sys.executable, "-m", "openai_fs", "status", str(mnt)],
                                 capture_output=True, text=True).stdout
            return "assistants/slow.bin" in out and out
        shown = wait_for(in_flight, timeout=10, interval=0.1)
        assert "Uploads in flight: 1" in shown
        started = time.monotonic()
        unmount = subprocess.run([sys.executable, "-m", "openai_fs", "unmount", str(mnt)],
                                 capture_output=True, text=True, timeout=60)
        assert unmount.returncode == 0, unmount.stderr
        assert "waiting for 1 upload(s)" in unmount.stderr
        assert writer.wait(timeout=30) == 0
        assert time.monotonic() - started > 0.5
        made = only_file(emulator, "assistants", "slow.bin")
        assert server_content(emulator, made["id"]) == data
        assert not os.path.ismount(mnt)
    finally:
        writer.kill()
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
