"""How long a reader and a writer wait for their error when the server dies mid-transfer.

    .venv/bin/python bench/dead_server.py            # every case, default mount options
    .venv/bin/python bench/dead_server.py --only read-die

Cases (each on a fresh mount of a fresh emulator, with the mount's default options):

* ``read-die``: ``cat`` of a 16 MiB ``vision`` file; the emulator process exits after 1 MiB of
  the body (the ``die`` fault), so every later connection is refused.
* ``write-die``: ``cp`` of a 4 MiB file into ``vision/`` (one ``POST /files``); the emulator
  exits after 1 MiB of the request body.
* ``write-parts-die``: ``cp`` of a 24 MiB file with ``--multipart-threshold 8M``; the emulator
  exits during the second Part.
* ``read-stall``: ``cat`` of a 16 MiB file; the emulator sends 1 MiB, then nothing, holding the
  connection, and answers no later request at all (the ``stall`` fault): a server that went
  silent.

Prints the seconds from the start of the command to its failure (or ``>LIMIT`` when it had not
failed by then) and the errno text the command printed.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from openai_fs.emulator.control import EmulatorProcess

MiB = 1024 * 1024
KEY = "sk-bench-dead-server"
CASES = ("read-die", "write-die", "write-parts-die", "read-stall")


def _mount(folder: Path, base_url: str, *options: str) -> tuple[subprocess.Popen, Path]:
    mnt = folder / "mnt"
    mnt.mkdir()
    env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": base_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "openai_fs", "mount", "-f", str(mnt), "--cache-dir",
         str(folder / "cache"), "--log-file", str(folder / "mount.log"), *options],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not os.path.ismount(mnt):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the mount did not come up: {(folder / 'mount.log').read_text()}")
        time.sleep(0.05)
    return process, mnt


def _timed(command: list[str], limit: float) -> tuple[float | None, str]:
    started = time.monotonic()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return None, "still waiting"
    elapsed = time.monotonic() - started
    if result.returncode == 0:
        return elapsed, "succeeded (no error)"
    return elapsed, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"


def run_case(case: str, limit: float) -> tuple[float | None, str]:
    with tempfile.TemporaryDirectory(prefix=f"dead-{case}-") as tmp:
        folder = Path(tmp)
        emulator = EmulatorProcess(folder / "data", permissive=True)
        emulator.start()
        process = None
        try:
            control = emulator.control
            options: list[str] = []
            if case == "write-parts-die":
                options = ["--multipart-threshold", "8M", "--part-size", "8M"]
            if case.startswith("read"):
                data = random.Random(1).randbytes(16 * MiB)
                httpx.post(f"{emulator.base_url}/files", data={"purpose": "vision"},
                           files={"file": ("big.bin", data)},
                           headers={"Authorization": f"Bearer {KEY}"},
                           timeout=120).raise_for_status()
            process, mnt = _mount(folder, emulator.base_url, *options)
            if case == "read-die":
                control.add_fault("die", path="/content$", after_bytes=MiB)
            elif case == "read-stall":
                # 1 MiB, then silence; every later request gets no answer at all
                control.add_fault("stall", path="/content$", after_bytes=MiB, count=1)
                control.add_fault("stall", path="/content$")
            elif case == "write-die":
                control.add_fault("die", method="POST", path="^/v1/files$", after_bytes=MiB)
            elif case == "write-parts-die":
                control.add_fault("die", method="POST", path="/parts$", skip=1,
                                  after_bytes=MiB)
            if case.startswith("read"):
                os.listdir(mnt / "vision")
                command = ["sh", "-c", f"cat '{mnt}/vision/big.bin' > /dev/null"]
            else:
                size = 4 * MiB if case == "write-die" else 24 * MiB
                source = folder / "source.bin"
                source.write_bytes(random.Random(2).randbytes(size))
                command = ["cp", str(source), str(mnt / "vision" / "new.bin")]
            return _timed(command, limit)
        finally:
            if process is not None:
                subprocess.run(["fusermount3", "-u", "-z", str(folder / "mnt")],
                               capture_output=True)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            emulator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=CASES)
    parser.add_argument("--limit", type=float, default=400.0,
                        help="seconds after which a command counts as never failing")
    args = parser.parse_args()
    for case in args.only or CASES:
        elapsed, outcome = run_case(case, args.limit)
        shown = f">{args.limit:.0f}" if elapsed is None else f"{elapsed:.1f}"
        print(f"{case:16} {shown:>7} s   {outcome}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
