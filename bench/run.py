"""The openai-fs benchmark suite: the targets of bench/README.md, measured as ratios in one run.

    .venv/bin/python bench/run.py                 # everything (a few minutes)
    .venv/bin/python bench/run.py --quick         # smaller files, fewer repeats (under a minute)
    .venv/bin/python bench/run.py --only ls       # one benchmark (repeatable, or comma-separated)

One emulator (``openai-fs serve`` on 127.0.0.1, data in a temporary folder) serves every
measurement; each mount is ``openai-fs mount -f`` with a fresh, empty ``--cache-dir``. Every
timed measurement runs ``--repeat`` times (median, spread), and each verdict is a ratio against a
baseline measured side by side against the same emulator in the same run. See bench/README.md.

The exit status is 0 when every benchmark ran, whatever its verdicts, and 1 when the harness
itself failed (a benchmark could not run); the table then shows ERROR for it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import httpx
import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openai_fs.emulator.control import EmulatorProcess  # noqa: E402

KEY = "sk-bench-0123456789abcdef"
AUTH = f"Authorization: Bearer {KEY}"
MiB = 1024 * 1024
GiB = 1024 * MiB
MB = 1000 * 1000
#: every mount's --cache-size (the memory budget the RSS targets are measured against)
CACHE_SIZE = 128 * MiB
#: what the mount process may use beyond --cache-size (interpreter, libraries, buffers)
RSS_OVERHEAD = 100 * MiB
#: how a mount uploads, by its options: one POST /files (a threshold above every file sent
#: here; POST /files takes up to 512 MiB), or the Uploads API in parallel parts
UPLOAD_WAYS = {"one POST": ("--multipart-threshold", "512M"),
               "parallel parts": ("--multipart-threshold", "1M", "--part-size", "16M",
                                  "--upload-concurrency", "4")}
#: the Python clients that benchmarks 1 and 5 also time alone (bench/client_alone.py), by
#: the name the table gives them
CLIENTS_ALONE = {"openai-fs": "openai-fs's HTTP client", "sdk": "the openai SDK"}
#: seconds a mount may take to start answering, or to exit once unmounted
MOUNT_TIMEOUT = 30
#: seconds any one command (cat, cp, curl, ls) may take before the benchmark fails
COMMAND_TIMEOUT = 600
#: log lines of a mount that deserve a look (shown after the table)
PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback")


class HarnessError(RuntimeError):
    """The benchmark could not be measured (not: the measurement missed its target)."""


# -- what to run ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    read_bytes: int          # the file of benchmarks 1, 2, 4 and 9
    upload_bytes: int        # the file of benchmarks 5, 6 and the large one of 7
    small_upload_bytes: int  # the small one of 7
    list_files: int          # files in user_data for benchmark 3
    repeats: int             # of each timed measurement
    rss_repeats: int         # of each peak RSS measurement of benchmark 7 (not timed)
    #: link speeds: (name, bytes per second each request may move; None: no limit)
    speeds: tuple[tuple[str, int | None], ...]
    #: the file of benchmarks 8 and 10 (bytes fetched by partial reads; cmp)
    window_bytes: int = 256 * 1024 * 1024
    #: where benchmark 8's far read falls
    far_offset: int = 200 * 1024 * 1024
    #: random reads benchmark 10 compares, per server kind
    cmp_examples: int = 60


LOOPBACK = ("loopback", None)
SPEEDS = (LOOPBACK, ("4 Gbit/s", 500 * MB), ("1 Gbit/s", 125 * MB))
FULL = Profile(read_bytes=GiB, upload_bytes=400 * MiB, small_upload_bytes=100 * MiB,
               list_files=10_000, repeats=3, rss_repeats=3, speeds=SPEEDS)
QUICK = Profile(read_bytes=128 * MiB, upload_bytes=64 * MiB, small_upload_bytes=16 * MiB,
                list_files=2_000, repeats=2, rss_repeats=1, speeds=(LOOPBACK, SPEEDS[2]),
                window_bytes=96 * MiB, far_offset=75 * MiB, cmp_examples=25)
#: the largest window a stream asks for (openai_fs.core.streams.MAX_WINDOW), for the targets
WINDOW = 64 * MiB


# -- results -------------------------------------------------------------------------------

@dataclass
class Row:
    number: int
    benchmark: str
    case: str
    ours: str
    baseline: str
    measure: str
    target: str
    verdict: str             # PASS, FAIL, ERROR, or INFO (context for the row above: no target)
    raw: dict = field(default_factory=dict)


@dataclass
class Samples:
    """Repeated measurements of one quantity."""
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """(max - min) / median."""
        return (max(self.values) - min(self.values)) / self.median if self.median else 0.0

    def seconds(self) -> str:
        text = f"{self.median:.3g} s"
        if len(self.values) > 1:
            text += f" ({min(self.values):.3g}–{max(self.values):.3g})"
        return text

    def as_dict(self) -> dict:
        return {"values": self.values, "median": self.median, "min": min(self.values),
                "max": max(self.values), "spread": self.spread}


def rate(size: int, seconds: float) -> str:
    value = size / seconds / MB
    return f"{value / 1000:.3g} GB/s" if value >= 1000 else f"{value:.3g} MB/s"


def throughput_cell(size: int, times: Samples) -> str:
    return f"{rate(size, times.median)} · {times.seconds()}"


def mib(size: float) -> str:
    return f"{size / MiB:.0f} MiB"


def mib_exact(size: float) -> str:
    return f"{size / MiB:.2f} MiB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# -- processes -----------------------------------------------------------------------------

def run(argv: list[str], *, capture: bool = False,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a program; its stdout goes to /dev/null unless ``capture``."""
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                            timeout=COMMAND_TIMEOUT, env=env)
    if result.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} exited with {result.returncode}: "
                           f"{result.stderr.decode(errors='replace').strip()}")
    return result


def timed(argv: list[str], *, capture: bool = False) -> tuple[float, bytes | None]:
    """Seconds ``argv`` took, and its stdout when ``capture``."""
    started = time.perf_counter()
    result = run(argv, capture=capture)
    return time.perf_counter() - started, result.stdout


def mounted(path: Path) -> bool:
    """Whether something is mounted on ``path``, from /proc/self/mountinfo: unlike
    ``os.path.ismount`` this never asks the filesystem, so a mount that hangs cannot block it."""
    target = str(path).replace(" ", "\\040")
    with open("/proc/self/mountinfo") as mountinfo:
        return any(line.split()[4] == target for line in mountinfo)


def _stat_quietly(path: Path) -> None:
    try:
        os.stat(path)
    except OSError:
        pass    # the mount died; the caller sees that from the process


