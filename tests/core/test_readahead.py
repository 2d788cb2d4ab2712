"""The kernel's read-ahead window (openai_fs/core/readahead.py) and the mount table lookup
(openai_fs/fuse/mountinfo.py), against files standing in for sysfs and /proc/self/mountinfo."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from openai_fs.core import readahead
from openai_fs.fuse import mountinfo

KiB, MiB = 1024, 1024 * 1024
DEVICE = "0:57"


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    (tmp_path / DEVICE).mkdir()
    (tmp_path / DEVICE / "read_ahead_kb").write_text("128\n")
    return tmp_path


def knob(sysfs: Path) -> str:
    return (sysfs / DEVICE / "read_ahead_kb").read_text().strip()


def test_the_window_is_written_in_kib_and_logged(sysfs, caplog):
    caplog.set_level(logging.INFO, logger="openai_fs.core.readahead")
    assert readahead.apply(DEVICE, 1 * MiB, sysfs) == 1 * MiB
    assert knob(sysfs) == "1024"
    assert "kernel read-ahead for this mount: 1024 KiB (was 128 KiB)" in caplog.text


def test_zero_keeps_the_kernels_window_and_an_equal_one_is_not_written_again(sysfs, caplog):
    caplog.set_level(logging.INFO, logger="openai_fs.core.readahead")
    assert readahead.apply(DEVICE, 0, sysfs) == 128 * KiB
    assert readahead.apply(DEVICE, 128 * KiB, sysfs) == 128 * KiB
    assert knob(sysfs) == "128" and caplog.text == ""


def test_without_root_the_window_stays_and_the_log_says_how_to_raise_it(
        sysfs, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="openai_fs.core.readahead")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_text", refuse)
    assert readahead.apply(DEVICE, 2 * MiB, sysfs) == 128 * KiB
    assert knob(sysfs) == "128"
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "the kernel's read-ahead for this mount stays at 128 KiB: raising it to 2048 KiB needs "
        f"root (as root: echo 2048 > {sysfs / DEVICE / 'read_ahead_kb'})")


def test_a_device_without_the_knob_is_left_alone(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="openai_fs.core.readahead")
    assert readahead.window(DEVICE, tmp_path) is None
    assert readahead.apply(DEVICE, 1 * MiB, tmp_path) is None
    assert "stays at unknown" in caplog.text and "No such file or directory" in caplog.text


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:39 / /mnt/open\\040ai rw,nosuid,nodev,relatime shared:20 - fuse.openai-fs openai-fs rw
41 22 0:40 / /mnt/stacked rw,relatime shared:21 - fuse.openai-fs openai-fs rw
45 41 0:44 / /mnt/stacked rw,relatime shared:22 - fuse.openai-fs openai-fs rw
"""


def test_the_mount_table_gives_id_and_device_of_the_top_mount(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)
    assert mountinfo.find("/mnt/open ai", str(table)) == mountinfo.MountEntry(40, "0:39")
    assert mountinfo.find("/mnt/stacked", str(table)) == mountinfo.MountEntry(45, "0:44")
    assert mountinfo.find("/mnt/elsewhere", str(table)) is None
    assert mountinfo.find("/", str(tmp_path / "missing")) is None
    table.write_text("garbage\n")
    assert mountinfo.find("/", str(table)) is None
