"""``openai-fs mount``: check the credentials, mount, serve until unmounted.

The order of events: options and key are checked; the process forks unless ``-f`` (the parent
waits and exits 0 only once the mount is live, or 1 with the one-line reason why not); the
child checks the credentials with one listing call, builds the core
(:class:`~openai_fs.core.filesystem.FileSystem`), mounts, and serves FUSE requests
(:mod:`openai_fs.fuse.mounting`) until ``fusermount3 -u``, ``openai-fs unmount`` or a signal. SIGINT/SIGTERM wait for uploads in flight before unmounting (a second
signal does not wait); SIGUSR1 writes every thread's stack to the log.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import trio

from openai_fs import __version__
from openai_fs.api import APIError, AuthenticationError, FilesClient, PermissionDeniedError
from openai_fs.api.retry import RetryPolicy
from openai_fs.api.secret import Secret
from openai_fs.commands import allocator, logs
from openai_fs.commands.options import (
    MountOptions,
    OptionError,
    add_mount_arguments,
    from_arguments,
)
from openai_fs.commands.secrets import KeyFileError, key_from_environment, read_key_file
from openai_fs.core import readahead
from openai_fs.core.filesystem import CoreSettings, FileSystem
from openai_fs.core.private import UnsafeFolder, cache_root
from openai_fs.core.uploader import UploadSettings
from openai_fs.fuse import mounting
from openai_fs.fuse.kernel_cache import FuseKernelCache
from openai_fs.fuse.operations import Modes, Operations, Ownership

log = logging.getLogger(__name__)

DESCRIPTION = """\
Mount the OpenAI Files API on MOUNTPOINT: one directory per purpose (assistants/, batch/,
fine-tune/, vision/, user_data/, evals/ are writable; assistants_output/, batch_output/ and
fine-tune-results/ are read-only) and .by-id/<file-id> for any file by its id.