def peak_rss(pid: int) -> int:
    """VmHWM of a live process, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise HarnessError(f"no VmHWM for process {pid}")


class Mount:
    """``openai-fs mount -f`` on a fresh mountpoint with an empty cache folder; a context
    manager that always unmounts and reads the peak RSS just before it does."""

    def __init__(self, suite: "Suite", options: tuple[str, ...], label: str) -> None:
        self.suite = suite
        self.options = options
        self.label = label
        self.folder = Path(tempfile.mkdtemp(prefix="mount-", dir=suite.tmp))
        self.path = self.folder / "mnt"
        self.cache_dir = self.folder / "cache"
        self.log_file = self.folder / "mount.log"
        self.process: subprocess.Popen | None = None
        self.peak_rss: int | None = None

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    def command(self) -> list[str]:
        return [sys.executable, "-m", "openai_fs", "mount", "-f", str(self.path),
                "--cache-dir", str(self.cache_dir), "--log-file", str(self.log_file),
                "--cache-size", str(CACHE_SIZE), *self.options]

    def __enter__(self) -> "Mount":
        self.path.mkdir()
        env = self.suite.client_environment()
        command = self.command()
        output = open(self.folder / "output.txt", "wb")  # noqa: SIM115 - closed below
        try:
            self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                            stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
        finally:
            output.close()
        try:
            deadline = time.monotonic() + MOUNT_TIMEOUT
            while not mounted(self.path):
                if self.process.poll() is not None:
                    raise HarnessError(f"the mount exited with {self.process.returncode}: "
                                       f"{self._output()}")
                if time.monotonic() > deadline:
                    raise HarnessError(f"the mount was not made within {MOUNT_TIMEOUT} s: "
                                       f"{self._output()}")
                time.sleep(0.01)
            # The kernel has the mount; live means the daemon answers. Asked from a thread, so
            # a daemon that never answers fails the benchmark instead of hanging the harness
            # (close() kills it, which ends the stat).
            answered = threading.Thread(target=_stat_quietly, args=(self.path,), daemon=True)
            answered.start()
            answered.join(max(1.0, deadline - time.monotonic()))
            if answered.is_alive():
                raise HarnessError(f"the mount did not answer a stat within {MOUNT_TIMEOUT} s "
                                   f"of starting: {self._output()}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _output(self) -> str:
        text = ""
        for name in ("output.txt", "mount.log"):
            try:
                text += (self.folder / name).read_text(errors="replace")[-4000:]
            except FileNotFoundError:
                pass
        return text

    def close(self) -> None:
        process = self.process
        try:
            if process is not None and process.poll() is None:
                self.peak_rss = peak_rss(process.pid)
                try:
                    if mounted(self.path):
                        subprocess.run(["fusermount3", "-u", str(self.path)],
                                       capture_output=True, timeout=MOUNT_TIMEOUT)
                    process.wait(timeout=MOUNT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
                    self.suite.problems.append(f"{self.label}: the mount did not exit within "
                                               f"{MOUNT_TIMEOUT} s of fusermount3 -u; killed")
        finally:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            if mounted(self.path):
                subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True,
                               timeout=MOUNT_TIMEOUT)
            if process is not None and process.returncode not in (0, None):
                self.suite.problems.append(f"{self.label}: the mount exited with "
                                           f"{process.returncode}")
            for line in self._output().splitlines():
                if PROBLEM.search(line):
                    self.suite.problems.append(f"{self.label}: {line}")
            shutil.rmtree(self.folder, ignore_errors=True)


class SpoolOnlyMount(Mount):
    """bench/spool_only_fs.py instead of openai-fs: FUSE and a spool file, nothing else."""

    def command(self) -> list[str]:
        self.cache_dir.mkdir()      # the spool folder
        return [sys.executable, str(ROOT / "bench" / "spool_only_fs.py"), str(self.path),
                str(self.cache_dir)]


# -- the suite -----------------------------------------------------------------------------

def write_test_file(path: Path, size: int, seed: int) -> None:
    """Incompressible, distinct in every MiB, and fast to make."""
    rng = random.Random(seed)
    block = rng.randbytes(8 * MiB)
    with open(path, "wb") as out:
        for index in range(math.ceil(size / MiB)):
            offset = (index * 4099) % (len(block) - MiB)
            chunk = index.to_bytes(8, "big") + block[offset:offset + MiB - 8]
            out.write(chunk[:min(MiB, size - index * MiB)])


class Suite:
    def __init__(self, profile: Profile, tmp: Path, emulator: EmulatorProcess) -> None:
        self.profile = profile
        self.tmp = tmp
        self.emulator = emulator
        self.control = emulator.control
        self.base_url = emulator.base_url
        self.api = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {KEY}"},
                                timeout=600)
        self.rows: list[Row] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        #: peak RSS of every mount by what it did, for benchmark 4
        self.rss: dict[str, list[int]] = {}
        self._files: dict[str, tuple[Path, str | None]] = {}
        self._drop_caches_ok: bool | None = None
        self._listed = False
        #: more environment for every client (SSL_CERT_FILE while measuring over TLS)
        self.extra_environment: dict[str, str] = {}

    # helpers
    def mount(self, *options: str, label: str) -> Mount:
        return Mount(self, options, label)

    def set_speed(self, bandwidth: int | None) -> None:
        self.control.set_config(bandwidth=bandwidth)

    def drop_caches(self) -> None:
        """Empty the page cache, so a cold read finds neither the emulator's blob nor the
        mount's cache file in memory (needs root; noted once when impossible)."""
        if self._drop_caches_ok is False:
            return
        os.sync()
        try:
            with open("/proc/sys/vm/drop_caches", "w") as knob:
                knob.write("3\n")
            self._drop_caches_ok = True
        except OSError as exc:
            self._drop_caches_ok = False
            self.notes.append(f"the page cache could not be dropped ({exc.strerror}); cold runs "
                              "may find the emulator's copy of the file in memory")

    def requests(self) -> list[dict]:
        return self.control.requests()

    def client_environment(self) -> dict[str, str]:
        """The environment of a client of the emulator: a mount, or a client alone."""
        return {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": self.base_url,
                **self.extra_environment}

    def client_alone(self, client: str, *args: str) -> dict:
        """bench/client_alone.py: one transfer by a Python client (``openai-fs`` or ``sdk``)
        with no FUSE, timed inside that process; its JSON answer."""
        result = run([sys.executable, str(ROOT / "bench" / "client_alone.py"), client, *args],
                     capture=True, env=self.client_environment())
        return json.loads(result.stdout)

    def local_file(self, name: str, size: int, seed: int) -> Path:
        if name not in self._files:
            path = self.tmp / name
            write_test_file(path, size, seed)
            self._files[name] = (path, None)
        return self._files[name][0]

    def big_file(self) -> tuple[Path, str]:
        """The read benchmarks' file: made locally, uploaded once through the Uploads API."""
        path = self.local_file("big.bin", self.profile.read_bytes, 1)
        file_id = self._files["big.bin"][1]
        if file_id is None:
            file_id = self.upload_in_parts(path, "assistants", "big.bin")
            self._files["big.bin"] = (path, file_id)
        return path, file_id

    def window_file(self) -> tuple[Path, str]:
        """The file of benchmarks 8 and 10."""
        path = self.local_file("window.bin", self.profile.window_bytes, 4)
        file_id = self._files["window.bin"][1]
        if file_id is None:
            file_id = self.upload_in_parts(path, "assistants", "window.bin")
            self._files["window.bin"] = (path, file_id)
        return path, file_id

    def fetched(self, file_id: str) -> tuple[int, int]:
        """(bytes, requests) of the content of ``file_id`` the emulator has sent since its log
        was last cleared, once the number stops growing (a stream may still be finishing its
        window when the reader is done)."""
        last = None
        while True:
            content = [r for r in self.requests() if r["path"] == f"/v1/files/{file_id}/content"]
            now = (sum(r["response_bytes"] for r in content), len(content))
            if now == last:
                return now
            last = now
            time.sleep(0.5)

    def upload_in_parts(self, path: Path, purpose: str, filename: str) -> str:
        size = path.stat().st_size
        upload = self.api.post("/uploads", json={"filename": filename, "purpose": purpose,
                                                 "bytes": size,
                                                 "mime_type": "application/octet-stream"})
        upload.raise_for_status()
        upload_id = upload.json()["id"]
        part_ids = []
        with open(path, "rb") as source:
            while chunk := source.read(64 * MiB):
                part = self.api.post(f"/uploads/{upload_id}/parts",
                                     files={"data": ("part", chunk)})
                part.raise_for_status()
                part_ids.append(part.json()["id"])
        done = self.api.post(f"/uploads/{upload_id}/complete", json={"part_ids": part_ids})
        done.raise_for_status()
        return done.json()["file"]["id"]

    def seed_listing(self) -> None:
        if self._listed:
            return
        total, batch = self.profile.list_files, 1000
        for start in range(0, total, batch):
            self.control.seed_files([{"filename": f"doc-{n:05d}.txt", "purpose": "user_data",
                                      "content": f"file {n}\n".encode()}
                                     for n in range(start, min(total, start + batch))])
        self._listed = True

    def file_named(self, purpose: str, filename: str) -> dict | None:
        listing = self.api.get("/files", params={"purpose": purpose})
        listing.raise_for_status()
        return next((f for f in listing.json()["data"] if f["filename"] == filename), None)

    def delete(self, file_id: str) -> None:
        self.api.delete(f"/files/{file_id}").raise_for_status()

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.verdict}  {row.benchmark} [{row.case}]: {row.ours} vs {row.baseline} "
              f"-> {row.measure} (target {row.target})", flush=True)

    def cases(self) -> Iterator[tuple[str, int | None]]:
        """Each link speed in turn; the emulator is back to no limit afterwards."""
        try:
            for name, bandwidth in self.profile.speeds:
                self.set_speed(bandwidth)
                yield name, bandwidth
        finally:
            self.set_speed(None)

    def upload_file(self) -> Path:
        """The file of the upload benchmarks."""
        return self.local_file("upload.bin", self.profile.upload_bytes, 2)

    def mounted_upload(self, way: str, purpose: str, filename: str, source: Path,
                       label: str) -> tuple[Upload, int]:
        """``cp`` on a new mount that uploads ``way`` (a key of UPLOAD_WAYS); the upload and
        the mount's peak RSS, which is also kept for benchmark 4."""
        with self.mount(*UPLOAD_WAYS[way], label=label) as m:
            upload = self.cp_into_mount(m, purpose, filename, source)
        self.rss.setdefault(f"upload ({way})", []).append(m.peak_rss)
        return upload, m.peak_rss

    def cp_into_mount(self, mount: Mount, purpose: str, filename: str, source: Path) -> Upload:
        """Time ``cp`` of ``source`` into the mount; the upload is done when close() returns.
        The directory is looked up first, so its listing is not part of the time."""
        target = mount / purpose / filename
        if target.exists():
            raise HarnessError(f"{target} already exists")
        self.control.clear_requests()
        settle_disk()
        began = time.time()
        seconds, _ = timed(["cp", str(source), str(target)])
        upload = Upload.from_log(seconds, began, self.requests())
        uploaded = self.file_named(purpose, filename)
        if uploaded is None or uploaded["bytes"] != source.stat().st_size:
            raise HarnessError(f"after cp, the server has {uploaded} for {purpose}/{filename}")
        self.delete(uploaded["id"])
        return upload


