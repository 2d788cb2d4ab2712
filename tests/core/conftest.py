"""Fixtures of the core's unit tests: the fake Files API and the mount's parts wired to it,
as ``mount.py`` wires them, but without FUSE."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from openai_fs.api import FilesClient
from openai_fs.core.cache import ContentCache, DiskCache
from openai_fs.fuse.operations import Operations, Ownership
from openai_fs.core.namespace import Namespace
from openai_fs.core.uploads import UploadEngine, UploadSettings

from .fake_api import BASE_URL, FakeFilesAPI

MiB = 1024 * 1024
OWNER = Ownership(uid=1234, gid=5678)


@dataclass
class Core:
    fake: FakeFilesAPI
    client: FilesClient
    namespace: Namespace
    disk: DiskCache
    cache: ContentCache
    uploads: UploadEngine
    ops: Operations
    cache_dir: Path
    #: (parent inode, name) pairs reported through ``on_invalidate``
    invalidated: list[tuple[int, str]] = field(default_factory=list)

    def dir(self, purpose: str):
        return self.namespace.purpose_dirs[purpose]


@pytest.fixture
def fake() -> FakeFilesAPI:
    return FakeFilesAPI()


@pytest.fixture
async def make_core(fake, tmp_path, nursery):
    """``await make_core(**options)``: a Core over ``fake``; closed at the end of the test."""
    made: list[Core] = []

    async def build(*, dir_ttl: float = 30.0, read_only: bool = False,
                    memory_bytes: int = 16 * MiB, disk_bytes: int = 256 * MiB,
                    settings: UploadSettings | None = None, max_retries: int = 0,
                    cache_dir: Path | None = None) -> Core:
        cache_dir = cache_dir or tmp_path / "cache"
        client = fake.client(max_retries=max_retries)
        invalidated: list[tuple[int, str]] = []
        namespace = Namespace(client, dir_ttl=dir_ttl, read_only=read_only,
                              on_invalidate=lambda parent, name: invalidated.append(
                                  (parent, name)))
        disk = DiskCache(cache_dir, disk_bytes, server=BASE_URL)
        disk.scan()
        cache = ContentCache(client, memory_bytes=memory_bytes, disk=disk, nursery=nursery)
        uploads = UploadEngine(client, namespace, cache, settings or UploadSettings(), cache_dir)
        ops = Operations(namespace, cache, uploads, owner=OWNER)
        core = Core(fake, client, namespace, disk, cache, uploads, ops, cache_dir, invalidated)
        made.append(core)
        return core

    yield build
    for core in made:
        core.cache.close()
        core.uploads.close()
        await core.client.aclose()


@pytest.fixture
async def core(make_core) -> Core:
    return await make_core()
