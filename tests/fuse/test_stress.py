"""Load on one mount: 32 readers and writers at once (16 threads and 16 processes, plus real
``cat``/``cp`` programs) over a few hundred seeded files and the files they write.

What must hold afterwards: no operation failed or hung, every byte read is a byte that was
seeded or written, the server holds exactly the files the run meant to leave, the mount's peak
memory stayed within ``--cache-size`` plus a fixed overhead, and every handle and spool file
was released.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from checktools import MiB, live_files, peak_rss, server_sha256
from fusetools import upload_on_server, wait_for

#: the mount's memory cache, and its disk cache: smaller than the files the run reads, so it
#: evicts while files are open, and smaller than the large files, which are therefore read in
#: ranged blocks through the memory cache (6 x 24 MiB of them: an unbounded memory cache
#: would take more than the bound below)
CACHE_SIZE = 32 * MiB
DISK_CACHE_SIZE = 16 * MiB
#: Memory the mount may use beyond --cache-size. Measured on this run: an idle mount (Python,
#: trio, httpx, pyfuse3) peaks at 45 MB, and the run at 98-112 MB, i.e. 66-80 MB above the
#: 32 MB cache. What load adds is per request in flight, not per byte of file: a download
#: batches up to 1 MiB before writing it to disk, a ranged read holds its blocks twice (the
#: response buffer, then the blocks), httpcore reads 256 KiB at a time; about 2 MiB for each of
#: the 32 readers at most. 45 + 32 x 2 = 109, rounded up to 112 MB. The same run with an
#: unbounded memory cache (--cache-size 1G) peaks at 201 MB, so the bound catches that.
OVERHEAD = 112 * MiB
#: every wait on the workers is bounded by this (seconds); the run takes well under it
DEADLINE = 180

PURPOSES = ("assistants", "user_data", "vision", "evals")
#: where the files read by the load are seeded: purposes whose content the server hands out
#: (the emulator refuses assistants, user_data and evals content, as the real service does;
#: the files written by the load go to every purpose)
SEEDED_PURPOSES = ("vision", "batch")
SEEDED = 320
LARGE = 6
LARGE_SIZE = 24 * MiB
NEW_FILES = 120
CONTENDED = 6
WRITERS_PER_CONTENDED = 5
CONTENDED_SIZE = 32 * 1024
READS = 3           # whole reads of each seeded file
WORKERS = 16        # threads, and as many processes: 32 at once
BLOCK = 64 * 1024


# ----------------------------------------------------------------------- content

def content(tag: str, start: int, length: int) -> bytes:
    """Bytes ``[start, start+length)`` of the file ``tag``: pseudo-random, and computable for
    any range without making the whole file (workers check random reads of large files)."""
    pieces = []
    first, last = start // BLOCK, (start + length - 1) // BLOCK if length else start // BLOCK
    for index in range(first, last + 1):
        block = random.Random(f"{tag}:{index}").randbytes(BLOCK)
        lo = max(start - index * BLOCK, 0)
        hi = min(start + length - index * BLOCK, BLOCK)
        pieces.append(block[lo:hi])
    return b"".join(pieces)[:length]


def digest(tag: str, size: int) -> str:
    return hashlib.sha256(content(tag, 0, size)).hexdigest()


def seeded_size(n: int) -> int:
    if n % 40 == 0:
        return 0
    if n % 10 == 0:
        return 512 * 1024 + n * 3000            # medium: 0.5 to 1.4 MB
    return random.Random(n).randrange(1, 96 * 1024)


# ----------------------------------------------------------------------- workers
# Module-level, so the process pool can run them. Each returns a Counter of the operations it
# did and the problems it saw (a list of strings), never raises for a wrong byte.

def read_file(path: str, old: tuple[str, int], new: tuple[str, int] | None = None
              ) -> tuple[Counter, list[str]]:
    """Read a whole file in chunks of varying size. It must hold the bytes of ``old``; a file
    being rewritten as ``new`` meanwhile may also show what a reader of a local file could see:
    the old bytes up to some point, then the new bytes written so far."""
    ops: Counter = Counter()
    chunks = []
    rng = random.Random(path)
    with open(path, "rb", buffering=0) as handle:
        ops["open"] += 1
        while True:
            chunk = handle.read(rng.choice((4096, 65536, 131072, 1 << 20)))
            ops["read"] += 1
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    ops["bytes_read"] += len(data)
    if data == content(old[0], 0, old[1]):
        return ops, []
    if new is not None and len(data) <= new[1]:
        same = len(os.path.commonprefix([data, content(old[0], 0, len(data))]))
        if data[same:] == content(new[0], same, len(data) - same):
            return ops, []
    return ops, [f"{path}: read {len(data)} bytes that are not the file's "
                 f"({old[1]} bytes{f' or {new[1]} being written' if new else ''}); "
                 f"its 4 KiB pages: {pages(data, old, new)}"]


def pages(data: bytes, old: tuple[str, int], new: tuple[str, int] | None) -> str:
    """Which 4 KiB pages of a wrong read match which version (o: old, n: new, 0: zeros)."""
    shown = []
    for start in range(0, len(data), 4096):
        page = data[start:start + 4096]
        if page == content(old[0], start, len(page)):
            shown.append("o")
        elif new is not None and page == content(new[0], start, len(page)):
            shown.append("n")
        else:
            shown.append("0" if not page.strip(b"\0") else "?")
    return "".join(shown)


def read_ranges(path: str, tag: str, size: int, count: int, seed: int
                ) -> tuple[Counter, list[str]]:
    """Random ``pread`` calls far into a large file, each checked against its content."""
    ops: Counter = Counter()
    problems = []
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    ops["open"] += 1
    try:
        for _ in range(count):
            length = rng.choice((1, 4096, 100_000, 1 << 20))
            offset = rng.randrange(0, size - length)
            data = os.pread(fd, length, offset)
            ops["read"] += 1
            ops["bytes_read"] += len(data)
            if data != content(tag, offset, length):
                problems.append(f"{path}: pread({length}, {offset}) returned other bytes")
    finally:
        os.close(fd)
    return ops, problems


def write_file(path: str, tag: str, size: int, verify: bool = True
               ) -> tuple[Counter, list[str]]:
    """Write a file in chunks (``open`` with O_TRUNC), close it, and read it back."""
    ops: Counter = Counter()
    data = content(tag, 0, size)
    step = random.Random(tag).choice((4096, 65536, 200_000))
    with open(path, "wb", buffering=0) as handle:
        ops["open"] += 1
        for start in range(0, len(data), step):
            handle.write(data[start:start + step])
            ops["write"] += 1
    ops["bytes_written"] += size
    if not verify:
        return ops, []
    back, problems = read_file(path, (tag, size))
    return ops + back, problems


def write_once(path: str, tag: str) -> tuple[Counter, list[str]]:
    """One ``write`` of the whole content (a file several writers replace at once)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written = os.write(fd, content(tag, 0, CONTENDED_SIZE))
    finally:
        os.close(fd)
    problems = [] if written == CONTENDED_SIZE else [f"{path}: short write of {written}"]
    return Counter(open=1, write=1, bytes_written=written), problems