def settle_disk() -> None:
    """Write back what earlier runs left dirty (the emulator's copy of the last upload, which
    was just deleted), so that one timed upload does not pay for the disk work of the one
    before it. Done before every timed upload, the baseline's and the mount's alike."""
    os.sync()


@dataclass
class Upload:
    """One ``cp`` into the mount, split by the emulator's request log into the time before the
    first request (writing the spool file, or its first 8 MiB when the POST begins while the
    file is written), sending (the POST, or create + parts), and
    ``complete`` (the emulator assembling the parts)."""
    seconds: float
    spool: float
    send: float
    complete: float
    requests: dict

    @classmethod
    def from_log(cls, seconds: float, began: float, log: list[dict]) -> "Upload":
        sending = [r for r in log if r["method"] == "POST"
                   and re.search(r"^/v1/(files|uploads)$|/parts$", r["path"])]
        completes = [r for r in log if r["method"] == "POST" and r["path"].endswith("/complete")]
        if not sending or any(r["status"] != 200 for r in sending + completes):
            raise HarnessError(f"the upload did not reach the emulator as expected: {log}")
        first = min(r["started"] for r in sending)
        last = max(r["started"] + (r["duration"] or 0) for r in sending)
        counts = {"post_files": sum(r["path"] == "/v1/files" for r in sending),
                  "uploads": sum(r["path"] == "/v1/uploads" for r in sending),
                  "parts": sum(r["path"].endswith("/parts") for r in sending),
                  "complete": len(completes)}
        return cls(seconds, spool=first - began, send=last - first,
                   complete=sum(r["duration"] or 0 for r in completes), requests=counts)

    @staticmethod
    def summary(uploads: list["Upload"]) -> str:
        """Medians of the phases, for the table."""
        def median(phase: str) -> float:
            return statistics.median(getattr(u, phase) for u in uploads)
        text = f"spool {median('spool'):.2g} s + send {median('send'):.2g} s"
        if any(u.complete for u in uploads):
            text += f" + complete {median('complete'):.2g} s"
        return text


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's children that have ended so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- the benchmarks ------------------------------------------------------------------------

def bench_cold_read(s: Suite) -> None:
    """1: cold sequential read of a large file, mount vs curl, at each link speed; and, for
    context, the same download by a Python client alone (the mount's, the SDK), no FUSE."""
    local, file_id = s.big_file()
    size = local.stat().st_size
    url = f"{s.base_url}/files/{file_id}/content"
    for speed, _ in s.cases():
        curl_times, mount_times, served = [], [], []
        alone: dict[str, list[dict]] = {client: [] for client in CLIENTS_ALONE}

        def curl() -> None:
            s.drop_caches()
            seconds, out = timed(["curl", "-sSf", "-o", "/dev/null", "-w", "%{size_download}",
                                  "-H", AUTH, url], capture=True)
            if int(out) != size:
                raise HarnessError(f"curl downloaded {out!r} bytes, not {size}")
            curl_times.append(seconds)

        def mount(repeat: int) -> None:
            with s.mount(label=f"cold read {speed} #{repeat}") as m:
                target = m / "assistants" / "big.bin"
                if target.stat().st_size != size:  # the lookup (one listing) is not timed
                    raise HarnessError(f"{target} has {target.stat().st_size} bytes")
                s.drop_caches()
                s.control.clear_requests()
                cpu = cpu_seconds(m.process.pid), cpu_seconds(s.emulator.pid)
                seconds, _ = timed(["cat", str(target)])
                content = [r for r in s.requests() if r["path"].endswith("/content")]
                served.append({"content_requests": len(content),
                               "bytes_served": sum(r["response_bytes"] for r in content),
                               "mount_cpu": cpu_seconds(m.process.pid) - cpu[0],
                               "emulator_cpu": cpu_seconds(s.emulator.pid) - cpu[1]})
                mount_times.append(seconds)
            s.rss.setdefault("cold read", []).append(m.peak_rss)

        def client(name: str) -> None:
            s.drop_caches()
            result = s.client_alone(name, "download", file_id)
            if result["bytes"] != size:
                raise HarnessError(f"{name} downloaded {result['bytes']} bytes, not {size}")
            alone[name].append(result)

        for repeat in range(s.profile.repeats):
            steps = [curl, lambda: mount(repeat)] + [
                lambda name=name: client(name) for name in CLIENTS_ALONE]
            for step in rotated(steps, repeat):
                step()
        ours, base = Samples(mount_times), Samples(curl_times)
        ratio = base.median / ours.median
        mount_cpu = statistics.median(r["mount_cpu"] for r in served)
        s.add(Row(1, f"cold read {mib(size)} (`cat`)", speed,
                  f"{throughput_cell(size, ours)}; mount CPU {mount_cpu:.2g} s",
                  f"curl: {throughput_cell(size, base)}", f"{ratio:.2f}x", "≥ 0.9x",
                  verdict(ratio >= 0.9),
                  {"bytes": size, "mount_seconds": ours.as_dict(), "curl_seconds": base.as_dict(),
                   "mount_requests": served, "ratio": ratio}))
        add_client_rows(s, 1, f"cold read {mib(size)}", speed, size, "curl", base, alone)


