"""bench/spool_only_fs.py, the floor under benchmark 5's upload row: a real FUSE mount that
must take in every byte ``cp`` gives it (into its spool), or its figure would be a floor for
nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openai_fs.fuse import mountinfo

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "spool_only_fs.py"

pytestmark = pytest.mark.timeout(120)


def test_cp_into_it_lands_every_byte_in_its_spool(tmp_path):
    mountpoint, spool = tmp_path / "mnt", tmp_path / "spool"
    mountpoint.mkdir()
    spool.mkdir()
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(mountpoint), str(spool)],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while mountinfo.find(str(mountpoint)) is None:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "not mounted within 30 s"
            time.sleep(0.02)
        sources = []
        # the first is large enough for its pages to be let go behind the writer
        for index, size in enumerate([40 * 1024 * 1024 + 17, 0, 4096]):
            source = tmp_path / f"source-{index}.bin"
            source.write_bytes(os.urandom(size))
            subprocess.run(["cp", str(source), str(mountpoint / source.name)], check=True)
            assert (mountpoint / source.name).stat().st_size == size
            sources.append(source)
        spooled = sorted(spool.iterdir(), key=lambda path: int(path.name))
        assert [path.read_bytes() for path in spooled] == [s.read_bytes() for s in sources]
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
        assert process.wait(timeout=30) == 0, process.stderr.read()


def test_without_its_two_arguments_it_says_how_to_use_it():
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "usage: python bench/spool_only_fs.py MOUNTPOINT SPOOL_DIR"
