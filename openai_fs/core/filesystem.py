"""The core of one mount, wired together: the namespace, the content caches, the spool, the
uploads and the open files, over one API client. The FUSE adapter is built on top of it;
tests build it without FUSE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import trio

from openai_fs.api import FilesClient
from openai_fs.core import purposes
from openai_fs.core.cache import ContentCache
from openai_fs.core.disk_cache import DiskCache
from openai_fs.core.changes import ServerChanges
from openai_fs.core.content_access import ContentAccess
from openai_fs.core.kernel_cache import KernelCache
from openai_fs.core.local_only import LocalOnly
from openai_fs.core.namespace import Namespace
from openai_fs.core.open_files import OpenFiles
from openai_fs.core.spool import Spool
from openai_fs.core.uploader import Uploader, UploadSettings
from openai_fs.core.write_back import WriteBack

log = logging.getLogger(__name__)


@dataclass
class CoreSettings:
    #: folder of the disk cache, the spool and unsent/
    cache_dir: Path
    dir_ttl: float = 30.0
    read_only: bool = False
    memory_cache_bytes: int = 256 * purposes.MiB
    disk_cache_bytes: int = 4 * purposes.GiB
    uploads: UploadSettings = field(default_factory=UploadSettings)
    #: purposes whose content the server is known not to hand out (never asked for)
    not_downloadable: tuple[str, ...] = ()
    #: close() and rm return once journaled; uploads and deletes go on in the background
    write_back: bool = False
    #: more names kept local (never uploaded), and whether the default ones are
    local_only: tuple[str, ...] = ()
    local_only_defaults: bool = True


class FileSystem:
    """Every part of the core of a mount. ``nursery`` runs downloads; background uploads
    (early uploads, deferred temporary files) run in it too unless ``background_uploads`` is
    off (then files are only sent when closed, and nothing is deferred)."""

    def __init__(self, client: FilesClient, settings: CoreSettings, *, nursery: trio.Nursery,
                 kernel: KernelCache | None = None, background_uploads: bool = True) -> None:
        uploads_nursery = nursery if background_uploads else None
        self.client = client
        self.settings = settings
        self.namespace = Namespace(client, dir_ttl=settings.dir_ttl,
                                   read_only=settings.read_only, kernel=kernel)
        self.disk = DiskCache(settings.cache_dir, settings.disk_cache_bytes,
                              server=client.base_url)
        access = ContentAccess(refused=settings.not_downloadable,
                               on_refused=self.namespace.forget_attributes_of)
        self.cache = ContentCache(client, memory_bytes=settings.memory_cache_bytes,
                                  disk=self.disk, nursery=nursery, access=access)
        self.spool = Spool(settings.cache_dir, account=client.account)
        self.uploader = Uploader(client, settings.uploads, uploads_nursery)
        self.changes = ServerChanges(client, self.namespace, self.cache, self.uploader,
                                     self.spool)
        self.files = OpenFiles(self.namespace, self.cache, self.spool, self.uploader,
                               self.changes, uploads_nursery,
                               local_only=LocalOnly(settings.local_only,
                                                    defaults=settings.local_only_defaults))
        self.write_back = WriteBack(self.files, self.spool.journal, enabled=settings.write_back,
                                    concurrency=settings.uploads.concurrency)
        self.files.write_back = self.write_back
        self._nursery = nursery

    async def start(self) -> None:
        """Index the disk cache (a scan of its folder, in a thread) and cancel the Uploads
        that dead mounts left open (in the background)."""
        await trio.to_thread.run_sync(self.disk.scan)
        self._nursery.start_soon(self.uploader.cancel_abandoned_uploads,
                                 self.spool.abandoned_uploads)
        resumed = self.spool.resumed
        for record in resumed:
            try:
                self.files.resume(record)
            except (OSError, KeyError, TypeError, ValueError) as exc:
                # a record this mount cannot read: kept where it is, said once
                log.warning("cannot resume the journal record %s (%s); it is left in place",
                            record.path, exc)
        if resumed:
            uploads = sum(1 for record in resumed if record.op == "upload")
            log.info("resuming what a mount of this account that stopped had journaled: "
                        "%d upload(s) and %d delete(s)", uploads, len(resumed) - uploads)
        self._nursery.start_soon(self.write_back.run)

    def close(self) -> None:
        self.cache.close()
        self.spool.close()