def rotated(steps: list[Callable[[], None]], repeat: int) -> list[Callable[[], None]]:
    """The steps of one repeat, each repeat starting one further along, so that a drift over
    the run (a disk slowing down, a busy neighbour) hurts every contender alike."""
    shift = repeat % len(steps)
    return steps[shift:] + steps[:shift]


def add_client_rows(s: Suite, number: int, what: str, speed: str, size: int,
                    baseline: str, base: Samples, alone: dict[str, list[dict]]) -> None:
    """INFO rows: each Python client alone against the row's baseline. A mount passes every
    byte through its client, so the client's ratio is the most the mount can reach."""
    for client, runs in alone.items():
        times = Samples([r["seconds"] for r in runs])
        cpu = statistics.median(r["cpu"] for r in runs)
        ratio = base.median / times.median
        s.add(Row(number, f"{what}: {CLIENTS_ALONE[client]} alone, no FUSE", speed,
                  f"{throughput_cell(size, times)}; its CPU {cpu:.2g} s",
                  f"{baseline}: {throughput_cell(size, base)}", f"{ratio:.2f}x",
                  "none (the mount's ceiling)", "INFO",
                  {"client": client, "bytes": size, "seconds": times.as_dict(),
                   "cpu": [r["cpu"] for r in runs], "baseline_seconds": base.as_dict(),
                   "ratio": ratio}))


def bench_warm_reread(s: Suite) -> None:
    """2: read the file again through the same mount: time, and requests (should be none)."""
    local, _ = s.big_file()
    size = local.stat().st_size
    with s.mount(label="warm re-read") as m:
        target = m / "assistants" / "big.bin"
        run(["cat", str(target)])      # the cold read
        run(["cat", str(local)])       # the baseline's copy into the page cache too
        mount_times, local_times, counts = [], [], []
        for _ in range(s.profile.repeats):
            s.control.clear_requests()
            seconds, _ = timed(["cat", str(target)])
            counts.append(len(s.requests()))
            mount_times.append(seconds)
            local_times.append(timed(["cat", str(local)])[0])
        run(["cmp", str(local), str(target)])   # and the bytes are right
    s.rss.setdefault("cold read", []).append(m.peak_rss)
    ours, base = Samples(mount_times), Samples(local_times)
    s.add(Row(2, f"warm re-read {mib(size)} (`cat`)", "loopback",
              f"{throughput_cell(size, ours)} · requests {counts}",
              f"local file in page cache: {throughput_cell(size, base)}",
              f"{max(counts)} requests (time {base.median / ours.median:.2f}x local)",
              "0 requests", verdict(max(counts) == 0),
              {"bytes": size, "mount_seconds": ours.as_dict(), "local_seconds": base.as_dict(),
               "requests": counts}))


def bench_ls(s: Suite) -> None:
    """3: ``ls -l`` of a large purpose on a fresh mount vs the SDK's files.list iteration."""
    s.seed_listing()
    client = openai.OpenAI(base_url=s.base_url, api_key=KEY, max_retries=0)
    mount_times, again_times, sdk_times, requests, sdk_requests = [], [], [], [], []
    found = set()
    for repeat in range(s.profile.repeats):
        with s.mount(label=f"ls #{repeat}") as m:
            s.control.clear_requests()
            seconds, _ = timed(["ls", "-l", str(m / "user_data")])
            requests.append([f"{r['method']} {r['path']}" for r in s.requests()])
            mount_times.append(seconds)
            # again, with the listing cached: what the per-file work (stat, xattr probes) costs
            again_times.append(timed(["ls", "-l", str(m / "user_data")])[0])
            found.add(len(os.listdir(m / "user_data")))
        s.control.clear_requests()
        started = time.perf_counter()
        count = sum(1 for _ in client.files.list(purpose="user_data"))
        sdk_times.append(time.perf_counter() - started)
        sdk_requests.append(len(s.requests()))
        found.add(count)
    client.close()
    if len(found) != 1:
        raise HarnessError(f"the mount and the SDK saw different numbers of files: {found}")
    files = found.pop()
    pages = max(1, math.ceil(files / 10_000))
    ours, base, again = Samples(mount_times), Samples(sdk_times), Samples(again_times)
    ratio = ours.median / base.median
    raw = {"files": files, "mount_seconds": ours.as_dict(), "sdk_seconds": base.as_dict(),
           "again_seconds": again.as_dict(), "mount_requests": requests,
           "sdk_requests": sdk_requests, "ratio": ratio}
    s.add(Row(3, f"`ls -l` of {files:,} files", "loopback",
              f"{ours.seconds()}; again, listing cached: {again.median:.3g} s",
              f"SDK files.list: {base.seconds()}", f"{ratio:.2f}x time", "≤ 1.2x",
              verdict(ratio <= 1.2), raw))
    worst = max(requests, key=len)
    listing_only = all(r == "GET /v1/files" for r in worst)
    s.add(Row(3, f"`ls -l` of {files:,} files: requests", "loopback",
              f"{len(worst)}: {', '.join(sorted(set(worst))) or '-'}",
              f"listing pages needed: {pages} (SDK sent {max(sdk_requests)})",
              f"{len(worst)} requests", f"≤ {pages} listing page(s), nothing else",
              verdict(listing_only and len(worst) <= pages), raw))


