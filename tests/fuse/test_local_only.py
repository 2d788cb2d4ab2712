"""Files kept local: editor, office and desktop temporaries never reach the server, and the way
editors save (vim, a GIO save, LibreOffice) leaves the server holding only the saved file
(docs/SEMANTICS.md, "Files kept local"). Requests are counted at the emulator."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from checktools import live_files
from fusetools import run

ORIGINAL = b"first version\n"


def changes(emulator) -> list[str]:
    """The requests that change the server, in order."""
    return [r["method"] for r in emulator.control.requests() if r["method"] in ("POST", "DELETE")]


def on_server(emulator) -> list[tuple[str, bytes]]:
    return sorted((f["filename"], emulator.control.stored_content(f["id"]))
                  for f in live_files(emulator))


@pytest.fixture
def report(mount, seed, emulator):
    """A mount of a server holding vision/report.txt; the request log starts empty."""
    seed("report.txt", "vision", ORIGINAL)
    mounted = mount()
    assert (mounted / "vision" / "report.txt").read_bytes() == ORIGINAL
    emulator.control.clear_requests()
    return mounted


def vim(folder, *commands: str) -> None:
    """Run vim as a user does, in a terminal (script(1)), with its swap file, writing report.txt
    with ``commands`` (``backupskip`` emptied: by default vim makes no backup under /tmp)."""
    if shutil.which("vim") is None:
        pytest.fail("vim is missing (bash .ci/setup --test installs it)")
    line = " ".join(["vim", "-u", "DEFAULTS", "-i", "NONE", "-c", "'set backupskip='"]
                    + [f"-c '{command}'" for command in commands] + ["-c", "wq", "report.txt"])
    result = subprocess.run(["script", "-qec", line, "/dev/null"], cwd=folder, timeout=60,
                            capture_output=True, env={**os.environ, "TERM": "xterm",
                                                      "HOME": str(folder.parent.parent)})
    assert result.returncode == 0, result


@pytest.mark.parametrize("backupcopy", ["no", "yes", "auto"])
def test_a_vim_save_uploads_the_file_once_and_nothing_else(report, emulator, backupcopy):
    # backupcopy=no renames report.txt to report.txt~ and writes a new report.txt; yes copies
    # it to report.txt~ and writes into report.txt; both keep the swap file .report.txt.swp
    vim(report / "vision", f"set backupcopy={backupcopy}", "normal Gosecond line")
    saved = ORIGINAL + b"second line\n"
    assert on_server(emulator) == [("report.txt", saved)]
    assert changes(emulator) == ["POST", "DELETE"]      # the saved file, the old one gone
    assert os.listdir(report / "vision") == ["report.txt"]
    assert (report / "vision" / "report.txt").read_bytes() == saved


def test_swap_and_backup_files_live_in_the_mount_only(report, emulator):
    folder = report / "vision"
    (folder / ".report.txt.swp").write_bytes(b"b0VIM swap")
    (folder / "report.txt~").write_bytes(b"a backup")
    (folder / ".~lock.report.txt#").write_bytes(b"owner,host,pid")
    (folder / "~$report.docx").write_bytes(b"owner")
    (folder / ".DS_Store").write_bytes(b"finder")
    assert sorted(os.listdir(folder)) == sorted([".report.txt.swp", "report.txt~",
                                                 ".~lock.report.txt#", "~$report.docx",
                                                 ".DS_Store", "report.txt"])
    assert (folder / "report.txt~").read_bytes() == b"a backup"     # ordinary files here
    with open(folder / "report.txt~", "ab") as handle:
        handle.write(b", longer")
    assert (folder / "report.txt~").read_bytes() == b"a backup, longer"
    os.rename(folder / ".DS_Store", folder / "._report.txt")
    status = report.status()["uploads"]["kept_local"]
    assert status == {"files": 5, "bytes": sum(os.stat(folder / name).st_size for name in (
        ".report.txt.swp", "report.txt~", ".~lock.report.txt#", "~$report.docx",
        "._report.txt"))}
    shown = run(sys.executable, "-m", "openai_fs", "status", str(report.path)).stdout
    assert "Files kept local (editor and desktop temporaries, never uploaded): 5" in shown
    for name in (".report.txt.swp", "report.txt~", ".~lock.report.txt#", "~$report.docx",
                 "._report.txt"):
        os.unlink(folder / name)
    assert changes(emulator) == [] and on_server(emulator) == [("report.txt", ORIGINAL)]
    assert os.listdir(folder) == ["report.txt"]


def test_vims_writability_probe_sends_nothing(report, emulator):
    # vim's check that it may create files here: O_EXCL, close at once, remove
    folder = report / "vision"
    fd = os.open(folder / "4913", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    os.unlink(folder / "4913")
    assert changes(emulator) == []
    # a file a user names 4913 is an ordinary file
    (folder / "4913").write_bytes(b"a real file")
    assert ("4913", b"a real file") in on_server(emulator)


def test_a_gio_save_uploads_the_file_once(report, emulator):
    target = report / "vision" / "report.txt"
    subprocess.run(["gio", "save", str(target)], input=b"saved by GIO\n", check=True,
                   timeout=60)
    assert on_server(emulator) == [("report.txt", b"saved by GIO\n")]
    assert changes(emulator) == ["POST", "DELETE"]


def test_a_libreoffice_save_uploads_the_file_once(report, emulator):
    """LibreOffice's sequence (it is not installed here; its system calls are): a lock file
    beside the document while it is open, the document written to a temporary file of its own
    (luXXXX.tmp) that is renamed over it, the lock removed when the document is closed."""
    folder = report / "vision"
    lock = folder / ".~lock.report.txt#"
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, b",me,host,01.12.2026 10:00,file:///home/me/.config/libreoffice/4;")
    os.close(fd)
    temporary = folder / "lu1f3k9s2a.tmp"
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.write(fd, b"saved by LibreOffice\n")
    os.fsync(fd)
    os.close(fd)
    os.rename(temporary, folder / "report.txt")
    os.unlink(lock)
    assert on_server(emulator) == [("report.txt", b"saved by LibreOffice\n")]
    assert changes(emulator) == ["POST", "DELETE"]
    assert os.listdir(folder) == ["report.txt"]


def test_a_server_file_renamed_onto_a_local_name_is_kept_not_lost(report, emulator, mount):
    folder = report / "vision"
    os.rename(folder / "report.txt", folder / "report.txt~")      # what vim's backup does
    assert os.listdir(folder) == ["report.txt~"]
    assert (folder / "report.txt~").read_bytes() == ORIGINAL
    assert changes(emulator) == []                              # it stays on the server
    (folder / "report.txt").write_bytes(b"the new one\n")
    assert sorted(os.listdir(folder)) == ["report.txt", "report.txt~"]
    # not removed: it survives, and after a remount both show under id-bearing names
    assert report.unmount() == 0
    again = mount()
    names = sorted(os.listdir(again / "vision"))
    assert len(names) == 2 and all(name.startswith("report (file-") for name in names)
    assert sorted(content for _, content in on_server(emulator)) == [ORIGINAL, b"the new one\n"]


def test_more_names_can_be_kept_local_and_the_defaults_turned_off(mount, emulator):
    mounted = mount("--local-only", "*.bak", "-o", "local_only=scratch-*")
    for name in ("notes.bak", "scratch-1.txt", ".notes.txt.swp"):
        (mounted / "vision" / name).write_bytes(b"local")
    assert changes(emulator) == []
    plain = mount("--no-local-only")
    (plain / "vision" / ".notes.txt.swp").write_bytes(b"uploaded")
    assert [f["filename"] for f in live_files(emulator)] == [".notes.txt.swp"]
