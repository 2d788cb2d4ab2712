"""The mount's log files: named after the mount point, private, rotated by size, and what is
masked in them (the mounts themselves are in tests/fuse/test_service.py)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from openai_fs.api.secret import Secret
from openai_fs.commands import logs, options


def test_a_log_is_named_after_its_mount_point(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert options.default_log_file(Path("/home/me/openai")) == \
        tmp_path / "openai-fs" / "home-me-openai.log"
    assert options.log_name(Path("/mnt/my files\n")) == "mnt-my_files_.log"
    long = Path("/" + "/".join(["x" * 100] * 5))
    assert len(options.log_name(long).encode()) <= 255
    assert options.log_name(long) != options.log_name(Path(str(long) + "y"))
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert options.default_log_file(Path("/srv/openai")) == \
        tmp_path / "home" / ".local" / "state" / "openai-fs" / "srv-openai.log"


def test_the_log_rotates_by_size_every_file_private_and_the_crash_handler_follows(tmp_path):
    path = tmp_path / "mount.log"
    reopened = []
    handler = logs.PrivateRotatingFile(path, reopened=reopened.append)
    handler.maxBytes = 2000
    logger = logging.getLogger("test-rotation")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for n in range(200):
            logger.warning("line %03d %s", n, "x" * 40)
    finally:
        logger.removeHandler(handler)
        handler.close()
    kept = sorted(tmp_path.iterdir())
    assert kept == [path] + [path.with_name(f"mount.log.{n}") for n in range(1, 5)]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kept)
    assert all(p.stat().st_size <= 2100 for p in kept)
    assert "line 199" in path.read_text()
    assert len(reopened) >= 4 and reopened[-1] is not None


def test_a_log_that_is_not_a_regular_file_is_written_as_it_is(tmp_path):
    handler = logs.PrivateRotatingFile(Path(os.devnull))
    try:
        assert handler.maxBytes == 0        # never rotated (nor chmod-ed: it is /dev/null)
        assert stat.S_IMODE(os.stat(os.devnull).st_mode) == 0o666
    finally:
        handler.close()


def test_only_a_key_long_enough_to_be_one_is_masked():
    def shown(key: str, message: str) -> str:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None)
        logs.RedactingFilter(Secret(key)).filter(record)
        return record.msg

    assert shown("demo", "demo: emulator with sample files") == \
        "demo: emulator with sample files"
    real = "sk-proj-Zq7LEAKa9Xw2Rt5Yu8Io3Pm6Nb1"
    assert real not in shown(real, f"the server said: bad key {real}")
    opaque = "opaque-key-4f9c2e7a1b8d6053"
    assert shown(opaque, f"echo {opaque}!") == "echo ***!"
    assert shown("short", "sk-abcdef is shaped like a key") == "sk-*** is shaped like a key"