def bench_upload(s: Suite) -> None:
    """5: ``cp`` into the mount (one POST /files) vs ``curl -F`` at each link speed; and, for
    context, the same POST by a Python client alone (the mount's, the SDK), no FUSE, and (with
    no link limit) ``cp`` into a FUSE file system that only writes a spool file."""
    source = s.upload_file()
    size = source.stat().st_size
    for speed, bandwidth in s.cases():
        curl_times, uploads, spool_only_times = [], [], []
        #: CPU seconds: the emulator's while curl uploads; the spool-only FS's and cp's
        curl_emulator_cpu: list[float] = []
        spool_only_cpu: list[float] = []
        alone: dict[str, list[dict]] = {client: [] for client in CLIENTS_ALONE}

        def curl(name: str) -> None:
            s.control.clear_requests()
            settle_disk()
            emulator_cpu = cpu_seconds(s.emulator.pid)
            seconds, out = timed(["curl", "-sSf", "-H", AUTH, "-F", "purpose=user_data",
                                  "-F", f"file=@{source};filename={name}", f"{s.base_url}/files"],
                                 capture=True)
            curl_emulator_cpu.append(cpu_seconds(s.emulator.pid) - emulator_cpu)
            curl_times.append(seconds)
            posted = json.loads(out)
            if posted.get("bytes") != size:
                raise HarnessError(f"curl -F made {posted}")
            s.delete(posted["id"])

        def mount(name: str, repeat: int) -> None:
            uploads.append(s.mounted_upload("one POST", "user_data", name, source,
                                            f"upload {speed} #{repeat}")[0])

        def client(client: str, name: str) -> None:
            settle_disk()
            result = s.client_alone(client, "upload", str(source), name)
            if result["bytes"] != size:
                raise HarnessError(f"{client} made a file of {result['bytes']} bytes")
            s.delete(result["id"])
            alone[client].append(result)

        def spool_only(repeat: int) -> None:
            with SpoolOnlyMount(s, (), f"spool only #{repeat}") as floor:
                target = floor / "floor.bin"
                settle_disk()
                assert floor.process is not None
                fs_cpu, cp_cpu = cpu_seconds(floor.process.pid), children_cpu_seconds()
                seconds, _ = timed(["cp", str(source), str(target)])
                spool_only_cpu.append(cpu_seconds(floor.process.pid) - fs_cpu
                                      + children_cpu_seconds() - cp_cpu)
                if target.stat().st_size != size:
                    raise HarnessError(f"the spool-only file system took {target.stat()}")
            spool_only_times.append(seconds)

        for repeat in range(s.profile.repeats):
            steps = [lambda: curl(f"curl-{repeat}.bin"),
                     lambda: mount(f"post-{repeat}.bin", repeat)] + [
                lambda c=c: client(c, f"{c}-{repeat}.bin") for c in CLIENTS_ALONE]
            if bandwidth is None:   # no network in it: once, next to the fastest curl
                steps.append(lambda: spool_only(repeat))
            for step in rotated(steps, repeat):
                step()
        if any(u.requests["post_files"] != 1 for u in uploads):
            raise HarnessError(f"the upload was not one POST /files: {uploads}")
        ours, base = Samples([u.seconds for u in uploads]), Samples(curl_times)
        ratio = base.median / ours.median
        s.add(Row(5, f"upload {mib(size)} (`cp`, one POST)", speed,
                  f"{throughput_cell(size, ours)}; {Upload.summary(uploads)}",
                  f"curl -F: {throughput_cell(size, base)}", f"{ratio:.2f}x", "≥ 0.9x",
                  verdict(ratio >= 0.9),
                  {"bytes": size, "mount_seconds": ours.as_dict(), "curl_seconds": base.as_dict(),
                   "mount_uploads": [asdict(u) for u in uploads], "ratio": ratio}))
        add_client_rows(s, 5, f"upload {mib(size)} (one POST)", speed, size, "curl -F", base,
                        alone)
        if spool_only_times:
            floor = Samples(spool_only_times)
            floor_ratio = base.median / floor.median
            floor_cpu = statistics.median(spool_only_cpu)
            emulator_cpu = statistics.median(curl_emulator_cpu)
            s.add(Row(5, f"upload {mib(size)}: `cp` into a FUSE file system that only spools, "
                         "no HTTP (bench/spool_only_fs.py)", speed,
                      f"{throughput_cell(size, floor)}; CPU of it and cp {floor_cpu:.2g} s",
                      f"curl -F: {throughput_cell(size, base)}; emulator CPU {emulator_cpu:.2g} s",
                      f"{floor_ratio:.2f}x", "none (the floor of a mount that spools)", "INFO",
                      {"bytes": size, "seconds": floor.as_dict(), "cpu": spool_only_cpu,
                       "baseline_seconds": base.as_dict(),
                       "baseline_emulator_cpu": curl_emulator_cpu, "ratio": floor_ratio}))


def bench_parallel_upload(s: Suite) -> None:
    """6: the Uploads API in parallel parts vs one POST /files, both through the mount."""
    source = s.upload_file()
    size = source.stat().st_size
    for speed, _ in s.cases():
        single, parallel = [], []
        for repeat in range(s.profile.repeats):
            for way, uploads in (("one POST", single), ("parallel parts", parallel)):
                uploads.append(s.mounted_upload(way, "assistants", f"{way[:3]}-{repeat}.bin",
                                                source, f"{way} {speed} #{repeat}")[0])
        if any(u.requests["parts"] < 2 for u in parallel):
            raise HarnessError(f"the upload did not go in parts: {parallel}")
        ours = Samples([u.seconds for u in parallel])
        base = Samples([u.seconds for u in single])
        ratio = base.median / ours.median
        s.add(Row(6, f"upload {mib(size)}: 16M parts ×4 vs one POST", speed,
                  f"parts: {throughput_cell(size, ours)}; {Upload.summary(parallel)}",
                  f"one POST: {throughput_cell(size, base)}; {Upload.summary(single)}",
                  f"{ratio:.2f}x", "> 1.0x", verdict(ratio > 1.0),
                  {"bytes": size, "parts_seconds": ours.as_dict(),
                   "one_post_seconds": base.as_dict(),
                   "parts_uploads": [asdict(u) for u in parallel],
                   "one_post_uploads": [asdict(u) for u in single], "ratio": ratio}))


def bench_rss_growth(s: Suite) -> None:
    """7: peak RSS after a small and a large upload, each on a fresh mount, both ways."""
    small = s.local_file("upload-small.bin", s.profile.small_upload_bytes, 3)
    large = s.upload_file()
    for way in UPLOAD_WAYS:
        peaks: dict[str, list[int]] = {"small": [], "large": []}
        for repeat in range(s.profile.rss_repeats):
            for key, source in (("small", small), ("large", large)):
                peaks[key].append(s.mounted_upload(way, "assistants", f"rss-{key}-{repeat}.bin",
                                                   source, f"rss {way} {key} #{repeat}")[1])
        low, high = Samples(peaks["small"]), Samples(peaks["large"])
        ratio = high.median / low.median
        s.add(Row(7, f"peak RSS, upload {mib(large.stat().st_size)} vs "
                     f"{mib(small.stat().st_size)} ({way})", "loopback",
                  f"{mib(high.median)} after {mib(large.stat().st_size)}",
                  f"{mib(low.median)} after {mib(small.stat().st_size)}", f"{ratio:.2f}x",
                  "≤ 1.2x", verdict(ratio <= 1.2),
                  {"small_bytes": small.stat().st_size, "large_bytes": large.stat().st_size,
                   "peak_rss_small": low.as_dict(), "peak_rss_large": high.as_dict(),
                   "ratio": ratio}))


def bench_rss(s: Suite) -> None:
    """4: the highest peak RSS of the mounts that read or uploaded, against --cache-size."""
    if "cold read" not in s.rss:   # run alone: one cold read of its own
        _, _ = s.big_file()
        with s.mount(label="rss cold read") as m:
            run(["cat", str(m / "assistants" / "big.bin")])
        s.rss["cold read"] = [m.peak_rss]
    for way in UPLOAD_WAYS:
        if f"upload ({way})" not in s.rss:
            s.mounted_upload(way, "assistants", f"rss-{way[:3]}.bin", s.upload_file(),
                             f"rss {way}")
    limit = CACHE_SIZE + RSS_OVERHEAD
    for what, peaks in sorted(s.rss.items()):   # cold read, upload (one POST), (parallel parts)
        worst = max(peaks)
        s.add(Row(4, f"peak RSS after {what}", f"{len(peaks)} mount{'s' * (len(peaks) > 1)}",
                  mib(worst),
                  f"--cache-size {mib(CACHE_SIZE)} + {mib(RSS_OVERHEAD)} = {mib(limit)}",
                  f"{worst / limit:.2f}x", "≤ 1.0x", verdict(worst <= limit),
                  {"peak_rss": peaks, "cache_size": CACHE_SIZE, "overhead": RSS_OVERHEAD}))


