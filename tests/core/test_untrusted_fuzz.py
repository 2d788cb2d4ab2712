"""Listings and file objects from a server that cannot be trusted, fuzzed with Hypothesis
(issue 14 item 2; docs/SEMANTICS.md, "What the mount trusts"): every server-controlled field
of a page and of its entries (id, filename, purpose, bytes, created_at, expires_at, status,
has_more, first_id, last_id) takes hostile values, and the whole core is driven through the
FUSE adapter (opendir, readdir, lookup, getattr, getxattr, open, read) over an in-process
server (httpx.MockTransport).

Asserted for every example: no exception escapes but a FUSE errno (and none is a bug logged
with a traceback), nothing is created outside the cache folder, and every sound entry the
server listed is visible under a name of its own.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import httpx
import pyfuse3
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openai_fs.api import FilesClient, RetryPolicy
from openai_fs.api.secret import Secret
from openai_fs.core.filesystem import CoreSettings, FileSystem
from openai_fs.core.namespace import BY_ID_INODE
from openai_fs.fuse.operations import Operations, Ownership

PURPOSE = "batch"
SOUND_ID = re.compile(r"file-sound-\d+")

# values a broken or hostile server may put anywhere
junk = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                 st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
hostile_ids = st.one_of(
    st.sampled_from(["../../../escaped", "../../escaped", "..", ".", "", "a/b", "nul\x00id",
                     "/etc/passwd", "x" * 10_240, "file-%2e%2e", " file", "file-ü",
                     "file-a?b=c", "file-a#b", "file-\u202e", "file-\ud800"]),
    st.from_regex(r"h-[A-Za-z0-9_-]{1,20}", fullmatch=True),   # usable, never a sound one
    st.text(max_size=40), junk)
hostile_names = st.one_of(
    st.sampled_from([".", "..", "", "/", "a/b", "\x00", "．", "‛／", "n" * 300,
                     "n" * 100_000, "../../escaped", "\ud800.txt"]),
    st.text(max_size=60), junk)
hostile_numbers = st.one_of(st.integers(min_value=-2 ** 64, max_value=2 ** 64),
                            st.sampled_from([0, -5, 1.5, 1e300, float("nan"), "12",
                                             "yesterday", True, None]), junk)


@st.composite
def hostile_entries(draw):
    entry = {"id": draw(hostile_ids), "object": "file"}
    for name, values in (("filename", hostile_names), ("purpose", st.one_of(
            st.just(PURPOSE), st.text(max_size=30), junk)), ("bytes", hostile_numbers),
            ("created_at", hostile_numbers), ("expires_at", hostile_numbers),
            ("status", st.one_of(st.just("processed"), st.text(max_size=10), junk))):
        if draw(st.booleans()):
            entry[name] = draw(values)
    return draw(st.one_of(st.just(entry), junk))


@st.composite
def listings(draw):
    """Pages of a listing: each a mix of sound entries (unique ids, sound fields) and hostile
    ones, with hostile paging fields."""
    counter = iter(range(10_000))
    pages = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        data = []
        for _ in range(draw(st.integers(min_value=0, max_value=6))):
            if draw(st.booleans()):
                number = next(counter)
                data.append({"id": f"file-sound-{number}", "object": "file",
                             "bytes": draw(st.integers(min_value=0, max_value=64)),
                             "created_at": draw(st.integers(min_value=0, max_value=2 ** 32)),
                             "filename": draw(st.one_of(st.text(max_size=30),
                                                        st.sampled_from(["same.jsonl"]))),
                             "purpose": PURPOSE, "status": "processed"})
            else:
                data.append(draw(hostile_entries()))
        page = {"object": "list", "data": data}
        for name, values in (("has_more", st.one_of(st.booleans(), junk)),
                             ("first_id", hostile_ids), ("last_id", hostile_ids)):
            if draw(st.integers(min_value=0, max_value=3)):
                page[name] = draw(values)
        pages.append(page)
    return pages


class Server:
    """Serves the pages in order (whatever ``after`` says, as a broken server may), a
    hostile object for ``GET /files/{id}``, and content of the right length for sound ids."""

    def __init__(self, pages: list, retrieved) -> None:
        self.pages = pages
        self.retrieved = retrieved
        self.served: list[int] = []
        self.sizes = {entry["id"]: entry["bytes"] for page in pages for entry in page["data"]
                      if isinstance(entry, dict) and SOUND_ID.fullmatch(str(entry.get("id")))}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/files":
            index = min(len(self.served), len(self.pages) - 1)
            self.served.append(index)
            return httpx.Response(200, content=json.dumps(self.pages[index]).encode())
        match = re.fullmatch(r"/v1/files/([^/]+)(/content)?", path)
        if match and match.group(2) and match.group(1) in self.sizes:
            return httpx.Response(200, content=b"x" * self.sizes[match.group(1)])
        if match and not match.group(2):
            body = dict(self.retrieved) if isinstance(self.retrieved, dict) else self.retrieved
            if isinstance(body, dict) and body.get("id") == "<asked>":
                body["id"] = match.group(1)
            return httpx.Response(200, content=json.dumps(body).encode())
        return httpx.Response(404, json={"error": {"message": "No such File object",
                                                   "type": "invalid_request_error",
                                                   "param": "id", "code": None}})


class Token:
    def __init__(self) -> None:
        self.entries: list[tuple[bytes, int, int]] = []


def readdir_reply(token: Token, name: bytes, attr, next_id: int) -> bool:
    assert isinstance(name, bytes) and 0 < len(name) <= 255 and b"/" not in name \
        and b"\0" not in name and name not in (b".", b"..")
    token.entries.append((name, attr.st_ino, next_id))
    return True


class Bugs(logging.Handler):
    """Records log lines of failures nobody foresaw (the adapter's 'failed unexpectedly')."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "unexpectedly" in record.getMessage():
            self.found.append(self.format(record))


async def fuse(call):
    """Run an adapter handler: a FUSE errno is a fine answer, anything else is a bug."""
    try:
        return await call
    except pyfuse3.FUSEError as exc:
        assert exc.errno in (errno.EIO, errno.ENOENT, errno.E2BIG, errno.ENAMETOOLONG,
                             errno.EACCES, pyfuse3.ENOATTR, errno.EINVAL), exc.errno
        return exc


async def drive(sandbox: Path, server: Server, by_id: list) -> list[tuple[str, int]]:
    client = FilesClient(api_key=Secret("sk-fuzz"), base_url="http://fuzz/v1",
                         transport=httpx.MockTransport(server),
                         retry=RetryPolicy(max_retries=0, timeout=5))
    visible: list[tuple[str, int]] = []
    async with client, trio.open_nursery() as nursery:
        fs = FileSystem(client, CoreSettings(cache_dir=sandbox / "cache"), nursery=nursery,
                        background_uploads=False)
        try:
            fs.disk.scan()
            ops = Operations(fs, owner=Ownership(1000, 1000))
            folder = fs.namespace.purpose_dirs[PURPOSE]
            fh = await fuse(ops.opendir(folder.inode, None))
            if isinstance(fh, int):
                token = Token()
                while True:     # as the kernel does: until a call adds nothing, or fails
                    start = token.entries[-1][2] if token.entries else 0
                    before = len(token.entries)
                    if isinstance(await fuse(ops.readdir(fh, start, token)), Exception) \
                            or len(token.entries) == before:
                        break
                await ops.releasedir(fh)
                for name, inode, _ in token.entries:
                    node = fs.namespace.node(inode)
                    visible.append((name.decode("utf-8", "surrogatepass"),
                                    node.file.id if node.file else ""))
                    found = await fuse(ops.lookup(folder.inode, name, None))
                    assert isinstance(found, Exception) or found.st_ino == inode
                    await fuse(ops.getattr(inode, None))
                    for attribute in await ops.listxattr(inode, None):
                        await fuse(ops.getxattr(inode, attribute, None))
                    opened = await fuse(ops.open(inode, os.O_RDONLY, None))
                    if not isinstance(opened, Exception):
                        await fuse(ops.read(opened.fh, 0, 4096))
                        await ops.release(opened.fh)
            for name in by_id:
                await fuse(ops.lookup(BY_ID_INODE, name, None))
        finally:
            nursery.cancel_scope.cancel()
            fs.close()
    return visible


def assert_only_the_cache_folder(sandbox: Path) -> None:
    for root, dirs, files in os.walk(sandbox):
        for name in dirs + files:
            path = Path(root, name)
            assert path == sandbox / "cache" or (sandbox / "cache") in path.parents, path


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(pages=listings(), retrieved=st.one_of(hostile_entries(), st.fixed_dictionaries(
           {"id": st.just("<asked>"), "bytes": hostile_numbers, "filename": hostile_names,
            "purpose": st.one_of(st.just(PURPOSE), junk), "created_at": hostile_numbers})),
       by_id=st.lists(st.one_of(st.sampled_from([b"file-sound-0", b"h-x", b"..", b"a\xffb",
                                                 b"x" * 300, b"file-a?b"]),
                                st.binary(min_size=1, max_size=40).filter(
                                    lambda b: b"/" not in b and b"\0" not in b)), max_size=3))
def test_no_server_answer_escapes_the_mount_or_hides_a_sound_entry(monkeypatch, pages,
                                                                  retrieved, by_id):
    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)
    bugs = Bugs()
    logger = logging.getLogger("openai_fs")
    logger.addHandler(bugs)
    sandbox = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        server = Server(pages, retrieved)
        visible = trio.run(drive, sandbox, server, by_id)
        assert bugs.found == []
        assert_only_the_cache_folder(sandbox)
        # every sound entry of a page the walk fetched is shown, under a name of its own
        fetched = {entry["id"] for index in set(server.served)
                   for entry in pages[index]["data"]
                   if isinstance(entry, dict) and SOUND_ID.fullmatch(str(entry.get("id")))}
        shown = [file_id for _, file_id in visible]
        assert fetched <= set(shown), (fetched - set(shown), visible)
        assert len({name for name, _ in visible}) == len(visible)
    finally:
        logger.removeHandler(bugs)
        shutil.rmtree(sandbox, ignore_errors=True)


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '{"data": 5}', '{"data": null}', "null"])
def test_a_page_that_is_not_a_listing_is_eio_and_nothing_else(monkeypatch, raw):
    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)
    sandbox = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        handler = lambda request: httpx.Response(200, content=raw.encode())  # noqa: E731

        async def run() -> None:
            client = FilesClient(api_key=Secret("sk-fuzz"), base_url="http://fuzz/v1",
                                 transport=httpx.MockTransport(handler),
                                 retry=RetryPolicy(max_retries=0))
            async with client, trio.open_nursery() as nursery:
                fs = FileSystem(client, CoreSettings(cache_dir=sandbox / "cache"),
                                nursery=nursery, background_uploads=False)
                try:
                    ops = Operations(fs, owner=Ownership(1000, 1000))
                    with pytest.raises(pyfuse3.FUSEError) as caught:
                        await ops.opendir(fs.namespace.purpose_dirs[PURPOSE].inode, None)
                    assert caught.value.errno == errno.EIO
                finally:
                    nursery.cancel_scope.cancel()
                    fs.close()

        trio.run(run)
        assert_only_the_cache_folder(sandbox)
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
