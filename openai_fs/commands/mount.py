"""``openai-fs mount``: check the credentials, mount, serve until unmounted.

The order of events: options, mount point (empty, unless ``--allow-non-empty``) and key are
checked; the process forks unless ``-f`` (the parent waits, prints the daemon's lines of
progress, and exits 0 once the mount is live or 1 with the one-line reason why not); the
daemon opens its log, checks the server and the credentials with one listing call
(:mod:`openai_fs.commands.connect`: final failures at once, progress while it waits), builds the
core (:class:`~openai_fs.core.filesystem.FileSystem`), mounts, and serves FUSE requests
(:mod:`openai_fs.fuse.mounting`) until ``fusermount3 -u``, ``openai-fs unmount`` or a signal.
SIGINT/SIGTERM wait for uploads in flight before unmounting (a second signal does not wait);
SIGUSR1 writes every thread's stack to the log.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import trio

from openai_fs import __version__
from openai_fs.api import FilesClient
from openai_fs.api.client import first_error
from openai_fs.api.retry import RetryPolicy
from openai_fs.api.secret import Secret
from openai_fs.commands import allocator, connect, logs
from openai_fs.commands.options import STDERR, MountOptions, add_mount_arguments, from_arguments
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
    """Tells whoever started the mount how it goes: lines of progress while it connects, then
    that it is live, or the one-line reason why not.

    In the background the lines go through a pipe to the parent, which waits for them and
    prints them (see :func:`_wait_for_daemon`); in the foreground they go to standard error,
    unless the log already goes there. Under systemd (a ``Type=notify`` unit) being live is
    also told to the service manager (``READY=1``)."""

    def __init__(self, fd: int | None, *, echo: bool = True) -> None:
        self._fd = fd
        self._echo = echo
        self._notify = os.environ.pop("NOTIFY_SOCKET", None)

    def started(self) -> None:
        self._send("pid", str(os.getpid()))

    def progress(self, text: str) -> None:
        log.info("%s", text)
        if self._fd is not None:
            self._send("progress", text)
        elif self._echo:
            _say(text)

    def ready(self, text: str) -> None:
        self._tell_systemd(f"READY=1\nSTATUS={text}")
        if self._fd is not None:
            self._send("ready", text)
            self._close()
        elif self._echo:
            _say(text)

    def failed(self, text: str) -> None:
        if self._fd is None:
            _say(text)
        else:
            self._send("failed", text)
            self._close()

    def _send(self, kind: str, text: str) -> None:
        if self._fd is None:
            return
        line = f"{kind} {' '.join(text.splitlines())}\n".encode("utf-8", "replace")
        try:
            os.write(self._fd, line)
        except OSError:         # the parent is gone (interrupted): nobody to tell
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _tell_systemd(self, message: str) -> None:
        """sd_notify(3), for a unit of ``Type=notify`` (systemd/openai-fs@.service)."""
        if not self._notify:
            return
        address = "\0" + self._notify[1:] if self._notify.startswith("@") else self._notify
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8", "replace"), address)
        except OSError as exc:
            log.warning("cannot tell systemd that the mount is ready (%s): %s", self._notify,
                        exc.strerror)


def _say(text: str) -> None:
    print(f"openai-fs mount: {text}", file=sys.stderr, flush=True)


def add_arguments(parser) -> None:
    add_mount_arguments(parser)


def run(args) -> int:
    options = from_arguments(args)          # a usage error is cli's to print
    try:
        check_mountpoint(options)
        key = demo_key() if options.demo else load_key(options)
    except (MountFailed, KeyFileError) as exc:
        _say(str(exc))
        return 1
    if options.foreground:
        return mount(options, key, Readiness(None, echo=options.log_target is not None))
    return _daemonize(options, key)


def demo_key() -> Secret:
    """The demo's emulator takes any key, so none is asked of the user; the client sends one
    made up here, long and random, so that masking it in messages masks nothing else."""
    return Secret("demo-" + os.urandom(16).hex())


def load_key(options: MountOptions) -> Secret:
    if options.api_key_file is not None:
        return read_key_file(options.api_key_file)
    key = key_from_environment()
    if key is None:
        raise MountFailed("no API key: set OPENAI_API_KEY, or pass --api-key-file FILE "
                          "(or try --demo)")
    return key


def check_mountpoint(options: MountOptions) -> None:
    path = options.mountpoint
    if not path.is_dir():
        raise MountFailed(f"{path} is not a directory (create it first: mkdir -p {path})")
    if os.path.ismount(path):
        raise MountFailed(f"something is already mounted on {path}")
    if not options.allow_non_empty:
        # libfuse 3 mounts over anything without a word (it ignores "nonempty"), and what the
        # folder holds is then hidden until the unmount: refused unless asked for
        try:
            with os.scandir(path) as entries:
                first = next(entries, None)
        except OSError as exc:
            raise MountFailed(f"cannot read {path}: {exc.strerror}") from None
        if first is not None:
            raise MountFailed(f"{path} is not empty (it holds {first.name!r}...): mounting "
                              "would hide what it holds; use an empty folder, or "
                              "--allow-non-empty (-o nonempty) to mount over it anyway")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise MountFailed("cannot use /dev/fuse (is the fuse3 package installed, and may you "
                          "use FUSE?)")


def _daemonize(options: MountOptions, key: Secret) -> int:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child:
        os.close(write_end)
        os.waitpid(child, 0)        # the first child only starts the daemon
        return _wait_for_daemon(read_end, options)
    # the child: a new session, then a grandchild that is the daemon
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    # with --log-file - the log goes to the standard error the command was started with (the
    # journal, for mount(8) run by systemd)
    for fd in (0, 1) if options.log_file == STDERR else (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    code = 1
    try:
        readiness = Readiness(write_end)
        readiness.started()
        code = mount(options, key, readiness)
    finally:
        os._exit(code)


def _wait_for_daemon(read_end: int, options: MountOptions) -> int:
    """In the parent: print the daemon's progress as it comes, and return 0 once it is live,
    or 1 with its reason. Ctrl-C here stops the daemon too: nobody is left waiting for it."""
    daemon = None
    with os.fdopen(read_end, "rb") as pipe:
        try:
            for raw in pipe:
                kind, _, text = raw.decode("utf-8", "replace").rstrip("\n").partition(" ")
                if kind == "pid":
                    daemon = int(text)
                elif kind in ("progress", "ready"):
                    _say(text)
                    if kind == "ready":
                        return 0
                elif kind == "failed":
                    _say(text)
                    return 1
        except KeyboardInterrupt:
            if daemon is not None:
                try:
                    os.kill(daemon, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            _say("interrupted; not mounted")
            return 130
    where = options.log_target or "its log"
    _say(f"the mount process stopped; see {where}")
    return 1


def mount(options: MountOptions, key: Secret, readiness: Readiness) -> int:
    """Mount and serve until unmounted; returns the exit status."""
    try:
        mount_log = logs.setup(log_file=options.log_target, debug=options.debug,
                               secret=None if options.demo else key)
    except OSError as exc:
        readiness.failed(f"cannot write the log {options.log_target}: {exc.strerror}")
        return 1
    allocator.reuse_large_buffers()
    demo = None
    try:
        environ = dict(os.environ)
        if options.demo:
            demo = DemoServer.start()
            options.cache_dir = demo.folder / "cache"
            environ = {"OPENAI_BASE_URL": demo.base_url}
        elif options.base_url:
            environ["OPENAI_BASE_URL"] = options.base_url

        def client(**settings) -> FilesClient:
            return FilesClient.from_environment(api_key=key, environ=environ, **settings)

        return _run(_serve, options, client, readiness, mount_log)
    except MountFailed as exc:
        if mount_log.file is not None:      # in the foreground the one line below says it
            log.error("%s", exc)
        readiness.failed(str(exc))
        return 1
    except KeyboardInterrupt:
        log.info("interrupted before the mount was made")
        readiness.failed("interrupted; not mounted")
        return 130
    except Exception as exc:
        log.exception("the mount stopped because of an internal error")
        readiness.failed(f"internal error: {exc!r}")
        return 1
    finally:
        if demo is not None:
            demo.stop()


def _run(*args):
    """``trio.run``, with a failure to mount raised as itself rather than inside the group
    of the nursery it happened in."""
    try:
        return trio.run(*args)
    except ExceptionGroup as group:
        failed = group.subgroup(MountFailed)
        if failed is None:
            raise
        raise first_error(failed) from None


def _retry(options: MountOptions) -> RetryPolicy:
    return RetryPolicy(max_retries=options.retries, timeout=options.timeout,
                       processing=options.processing_timeout)


async def _serve(options: MountOptions, make_client, readiness: Readiness,
                 mount_log: logs.MountLog) -> int:
    try:
        await connect.check(make_client, attempts=options.retries + 1,
                            report=readiness.progress)
    except connect.ConnectFailed as exc:
        raise MountFailed(str(exc)) from None
    async with make_client(retry=_retry(options)) as client:
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
            not_downloadable=options.not_downloadable, write_back=options.write_back,
            local_only=options.local_only, local_only_defaults=not options.no_local_only,
            uploads=UploadSettings(
                multipart_threshold=options.multipart_threshold, part_size=options.part_size,
                concurrency=options.upload_concurrency, expires_after=options.expires_after,
                early=not options.upload_on_close))
        server = "the demo server " + client.base_url if options.demo else client.base_url
        async with trio.open_nursery() as nursery:
            core = FileSystem(client, settings, nursery=nursery, kernel=FuseKernelCache())
            try:
                await core.start()

                def status() -> dict[str, object]:
                    mounted = operations.mounted
                    return {"pid": os.getpid(), "version": __version__,
                            "mountpoint": mountpoint,
                            "server": client.base_url, "read_only": options.read_only,
                            "started": started, "log": mount_log.where,
                            "uploads": core.files.statistics(),
                            "read_ahead": None if mounted is None
                            else readahead.window(mounted.device),
                            "cache": core.cache.statistics(),
                            "content_served": core.cache.access.as_dict(),
                            "requests": client.stats.as_dict(),
                            "open_files": operations.open_handles(),
                            "problems": list(mount_log.problems.records)}

                operations = Operations(core, owner=Ownership(options.uid, options.gid),
                                        modes=Modes(options.file_mode, options.dir_mode,
                                                    options.umask),
                                        status=status, background=nursery)

                def mounted() -> None:
                    log.info("openai-fs %s: %s mounted on %s", __version__, client.base_url,
                             options.mountpoint)
                    readiness.ready(f"{server} mounted on {mountpoint}; log: "
                                    f"{mount_log.where}")

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
