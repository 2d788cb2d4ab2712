"""What the mount writes locally is the mounting user's alone, and what it shows others is
what --file-mode, --dir-mode and --umask say (docs/SEMANTICS.md, "Security")."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest

from checktools import openai_fs
from fusetools import run


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes_under(folder: Path) -> dict[Path, int]:
    found = {folder: stat.S_IMODE(folder.lstat().st_mode)}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            found[path] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_everything_the_mount_writes_is_0600_in_0700_folders_whatever_the_umask(
        mount, emulator, seed, tmp_path):
    seed("seen.jsonl", "batch", b'{"cached": 1}\n')
    with umask(0):          # the mount inherits it: plain creation would make 0666 and 0777
        mounted = mount("--debug", "--multipart-threshold", "1M", "--part-size", "1M")
    mounted.expect_log(r"upload of vision/refused.bin failed")
    assert (mounted / "batch" / "seen.jsonl").read_bytes() == b'{"cached": 1}\n'
    secret = b"TOP-SECRET-CONTENT-0451"
    # a file being written: its spool and sidecar exist while it is open
    fd = os.open(mounted / "vision" / "draft.bin", os.O_CREAT | os.O_WRONLY, 0o666)
    os.write(fd, secret)
    with pytest.raises(OSError):        # refused; its value must not reach the log either
        os.setxattr(mounted / "vision" / "draft.bin", "user.note", b"TOP-SECRET-XATTR-0451")
    while_open = modes_under(mounted.cache_dir)
    assert any(path.suffix == ".json" for path in while_open)        # the sidecar
    os.close(fd)
    # a failed upload in parts leaves its bytes in unsent/ (and notes its Upload first)
    emulator.control.add_fault("status", status=400, method="POST", path="/complete$")
    source = tmp_path / "refused.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    result = run("cp", str(source), str(mounted / "vision" / "refused.bin"), check=False)
    assert result.returncode != 0
    assert mounted.unmount() == 0
    found = {**while_open, **modes_under(mounted.cache_dir)}
    kinds = {"dir": 0, "file": 0}
    for path, mode in found.items():
        if not path.exists():
            continue
        if path.is_dir():
            assert mode == 0o700, (path, oct(mode))
            kinds["dir"] += 1
        else:
            assert mode == 0o600, (path, oct(mode))
            kinds["file"] += 1
    assert kinds["dir"] >= 5 and kinds["file"] >= 3, kinds
    assert any("unsent" in str(path) for path in found)
    assert any("content" in str(path) and path.is_file() for path in found)
    # the debug log says what was done, never the bytes
    log = mounted.log()
    assert " DEBUG " in log and "write(" in log
    assert secret.decode() not in log and "<23 bytes>" in log
    assert "TOP-SECRET-XATTR" not in log and "setxattr(" in log


def test_a_cache_folder_others_can_read_gets_a_private_folder_and_is_not_chmod_ed(
        mount, emulator, seed, tmp_path):
    seed("a.jsonl", "batch", b"{}\n")
    for mode in (0o755, 0o750, 0o700):
        chosen = tmp_path / f"chosen-{mode:o}"
        chosen.mkdir()
        chosen.chmod(mode)
        mounted = mount(cache_dir=chosen)
        assert (mounted / "batch" / "a.jsonl").read_bytes() == b"{}\n"
        (mounted / "batch" / "new.jsonl").write_bytes(b"{}\n")
        assert stat.S_IMODE(chosen.stat().st_mode) == mode        # never chmod-ed
        inside = sorted(p.name for p in chosen.iterdir())
        if mode == 0o700:       # only yours already: used as it is
            assert "spool" in inside and "content" in inside
        else:
            assert inside == ["openai-fs-cache"]
            own = chosen / "openai-fs-cache"
            assert stat.S_IMODE(own.stat().st_mode) == 0o700
            assert {"spool", "content"} <= {p.name for p in own.iterdir()}
        assert mounted.unmount() == 0


@pytest.mark.parametrize("mode", [0o1777, 0o775, 0o757])
def test_a_cache_folder_others_can_write_to_is_refused_with_the_reason(tmp_path, emulator,
                                                                      mode):
    chosen = tmp_path / "shared"
    chosen.mkdir()
    chosen.chmod(mode)
    (tmp_path / "mnt").mkdir()
    result = openai_fs("mount", "-f", str(tmp_path / "mnt"), "--cache-dir", str(chosen),
                       env={"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": emulator.base_url})
    assert result.returncode != 0
    assert "other users can write to the cache folder" in result.stderr
    assert f"mode {mode:04o}" in result.stderr and "Traceback" not in result.stderr
    assert list(chosen.iterdir()) == [] and stat.S_IMODE(chosen.stat().st_mode) == mode
    assert not os.path.ismount(tmp_path / "mnt")


def test_modes_follow_file_mode_dir_mode_and_umask(mount, seed):
    seed("out.jsonl", "batch_output", b"{}\n")
    seed("in.jsonl", "batch", b"{}\n")
    cases = [((), 0o644, 0o444, 0o755, 0o555),
             (("--umask", "077"), 0o600, 0o400, 0o700, 0o500),
             (("--file-mode", "0640", "--dir-mode", "0750"), 0o640, 0o440, 0o750, 0o550),
             (("-o", "umask=027,file_mode=666"), 0o640, 0o440, 0o750, 0o550)]
    for options, writable_file, read_only_file, writable_dir, read_only_dir in cases:
        mounted = mount(*options)
        assert stat.S_IMODE(os.stat(mounted / "batch" / "in.jsonl").st_mode) == writable_file
        assert stat.S_IMODE(os.stat(mounted / "batch_output" / "out.jsonl").st_mode) == \
            read_only_file
        assert stat.S_IMODE(os.stat(mounted / "batch").st_mode) == writable_dir
        assert stat.S_IMODE(os.stat(mounted / "batch_output").st_mode) == read_only_dir
        (mounted / "batch" / "made.jsonl").write_bytes(b"{}\n")
        assert stat.S_IMODE(os.stat(mounted / "batch" / "made.jsonl").st_mode) == writable_file
        assert mounted.unmount() == 0