def bench_windows(s: Suite) -> None:
    """8: bytes fetched by reads of part of a file, with and without Range: ``head -c 4096``,
    then one 4 KiB read far into the file in a new open (``dd``), and, on a new mount, ``cat``
    of the whole file."""
    local, file_id = s.window_file()
    size, far = local.stat().st_size, s.profile.far_offset
    targets = {True: (8 * MiB, 8 * MiB), False: (64 * MiB, far + WINDOW)}
    try:
        for honour in (True, False):
            s.control.set_config(honour_range=honour)
            kind = "Range" if honour else "no Range"
            head_target, far_target = targets[honour]
            with s.mount(label=f"windows {kind}") as m:
                target = m / "assistants" / "window.bin"
                if target.stat().st_size != size:
                    raise HarnessError(f"{target} has {target.stat().st_size} bytes")
                s.control.clear_requests()
                head = run(["head", "-c", "4096", str(target)], capture=True).stdout
                head_bytes, head_requests = s.fetched(file_id)
                piece = run(["dd", f"if={target}", "bs=4096", f"skip={far // 4096}", "count=1",
                             "status=none"], capture=True).stdout
                total, requests = s.fetched(file_id)
            with open(local, "rb") as source:
                if head != source.read(4096) or (source.seek(far), source.read(4096))[1] != piece:
                    raise HarnessError("the mount's bytes differ from the file's")
            far_bytes = total - head_bytes
            with s.mount(label=f"windows {kind} full") as m:
                target = m / "assistants" / "window.bin"
                target.stat()
                s.control.clear_requests()
                run(["cmp", str(local), str(target)])
                full_bytes, full_requests = s.fetched(file_id)
            s.add(Row(8, f"bytes fetched by `head -c 4096` of {mib(size)}", kind,
                      f"{mib_exact(head_bytes)} in {head_requests} request(s)", "-",
                      mib_exact(head_bytes), f"≤ {mib(head_target)}",
                      verdict(head_bytes <= head_target),
                      {"bytes": head_bytes, "requests": head_requests, "file_bytes": size}))
            s.add(Row(8, f"then a 4 KiB read at {mib(far)} in a new open (`dd`): bytes more",
                      kind, f"{mib_exact(far_bytes)} in {requests - head_requests} more "
                            "request(s)", "-", mib_exact(far_bytes), f"≤ {mib(far_target)}",
                      verdict(far_bytes <= far_target),
                      {"bytes": far_bytes, "requests": requests - head_requests,
                       "offset": far}))
            s.add(Row(8, f"bytes fetched by a full sequential read (`cmp`) of {mib(size)}",
                      kind, f"{mib_exact(full_bytes)} in {full_requests} request(s)",
                      f"file: {mib(size)}", f"{full_bytes / size:.4f}x", "≤ 1.01x",
                      verdict(full_bytes <= 1.01 * size),
                      {"bytes": full_bytes, "requests": full_requests, "file_bytes": size}))
    finally:
        s.control.set_config(honour_range=True)


def bench_cpu(s: Suite) -> None:
    """9: CPU seconds per GiB of a cold sequential read: the mount (its process and ``cat``)
    against curl, the SDK and openai-fs's client alone, with the floors beside them: the same
    ``cat`` of a FUSE file system that serves memory (bench/read_floor_fs.py), and a socket that
    only receives (client_alone.py raw). Then, when the ``openssl`` command is there, the same
    over HTTPS through a local TLS front (bench/tls_proxy.py), as INFO rows."""
    local, file_id = s.big_file()
    size = local.stat().st_size
    gib = size / GiB
    cpu: dict[str, list[float]] = {}

    def curl(tag: str = "", cacert: Path | None = None) -> None:
        s.drop_caches()
        before = children_cpu_seconds()
        trust = ["--cacert", str(cacert)] if cacert else []
        run(["curl", "-sSf", *trust, "-o", "/dev/null", "-H", AUTH,
             f"{s.base_url}/files/{file_id}/content"])
        cpu.setdefault(f"{tag}curl", []).append(children_cpu_seconds() - before)

    def mount(honour: bool, tag: str = "") -> None:
        s.control.set_config(honour_range=honour)
        name = tag + ("mount" if honour else "mount, no Range")
        try:
            with s.mount(label=f"cpu {name}") as m:
                target = m / "assistants" / "big.bin"
                target.stat()
                s.drop_caches()
                assert m.process is not None
                before = cpu_seconds(m.process.pid), children_cpu_seconds()
                run(["cat", str(target)])
                mount_cpu = cpu_seconds(m.process.pid) - before[0]
                cat_cpu = children_cpu_seconds() - before[1]
            cpu.setdefault(name, []).append(mount_cpu + cat_cpu)
            cpu.setdefault(f"{name}: its process", []).append(mount_cpu)
            cpu.setdefault(f"{name}: cat", []).append(cat_cpu)
        finally:
            s.control.set_config(honour_range=True)

    def client(name: str, tag: str = "") -> None:
        s.drop_caches()
        result = s.client_alone(name, "download", file_id)
        if result["bytes"] < size:
            raise HarnessError(f"{name} received {result['bytes']} bytes, not {size}")
        cpu.setdefault(tag + name, []).append(result["cpu"])

    def floor() -> None:
        folder = Path(tempfile.mkdtemp(prefix="floor-", dir=s.tmp))
        mountpoint = folder / "mnt"
        mountpoint.mkdir()
        process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "read_floor_fs.py"),
                                    str(mountpoint), str(size)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            assert process.stdout is not None
            if process.stdout.readline().strip() != b"ready":
                raise HarnessError("bench/read_floor_fs.py did not start")
            before = cpu_seconds(process.pid), children_cpu_seconds()
            run(["cat", str(mountpoint / "file")])
            fs_cpu = cpu_seconds(process.pid) - before[0]
            cat_cpu = children_cpu_seconds() - before[1]
        finally:
            subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
            try:
                process.wait(timeout=MOUNT_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            shutil.rmtree(folder, ignore_errors=True)
        cpu.setdefault("FUSE floor", []).append(fs_cpu + cat_cpu)
        cpu.setdefault("FUSE floor: its process", []).append(fs_cpu)
        cpu.setdefault("FUSE floor: cat", []).append(cat_cpu)

    for repeat in range(s.profile.repeats):
        steps = [curl, lambda: mount(True), lambda: mount(False), lambda: client("openai-fs"),
                 lambda: client("sdk"), lambda: client("raw"), floor]
        for step in rotated(steps, repeat):
            step()
    tls = shutil.which("openssl") is not None
    if tls:
        with tls_front(s) as cacert:
            for repeat in range(s.profile.repeats):
                steps = [lambda: curl("https ", cacert), lambda: mount(False, "https "),
                         lambda: client("openai-fs", "https "), lambda: client("sdk", "https "),
                         lambda: client("raw", "https ")]
                for step in rotated(steps, repeat):
                    step()
    else:
        s.notes.append("no openssl command: the CPU rows over HTTPS were not measured")
    per_gib = {name: statistics.median(values) / gib for name, values in cpu.items()}

    def cell(name: str) -> str:
        text = f"{per_gib[name]:.2f} CPU-s/GiB"
        parts = [f"{part.split(': ')[1]} {per_gib[part]:.2f}" for part in per_gib
                 if part.startswith(name + ": ")]
        return text + (f" ({', '.join(parts)})" if parts else "")

    def versus(baseline: str) -> str:
        return f"{baseline}: {per_gib[baseline]:.2f} CPU-s/GiB"

    raw = {"bytes": size, "cpu_seconds": cpu, "per_gib": per_gib}
    base = per_gib["curl"]
    for name in ("mount", "mount, no Range"):
        ratio = per_gib[name] / base
        s.add(Row(9, f"CPU per GiB, cold `cat` of {mib(size)}: the mount and cat",
                  "Range" if name == "mount" else "no Range", cell(name), versus("curl"),
                  f"{ratio:.2f}x", "≤ 3x", verdict(ratio <= 3), raw))
    floor_sum = per_gib["FUSE floor"] + per_gib["raw"]
    for name, what in (("sdk", "the openai SDK alone"), ("openai-fs", "openai-fs's client alone"),
                       ("raw", "receive floor: a socket, recv_into, no parsing"),
                       ("FUSE floor", "FUSE floor: cat of bench/read_floor_fs.py")):
        s.add(Row(9, f"CPU per GiB: {what}", "loopback", cell(name), versus("curl"),
                  f"{per_gib[name] / base:.2f}x", "none", "INFO", raw))
    s.add(Row(9, "CPU per GiB: the floor of a mount (FUSE floor + receive floor)", "loopback",
              f"{floor_sum:.2f} CPU-s/GiB", versus("curl"), f"{floor_sum / base:.2f}x", "none",
              "INFO", raw))
    if tls:
        base = per_gib["https curl"]
        for name, what in (("https mount, no Range", "the mount and cat, no Range"),
                           ("https sdk", "the openai SDK alone"),
                           ("https openai-fs", "openai-fs's client alone"),
                           ("https raw", "receive floor: a TLS socket, recv_into, no parsing")):
            s.add(Row(9, f"CPU per GiB over HTTPS: {what}", "loopback, TLS", cell(name),
                      versus("https curl"), f"{per_gib[name] / base:.2f}x", "none", "INFO", raw))


@contextlib.contextmanager
def tls_front(s: Suite) -> Iterator[Path]:
    """Every client (curl, mounts, clients alone) talks HTTPS to the emulator through
    bench/tls_proxy.py, with a self-signed certificate they are told to trust
    (``SSL_CERT_FILE``); yields the certificate's path."""
    folder = Path(tempfile.mkdtemp(prefix="tls-", dir=s.tmp))
    cert, key = folder / "cert.pem", folder / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key),
         "-out", str(cert)], capture=True)
    port = s.base_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    proxy = subprocess.Popen([sys.executable, str(ROOT / "bench" / "tls_proxy.py"), str(cert),
                              str(key), port], stdout=subprocess.PIPE, cwd=ROOT)
    plain = s.base_url
    try:
        assert proxy.stdout is not None
        line = proxy.stdout.readline().split()
        if len(line) != 2 or line[0] != b"listening":
            raise HarnessError("bench/tls_proxy.py did not start")
        s.base_url = f"https://localhost:{int(line[1])}/v1"
        s.extra_environment = {"SSL_CERT_FILE": str(cert)}
        yield cert
    finally:
        s.base_url = plain
        s.extra_environment = {}
        proxy.kill()
        proxy.wait()