def list_and_stat(folder: str, stable: dict[str, int]) -> tuple[Counter, list[str]]:
    """``ls -l`` of a purpose: every file that exists all run long is listed with its size."""
    ops: Counter = Counter()
    names = set(os.listdir(folder))
    ops["listdir"] += 1
    problems = [f"{folder}: {name} is not listed" for name in stable if name not in names]
    for name, size in list(stable.items())[:40]:
        info = os.stat(os.path.join(folder, name))
        ops["stat"] += 1
        if info.st_size != size:
            problems.append(f"{folder}/{name}: st_size {info.st_size}, expected {size}")
    return ops, problems


def run_program(command: list[str], check: tuple[str, str] | None = None
                ) -> tuple[Counter, list[str]]:
    """A real program (``cp``, ``cat``); ``check`` = (file it wrote, expected sha256)."""
    result = subprocess.run(command, capture_output=True, timeout=DEADLINE)
    ops = Counter(program=1)
    if result.returncode != 0:
        return ops, [f"{command}: exit {result.returncode}: {result.stderr!r}"]
    if check is not None:
        data = Path(check[0]).read_bytes() if check[0] != "-" else result.stdout
        if hashlib.sha256(data).hexdigest() != check[1]:
            return ops, [f"{command}: wrong bytes"]
    return ops, []