The key comes from OPENAI_API_KEY (or --api-key-file), the server from OPENAI_BASE_URL
(default https://api.openai.com/v1); OPENAI_ORG_ID and OPENAI_PROJECT_ID are sent when set.
The key is never accepted on the command line. --demo needs neither: it mounts the bundled
emulator with sample files. See man openai-fs and docs/SEMANTICS.md.
"""


class MountFailed(Exception):
    """The mount could not be made; the message is the one line the user sees."""


class Readiness:
    """Tells whoever started the mount that it is live, or why it is not."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def ready(self) -> None:
        self._send("ready")

    def failed(self, message: str) -> None:
        if self._fd is None:
            print(f"openai-fs mount: {message}", file=sys.stderr, flush=True)
        self._send(message)

    def _send(self, message: str) -> None:
        if self._fd is not None:
            os.write(self._fd, message.encode("utf-8", "replace"))
            os.close(self._fd)
            self._fd = None


def add_arguments(parser) -> None:
    add_mount_arguments(parser)


def run(args) -> int:
    try:
        options = from_arguments(args)
        check_mountpoint(options.mountpoint)
        key = Secret("demo") if options.demo else load_key(options)
    except (OptionError, MountFailed, KeyFileError) as exc:
        print(f"openai-fs mount: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, OptionError) else 1
    if options.foreground:
        return mount(options, key, Readiness(None))
    return _daemonize(options, key)


def load_key(options: MountOptions) -> Secret:
    if options.api_key_file is not None:
        return read_key_file(options.api_key_file)
    key = key_from_environment()
    if key is None:
        raise MountFailed("no API key: set OPENAI_API_KEY, or pass --api-key-file FILE "
                          "(or try --demo)")
    return key


def check_mountpoint(path: Path) -> None:
    if not path.is_dir():
        raise MountFailed(f"{path} is not a directory (create it first: mkdir -p {path})")
    if os.path.ismount(path):
        raise MountFailed(f"something is already mounted on {path}")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise MountFailed("cannot use /dev/fuse (is the fuse3 package installed, and may you "
                          "use FUSE?)")


def _daemonize(options: MountOptions, key: Secret) -> int:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child:
        os.close(write_end)
        chunks = []
        while chunk := os.read(read_end, 4096):
            chunks.append(chunk)
        os.close(read_end)
        os.waitpid(child, 0)
        message = b"".join(chunks).decode("utf-8", "replace")
        if message == "ready":
            return 0
        log_file = options.log_file or options.default_log_file
        print(f"openai-fs mount: {message or f'the mount process stopped; see {log_file}'}",
              file=sys.stderr)
        return 1
    # the child: a new session, then a grandchild that is the daemon
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    code = 1
    try:
        code = mount(options, key, Readiness(write_end))
    finally:
        os._exit(code)


def mount(options: MountOptions, key: Secret, readiness: Readiness) -> int:
    """Mount and serve until unmounted; returns the exit status."""
    log_file = options.log_file
    if log_file is None and not options.foreground:
        log_file = options.default_log_file
    problems = logs.setup(log_file=log_file, debug=options.debug, secret=key)
    crash_log = open(log_file, "a") if log_file else sys.stderr  # noqa: SIM115 - lives as long as we do
    faulthandler.enable(file=crash_log)
    faulthandler.register(signal.SIGUSR1, file=crash_log, all_threads=True)
    allocator.reuse_large_buffers()
    demo = None
    try:
        if options.demo:
            demo = DemoServer.start()
            options.cache_dir = demo.folder / "cache"
            client = FilesClient(api_key=key, base_url=demo.base_url, retry=_retry(options))
        else:
            client = FilesClient.from_environment(api_key=key, retry=_retry(options))
        return trio.run(_serve, options, client, readiness, problems)
    except MountFailed as exc:
        if log_file is not None:      # in the foreground the one line below says it
            log.error("%s", exc)
        readiness.failed(str(exc))
        return 1
    except BaseException as exc:
        log.exception("the mount stopped because of an internal error")
        readiness.failed(f"internal error: {exc!r}")
        return 1
    finally:
        if demo is not None:
            demo.stop()


def _retry(options: MountOptions) -> RetryPolicy:
    return RetryPolicy(max_retries=options.retries, timeout=options.timeout,
                       processing=options.processing_timeout)


async def _serve(options: MountOptions, client: FilesClient, readiness: Readiness,
                 problems: logs.RecentProblems) -> int:
    async with client:
        await _check_credentials(client)
        try:
            cache_dir = cache_root(options.cache_dir)
        except UnsafeFolder as exc:
            raise MountFailed(str(exc)) from None
        except OSError as exc:
            raise MountFailed(f"cannot use the cache folder {options.cache_dir}: "
                              f"{exc.strerror}") from None
        started = time.time()
        mountpoint = os.path.realpath(options.mountpoint)
        settings = CoreSettings(
            cache_dir=cache_dir, dir_ttl=options.dir_ttl, read_only=options.read_only,
            memory_cache_bytes=options.cache_size, disk_cache_bytes=options.disk_cache_size,
            not_downloadable=options.not_downloadable,
            uploads=UploadSettings(
                multipart_threshold=options.multipart_threshold, part_size=options.part_size,
                concurrency=options.upload_concurrency, expires_after=options.expires_after,
                early=not options.upload_on_close))
        async with trio.open_nursery() as nursery:
            core = FileSystem(client, settings, nursery=nursery, kernel=FuseKernelCache())
            try:
                await core.start()

                def status() -> dict[str, object]:
                    mounted = operations.mounted
                    return {"pid": os.getpid(), "version": __version__,
                            "mountpoint": mountpoint,
                            "server": client.base_url, "read_only": options.read_only,
                            "started": started, "uploads": core.files.statistics(),
                            "read_ahead": None if mounted is None
                            else readahead.window(mounted.device),
                            "cache": core.cache.statistics(),
                            "content_served": core.cache.access.as_dict(),
                            "requests": client.stats.as_dict(),
                            "open_files": operations.open_handles(),
                            "problems": list(problems.records)}

                operations = Operations(core, owner=Ownership(options.uid, options.gid),
                                        modes=Modes(options.file_mode, options.dir_mode,
                                                    options.umask),
                                        status=status)

                def mounted() -> None:
                    log.info("openai-fs %s: %s mounted on %s", __version__, client.base_url,
                             options.mountpoint)
                    readiness.ready()

                try:
                    await mounting.serve(
                        operations, options.mountpoint, read_ahead=options.read_ahead,
                        options=mounting.fuse_options(read_only=options.read_only,
                                                      allow_other=options.allow_other),
                        on_mounted=mounted)
                except mounting.MountError as exc:
                    raise MountFailed(str(exc)) from None
            finally:
                nursery.cancel_scope.cancel()
                core.close()
        log.info("unmounted %s", options.mountpoint)
    return 0


async def _check_credentials(client: FilesClient) -> None:
    """One listing call: the key, the server and the network, before anything is mounted."""
    try:
        await client.list_page(limit=1)
    except (AuthenticationError, PermissionDeniedError) as exc:
        raise MountFailed(f"the server refused the API key ({exc.status}: {exc.message})") \
            from None
    except APIError as exc:
        raise MountFailed(f"cannot list files at {client.base_url}: {exc}") from None


class DemoServer:
    """The bundled emulator with sample files, for ``--demo``: lives as long as the mount."""

    def __init__(self, folder: Path, process) -> None:
        self.folder = folder
        self._process = process
        self.base_url = process.base_url

    @classmethod
    def start(cls) -> DemoServer:
        from openai_fs.emulator.control import EmulatorProcess

        folder = Path(tempfile.mkdtemp(prefix="openai-fs-demo-"))
        process = EmulatorProcess(folder / "data", extra_args=["--seed-demo"])
        try:
            process.start()
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise MountFailed(f"cannot start the demo server: {exc}") from None
        log.info("demo: emulator with sample files at %s (data in %s)", process.base_url, folder)
        return cls(folder, process)

    def stop(self) -> None:
        self._process.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