def bench_cmp(s: Suite) -> None:
    """10: the mount's bytes against the file's for random offsets and lengths (Hypothesis),
    with and without Range, each on a new mount; and the bytes that cost."""
    from hypothesis import HealthCheck, given, settings, strategies

    local, file_id = s.window_file()
    size = local.stat().st_size
    try:
        for honour in (True, False):
            s.control.set_config(honour_range=honour)
            kind = "Range" if honour else "no Range"
            with s.mount(label=f"cmp {kind}") as m:
                target = m / "assistants" / "window.bin"
                target.stat()
                s.control.clear_requests()
                checked: list[tuple[int, int]] = []
                with open(local, "rb") as source:
                    @settings(max_examples=s.profile.cmp_examples, deadline=None, database=None,
                              suppress_health_check=list(HealthCheck))
                    @given(offset=strategies.integers(0, size),
                           length=strategies.integers(0, 4 * MiB))
                    def same(offset: int, length: int) -> None:
                        fd = os.open(target, os.O_RDONLY)
                        try:
                            got = os.pread(fd, length, offset)
                        finally:
                            os.close(fd)
                        source.seek(offset)
                        assert got == source.read(length), (offset, length)
                        checked.append((offset, length))

                    try:
                        same()
                        failure = None
                    except AssertionError as exc:
                        failure = str(exc)[:200]
                fetched, requests = s.fetched(file_id)
            s.add(Row(10, f"`cmp` of random reads (Hypothesis) of {mib(size)} against the "
                          "file", kind, f"{len(checked)} reads equal; fetched "
                                        f"{mib_exact(fetched)} in {requests} requests",
                      "the file's bytes", failure or "all equal", "all equal",
                      verdict(failure is None),
                      {"reads": checked, "failure": failure, "bytes": fetched,
                       "requests": requests}))
    finally:
        s.control.set_config(honour_range=True)


#: name: (number in the brief and the table, function), in the order they run; rss last, so
#: it can use what the others measured
#: benchmarks 11 and 12: many small files at a real network's distance
BULK_FILES = 40
BULK_SIZE = 8 * 1024
BULK_LATENCY = 0.1
BULK_THREADS = 8