def warm_up() -> int:
    return os.getpid()


# -------------------------------------------------------------------------- test

def test_32_readers_and_writers_at_once_over_hundreds_of_files(mount, emulator, tmp_path):
    started = time.monotonic()
    seeded = seed_files(emulator)
    ids_before = {(f["purpose"], f["filename"]): f["id"] for f in live_files(emulator)}
    assert len(ids_before) == SEEDED + LARGE
    mounted = mount("--cache-size", str(CACHE_SIZE), "--disk-cache-size",
                    str(DISK_CACHE_SIZE), "--dir-ttl", "1")

    # what each file must hold at the end
    rng = random.Random(2024)
    small = [key for key, (tag, size) in seeded.items()
             if size < 128 * 1024 and tag.startswith("seed")]
    overwritten = {key: (f"over-{key[1]}", rng.randrange(1, 200_000))
                   for key in rng.sample(small, 40)}
    new_files = {(PURPOSES[n % len(PURPOSES)], f"new-{n:03}.dat"):
                 (f"new{n}", rng.choice((0, 1, 1000, 70_000, 300_000, 1_500_000)))
                 for n in range(NEW_FILES)}
    contended = {("assistants", f"contended-{n}.bin"):
                 [f"contended{n}-{w}" for w in range(WRITERS_PER_CONTENDED)]
                 for n in range(CONTENDED)}
    tasks = plan(mounted.path, tmp_path, seeded, overwritten, new_files, contended)

    load_started = time.monotonic()
    totals = run_at_once(tasks, mounted)
    load_seconds = time.monotonic() - load_started
    assert mounted.process.poll() is None, "the mount died"
    peak = peak_rss(mounted.process.pid)

    # every handle, spool file and transfer was released, and nothing failed
    status = wait_for(lambda: (s := mounted.status())["open_files"] == 0 and s,
                      timeout=30, message="every handle to be released")
    spool = Path(status["uploads"]["spool_dir"])
    wait_for(lambda: not any(spool.iterdir()), timeout=30, message=f"{spool} to be empty")
    assert status["uploads"]["in_flight"] == [] and status["uploads"]["failed"] == []
    unsent = mounted.cache_dir / "unsent"
    assert not unsent.exists() or not any(unsent.iterdir())
    assert status["cache"]["memory_bytes"] <= CACHE_SIZE
    assert status["cache"]["disk_bytes"] <= DISK_CACHE_SIZE

    # the server holds exactly the intended files, with the intended bytes
    expected = {key: digest(*value) for key, value in {**seeded, **overwritten,
                                                        **new_files}.items()}
    on_server = live_files(emulator)
    names = Counter((f["purpose"], f["filename"]) for f in on_server)
    assert [key for key, count in names.items() if count > 1] == []
    assert set(names) == set(expected) | set(contended)
    for made in on_server:
        key = (made["purpose"], made["filename"])
        found = server_sha256(emulator, made["id"])
        if key in contended:
            assert found in {digest(tag, CONTENDED_SIZE) for tag in contended[key]}, key
        else:
            assert found == expected[key], key
        if key in ids_before and key not in overwritten:
            assert made["id"] == ids_before[key], f"{key} was uploaded again"
    assert [u for u in emulator.control.state()["uploads"] if u["status"] == "pending"] == []
    for purpose in set(PURPOSES) | set(SEEDED_PURPOSES):       # and the mount shows the same
        assert sorted(os.listdir(mounted / purpose)) == \
            sorted(name for p, name in names if p == purpose)

    operations = sum(count for kind, count in totals.items() if not kind.startswith("bytes"))
    kinds = {k: v for k, v in sorted(totals.items()) if not k.startswith("bytes")}
    print(f"\nstress: {len(tasks)} tasks by {WORKERS} threads and {WORKERS} processes, "
          f"{operations} operations {kinds}, {totals['bytes_read'] / MiB:.0f} MiB read, "
          f"{totals['bytes_written'] / MiB:.0f} MiB written; load {load_seconds:.1f} s, "
          f"test {time.monotonic() - started:.1f} s; peak RSS {peak / MiB:.1f} MiB, bound "
          f"{(CACHE_SIZE + OVERHEAD) / MiB:.0f} MiB")
    assert peak <= CACHE_SIZE + OVERHEAD, \
        f"peak RSS {peak / MiB:.1f} MiB, over --cache-size {CACHE_SIZE / MiB:.0f} MiB + " \
        f"{OVERHEAD / MiB:.0f} MiB"


