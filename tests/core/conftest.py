"""Fixtures of the core's unit tests: the fake Files API and the mount's core wired to it, as
``openai-fs mount`` wires it (:class:`openai_fs.core.filesystem.FileSystem`), with the FUSE
adapter on top but no kernel."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from openai_fs.api import FilesClient
from openai_fs.core.filesystem import CoreSettings, FileSystem
from openai_fs.core.uploader import UploadSettings
from openai_fs.fuse.operations import Operations, Ownership

from .fake_api import FakeFilesAPI

MiB = 1024 * 1024
OWNER = Ownership(uid=1234, gid=5678)


class RecordingKernelCache:
    """Stands for the kernel: records what the core asked it to forget."""

    def __init__(self) -> None:
        #: (parent inode, name) pairs the core said went away
        self.names: list[tuple[int, str]] = []
        self.attributes: list[int] = []

    def forget_name(self, parent_inode: int, name: str) -> None:
        self.names.append((parent_inode, name))

    def forget_attributes(self, inode: int) -> None:
        self.attributes.append(inode)


@dataclass
class Core:
    fake: FakeFilesAPI
    client: FilesClient
    fs: FileSystem
    ops: Operations
    cache_dir: Path
    kernel: RecordingKernelCache = field(default_factory=RecordingKernelCache)

    def __getattr__(self, name: str):
        # the parts of the core: namespace, disk, cache, spool, uploader, changes, files
        return getattr(self.fs, name)

    @property
    def invalidated(self) -> list[tuple[int, str]]:
        return self.kernel.names

    def dir(self, purpose: str):
        return self.fs.namespace.purpose_dirs[purpose]


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
                    cache_dir: Path | None = None, write_back: bool = False) -> Core:
        cache_dir = cache_dir or tmp_path / "cache"
        client = fake.client(max_retries=max_retries)
        kernel = RecordingKernelCache()
        fs = FileSystem(client, CoreSettings(
            cache_dir=cache_dir, dir_ttl=dir_ttl, read_only=read_only,
            memory_cache_bytes=memory_bytes, disk_cache_bytes=disk_bytes,
            uploads=settings or UploadSettings(), write_back=write_back), nursery=nursery,
            kernel=kernel, background_uploads=False)
        fs.disk.scan()
        core = Core(fake, client, fs, Operations(fs, owner=OWNER), cache_dir, kernel)
        made.append(core)
        return core

    yield build
    for core in made:
        core.fs.close()
        await core.client.aclose()


@pytest.fixture
async def core(make_core) -> Core:
    return await make_core()