def bench_bulk(s: Suite) -> None:
    """11 and 12: a serial ``cp`` of 40 files of 8 KiB into a ``--write-back`` mount, then
    ``sync DIR``; then a serial ``rm`` of them, then ``sync DIR``; against the SDK uploading
    the same files with 8 threads, then deleting them with 8 threads; every request 100 ms
    away (the emulator's latency). For context, the same ``cp`` and ``rm`` without
    ``--write-back``."""
    folder = s.tmp / "bulk"
    folder.mkdir(exist_ok=True)
    sources = []
    for n in range(BULK_FILES):
        path = folder / f"doc-{n:02}.txt"
        path.write_bytes(random.Random(n).randbytes(BULK_SIZE))
        sources.append(str(path))
    client = openai.OpenAI(base_url=s.base_url, api_key=KEY, max_retries=0)
    times: dict[str, list[float]] = {key: [] for key in (
        "copy", "delete", "sdk_copy", "sdk_delete", "sync_copy", "sync_delete")}
    s.control.set_config(latency=BULK_LATENCY)
    try:
        for repeat in range(s.profile.repeats):
            for mode, options in (("", ("--write-back",)), ("sync_", ())):
                with s.mount(*options, "--upload-concurrency", str(BULK_THREADS),
                             label=f"bulk{' ' + mode if mode else ''} #{repeat}") as m:
                    target = str(m / "vision")
                    seconds, _ = timed(["sh", "-c", 'cp "$@" "$0" && sync "$0"', target,
                                        *sources])
                    times[f"{mode}copy"].append(seconds)
                    _check_bulk(s, BULK_FILES)
                    seconds, _ = timed(["sh", "-c", 'rm "$0"/* && sync "$0"', target])
                    times[f"{mode}delete"].append(seconds)
                    _check_bulk(s, 0)
            made: list[str] = []
            started = time.perf_counter()
            with ThreadPoolExecutor(BULK_THREADS) as pool:
                made = list(pool.map(lambda path: client.files.create(
                    file=(Path(path).name, Path(path).read_bytes()), purpose="vision").id,
                    sources))
            times["sdk_copy"].append(time.perf_counter() - started)
            _check_bulk(s, BULK_FILES)
            started = time.perf_counter()
            with ThreadPoolExecutor(BULK_THREADS) as pool:
                list(pool.map(client.files.delete, made))
            times["sdk_delete"].append(time.perf_counter() - started)
            _check_bulk(s, 0)
    finally:
        s.control.set_config(latency=0.0)
        client.close()
    samples = {key: Samples(values) for key, values in times.items()}
    case = f"{int(BULK_LATENCY * 1000)} ms per request"
    for number, what, ours, sdk, plain, label in (
            (11, "copy", "copy", "sdk_copy", "sync_copy",
             f"serial `cp` of {BULK_FILES} files of {BULK_SIZE // 1024} KiB + `sync DIR`"),
            (12, "delete", "delete", "sdk_delete", "sync_delete",
             f"serial `rm` of those {BULK_FILES} files + `sync DIR`")):
        ratio = samples[ours].median / samples[sdk].median
        raw = {"latency": BULK_LATENCY, "files": BULK_FILES,
               **{key: samples[key].as_dict() for key in (ours, sdk, plain)}, "ratio": ratio}
        s.add(Row(number, f"{label}, --write-back", case, samples[ours].seconds(),
                  f"SDK, {BULK_THREADS} threads: {samples[sdk].seconds()}", f"{ratio:.2f}x time",
                  "≤ 1.5x", verdict(ratio <= 1.5), raw))
        plain_ratio = samples[plain].median / samples[sdk].median
        s.add(Row(number, f"{label}, without --write-back", case, samples[plain].seconds(),
                  f"same SDK: {samples[sdk].seconds()}", f"{plain_ratio:.2f}x time", "none",
                  "INFO", {"ratio": plain_ratio}))


def _check_bulk(s: Suite, expected: int) -> None:
    """The benchmark measured real work: the server holds ``expected`` of its files."""
    files = [f for f in s.api.get("/files", params={"purpose": "vision"}).json()["data"]
             if f["filename"].startswith("doc-")]
    if len(files) != expected:
        raise HarnessError(f"expected {expected} files on the server, found {len(files)}")


BENCHMARKS: dict[str, tuple[int, Callable[[Suite], None]]] = {
    "cold-read": (1, bench_cold_read),
    "warm-reread": (2, bench_warm_reread),
    "ls": (3, bench_ls),
    "upload": (5, bench_upload),
    "parallel-upload": (6, bench_parallel_upload),
    "rss-growth": (7, bench_rss_growth),
    "windows": (8, bench_windows),
    "cpu": (9, bench_cpu),
    "cmp": (10, bench_cmp),
    "bulk": (11, bench_bulk),
    "rss": (4, bench_rss),
}


# -- output --------------------------------------------------------------------------------

def table(rows: list[Row]) -> str:
    header = ["#", "Benchmark", "Link", "openai-fs (median, min–max)", "Baseline", "Measure",
              "Target", "Result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in sorted(rows, key=lambda r: r.number):
        cells = [str(row.number), row.benchmark, row.case, row.ours, row.baseline, row.measure,
                 row.target, f"**{row.verdict}**"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def environment() -> dict:
    def output(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return ""
    return {"python": platform.python_version(), "kernel": platform.release(),
            "cpus": os.cpu_count(), "commit": output("git", "rev-parse", "HEAD"),
            "dirty": bool(output("git", "status", "--porcelain")),
            "curl": (output("curl", "--version").splitlines() or [""])[0]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smaller files, fewer repeats, two link speeds (under a minute)")
    parser.add_argument("--only", action="append", metavar="NAME", default=[],
                        help=f"run only these (repeatable or comma-separated): "
                             f"{', '.join(BENCHMARKS)}")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help="times each measurement is taken (default 3; --quick: 2, and 1 "
                             "for peak RSS)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (emulator data, local files)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(BENCHMARKS)}")
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every mount is unmounted and the emulator stopped
    signal.signal(signal.SIGTERM, _interrupt)
    profile = QUICK if args.quick else FULL
    if args.repeat:
        profile = Profile(**{**asdict(profile), "repeats": args.repeat,
                             "rss_repeats": args.repeat})
    selected = [name for name in BENCHMARKS if not args.only or name in args.only]
    for tool in ("curl", "fusermount3", "cat", "cp", "ls", "cmp", "head", "dd"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is needed", file=sys.stderr)
            return 1
    started = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    load_at_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="openai-fs-bench-"))
    failures: list[str] = []
    try:
        # permissive: the benchmarks measure reads of every purpose and with Range (DESIGN.md 5)
        with EmulatorProcess(tmp / "emulator", api_key=KEY, permissive=True) as emulator:
            suite = Suite(profile, tmp, emulator)
            cpus = os.cpu_count() or 1
            if load_at_start[0] > cpus / 2:
                suite.notes.append(f"the load average was {load_at_start[0]:.1f} on {cpus} CPUs "
                                   "when the run started: other processes competed for the CPU, "
                                   "so the spreads are wider than on an idle machine")
            print(f"emulator at {emulator.base_url}, data in {tmp}", flush=True)
            for name in selected:
                print(f"[{name}]", flush=True)
                began = time.perf_counter()
                number, bench = BENCHMARKS[name]
                try:
                    bench(suite)
                except Exception as exc:  # noqa: BLE001 - reported, the others still run
                    failures.append(f"{name}: {exc!r}")
                    traceback.print_exc()
                    suite.add(Row(number, name, "-", f"harness error: {exc!r}"[:200], "-", "-",
                                  "-", "ERROR", {"error": repr(exc)}))
                    try:
                        suite.set_speed(None)
                    except Exception:  # noqa: BLE001 - the emulator may be gone
                        pass
                print(f"  ({time.perf_counter() - began:.0f} s)", flush=True)
            suite.api.close()
    except Exception as exc:  # noqa: BLE001 - the harness itself
        traceback.print_exc()
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started

    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    env = {**environment(), "load_average_at_start": load_at_start,
           "load_average_at_end": os.getloadavg()}
    report = {"started": stamp, "seconds": elapsed, "quick": args.quick,
              "profile": asdict(profile), "cache_size": CACHE_SIZE, "rss_overhead": RSS_OVERHEAD,
              "environment": env, "rows": [asdict(r) for r in suite.rows],
              "notes": suite.notes, "mount_log_problems": suite.problems, "failures": failures}
    out = results / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    print()
    print(table(suite.rows))
    print()
    for note in suite.notes:
        print(f"note: {note}")
    for problem in suite.problems:
        print(f"mount log: {problem}")
    for failure in failures:
        print(f"ERROR {failure}")
    print(f"{len(suite.rows)} rows in {elapsed:.0f} s; raw results in {out.relative_to(ROOT)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