def seed_files(emulator) -> dict[tuple[str, str], tuple[str, int]]:
    """SEEDED small and medium files over the seeded purposes, and LARGE large ones in vision;
    returns (purpose, name) -> (content tag, size)."""
    seeded = {}
    batch: list[dict] = []
    for n in range(SEEDED):
        purpose, size = SEEDED_PURPOSES[n % len(SEEDED_PURPOSES)], seeded_size(n)
        name = f"seed-{n:03}.jsonl"         # a name batch takes
        seeded[(purpose, name)] = (f"seed{n}", size)
        batch.append({"filename": name, "purpose": purpose,
                      "content": content(f"seed{n}", 0, size)})
        if sum(len(item["content"]) for item in batch) > 4 * MiB or n == SEEDED - 1:
            emulator.control.seed_files(batch)          # the control API takes 16 MB a call
            batch = []
    for n in range(LARGE):
        seeded[("vision", f"large-{n}.bin")] = (f"large{n}", LARGE_SIZE)
        upload_on_server(emulator, f"large-{n}.bin", "vision",
                         content(f"large{n}", 0, LARGE_SIZE))
    return seeded


def plan(root: Path, tmp_path: Path, seeded: dict, overwritten: dict, new_files: dict,
         contended: dict) -> list[tuple]:
    """Every task of the run, shuffled: reads of every seeded file (READS times; ranged reads
    of the large ones), the rewrites, the new files (every tenth by a real cp), the contended
    replacements, listings, and real cat and cp of seeded files."""
    outside = tmp_path / "outside"
    outside.mkdir()
    tasks: list[tuple] = []
    for (purpose, name), old in seeded.items():
        path = str(root / purpose / name)
        if name.startswith("large"):
            tasks += [(read_ranges, path, *old, 12, len(tasks) + k) for k in range(6)]
            tasks.append((read_file, path, old))
        else:
            tasks += [(read_file, path, old, overwritten.get((purpose, name)))] * READS
    for (purpose, name), (tag, size) in overwritten.items():
        tasks.append((write_file, str(root / purpose / name), tag, size, False))
    for n, ((purpose, name), (tag, size)) in enumerate(new_files.items()):
        if n % 10 == 9:
            source = outside / f"src-{n}"
            source.write_bytes(content(tag, 0, size))
            tasks.append((run_program, ["cp", str(source), str(root / purpose / name)]))
        else:
            tasks.append((write_file, str(root / purpose / name), tag, size))
    for (purpose, name), tags in contended.items():
        tasks += [(write_once, str(root / purpose / name), tag) for tag in tags]
    for purpose in SEEDED_PURPOSES:
        stable = {name: size for (p, name), (_, size) in seeded.items()
                  if p == purpose and (p, name) not in overwritten}
        tasks += [(list_and_stat, str(root / purpose), stable)] * 8
    for n, ((purpose, name), (tag, size)) in enumerate(list(seeded.items())[:12]):
        if (purpose, name) in overwritten:
            continue
        if n % 2:
            tasks.append((run_program, ["cat", str(root / purpose / name)],
                          ("-", digest(tag, size))))
        else:
            copy = outside / f"copy-{n}"
            tasks.append((run_program, ["cp", str(root / purpose / name), str(copy)],
                          (str(copy), digest(tag, size))))
    random.Random(7).shuffle(tasks)
    return tasks


def run_at_once(tasks: list[tuple], mounted) -> Counter:
    """Run the tasks on WORKERS threads and WORKERS processes at once; every problem they
    report fails the test, and so does any task still running after DEADLINE seconds."""
    totals: Counter = Counter()
    problems: list[str] = []
    threads = concurrent.futures.ThreadPoolExecutor(WORKERS)
    processes = concurrent.futures.ProcessPoolExecutor(
        WORKERS, mp_context=multiprocessing.get_context("spawn"))
    try:
        # every worker process is started first, so the load really is 32 at once
        [f.result(timeout=60) for f in [processes.submit(warm_up) for _ in range(WORKERS)]]
        futures = {}
        for index, (function, *args) in enumerate(tasks):
            pool = threads if index % 2 else processes
            futures[pool.submit(function, *args)] = (function.__name__, args[0])
        done, pending = concurrent.futures.wait(futures, timeout=DEADLINE)
        if pending:
            mounted.process.send_signal(signal.SIGUSR1)     # every thread's stack to the log
            time.sleep(1)
            mounted.expect_log(".")       # the hang is the finding; its log is for reading
            mounted.kill()                # ends the system calls that hang
            raise AssertionError(
                f"{len(pending)} of {len(futures)} tasks did not finish within {DEADLINE} s, "
                f"e.g. {[futures[f] for f in pending][:5]}; stacks in {mounted.log_file}")
        for future in done:
            try:
                ops, found = future.result()
            except OSError as exc:
                problems.append(f"{futures[future]}: {exc!r}")
                continue
            totals.update(ops)
            problems += found
    finally:
        threads.shutdown(wait=False, cancel_futures=True)
        processes.shutdown(wait=False, cancel_futures=True)
    assert problems == [], f"{len(problems)} problems, e.g.:\n" + "\n".join(problems[:20])
    return totals


# ------------------------------------------- the races the load test can meet, made certain

def test_a_reader_opened_before_a_replacement_reads_the_old_or_the_new_bytes(mount, seed):
    """A descriptor opened for reading before another one replaces the file must read one
    whole version: the old bytes (as after rm, see SEMANTICS section 9) or the new ones (as on
    a local disk), never a file that never existed."""
    old = content("old", 0, 30_000)
    seed("report.bin", "evals", old)
    mounted = mount()
    path = mounted / "evals" / "report.bin"
    reader = os.open(path, os.O_RDONLY)
    try:
        writer = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(writer, b"N" * 10_000)
            while_written = os.pread(reader, 65536, 0)
        finally:
            os.close(writer)
        after_close = os.pread(reader, 65536, 0)
    finally:
        os.close(reader)
    new = b"N" * 10_000
    assert path.read_bytes() == new

    def version(seen: bytes) -> str:
        if seen in (old, new):
            return "old" if seen == old else "new"
        if seen == old[:len(seen)]:
            return f"the first {len(seen)} of the old file's {len(old)} bytes"
        return f"{len(seen)} bytes of neither"

    assert version(while_written) in ("old", "new")
    assert version(after_close) in ("old", "new")


def test_replacing_a_file_while_its_upload_is_in_flight_fails_neither_writer(
        mount, emulator):
    """Two writers of one file (here: the second opens it with O_TRUNC while the first one's
    close is uploading it) both succeed, as on a local disk, and the file ends with the bytes
    of the last close."""
    mounted = mount()
    emulator.control.set_config(bandwidth=4 * MiB)       # the first upload takes ~4 s
    path = mounted / "user_data" / "shared.bin"
    outcome: dict[str, object] = {}

    def first_writer() -> None:
        try:
            with open(path, "wb") as handle:
                handle.write(b"A" * (16 * MiB))
            outcome["first"] = "closed"
        except OSError as exc:
            outcome["first"] = exc

    thread = threading.Thread(target=first_writer)
    thread.start()
    try:
        wait_for(lambda: any(t["bytes_sent"] for t in
                             mounted.status()["uploads"]["in_flight"]),
                 timeout=30, message="the first writer's upload to start")
        try:
            with open(path, "wb") as handle:
                handle.write(b"second")
            outcome["second"] = "closed"
        except OSError as exc:
            outcome["second"] = exc
    finally:
        thread.join(timeout=60)
    mounted.expect_log(r"upload of user_data/shared.bin failed")   # asserted below instead
    assert outcome == {"first": "closed", "second": "closed"}
    made = [f for f in live_files(emulator, "user_data") if f["filename"] == "shared.bin"]
    assert len(made) == 1 and server_sha256(emulator, made[0]["id"]) == \
        hashlib.sha256(b"second").hexdigest()
    assert not (mounted.cache_dir / "unsent").exists()
    assert "failed" not in mounted.log()
