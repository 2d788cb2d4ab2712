"""Mount options: command-line flags, ``-o name=value,...`` (for mount(8) and fstab), sizes.

Every option exists once, in :data:`OPTIONS`; the parser and the ``-o`` reader both come from
that table, so the two spellings cannot drift apart.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from openai_fs.core import purposes, readahead, sizes

#: mount(8) options that mean nothing to us (accepted so fstab lines work); so is any ``x-*``
#: option (``x-systemd.automount``: options for other programs, which mount.fuse3 passes on)
#: and ``comment=``
_IGNORED = {"rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "auto", "noauto",
            "user", "nouser", "users", "owner", "group", "_netdev", "defaults", "async",
            "atime", "noatime", "relatime", "nofail", "comment"}
#: ``--log-file -``: standard error
STDERR = Path("-")
#: ``-o`` names that are another spelling of an option (fuse 2's and rclone's ``nonempty``)
_ALIASES = {"ro": "read_only", "nonempty": "allow_non_empty"}


class OptionError(ValueError):
    """A usage error (a bad option or value); its text is shown to the user as is, as
    ``openai-fs: error: TEXT``. ``command`` is the command whose ``--help`` would help."""

    def __init__(self, message: str, *, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


def parse_size(text: str) -> int:
    """``512``, ``64K``, ``1.5G``, ``256MiB`` -> bytes (binary units)."""
    try:
        return sizes.parse_size(text)
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptionError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise OptionError(f"seconds cannot be negative: {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise OptionError(f"must be at least 1: {text!r}")
    return value


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise OptionError(f"not an http:// or https:// URL: {text!r}")
    return text


def _log_file(text: str) -> Path:
    return Path(text) if text == "-" else Path(os.path.expanduser(text))


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise OptionError(f"not a whole number: {text!r}") from None


def _mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise OptionError(f"not an octal mode: {text!r} (e.g. 0640)") from None
    if not 0 <= value <= 0o777:
        raise OptionError(f"a mode is between 0 and 0777: {text!r}")
    return value


def _purposes(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not chosen:
        raise OptionError(f"not a list of purposes: {text!r} (e.g. assistants,user_data)")
    return chosen


@dataclass(frozen=True)
class Option:
    name: str                       # attribute and -o name (dashes in the flag)
    help: str
    convert: Callable[[str], Any] | None = None   # None: a switch
    metavar: str | None = None
    short: str | None = None
    #: may be given several times; the values are collected in a tuple
    repeat: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("foreground", "stay in the foreground (default: run in the background once the "
                         "mount is live)", short="-f"),
    Option("read_only", "refuse every change (uploads, deletes, moves)"),
    Option("allow_non_empty", "mount even on a folder that is not empty, hiding what it holds "
                              "until unmounted (-o nonempty is the same)"),
    Option("base_url", "the API to mount (default: $OPENAI_BASE_URL, else "
                       "https://api.openai.com/v1)", _url, "URL"),
    Option("allow_other", "let other users use the mount (needs user_allow_other in "
                          "/etc/fuse.conf unless run by root)"),
    Option("uid", "owner shown for every file (default: you)", _whole, "UID"),
    Option("gid", "group shown for every file (default: your group)", _whole, "GID"),
    Option("file_mode", "permission bits of files in writable purposes (default 0644; "
                        "read-only purposes drop the write bits)", _mode, "MODE"),
    Option("dir_mode", "permission bits of writable purpose directories (default 0755; "
                       "read-only ones drop the write bits)", _mode, "MODE"),
    Option("umask", "bits removed from every file's and directory's mode (default 0; e.g. "
                    "077 with --allow-other keeps other users out)", _mode, "MASK"),
    Option("cache_size", "memory for cached content (default 256M)", parse_size, "SIZE"),
    Option("cache_dir", "folder for the disk cache, spool files and unsent bytes "
                        "(default ~/.cache/openai-fs)", Path, "DIR"),
    Option("disk_cache_size", "disk space for cached content (default 4G; 0 turns the disk "
                              "cache off)", parse_size, "SIZE"),
    Option("read_ahead", "how far ahead of a sequential reader the kernel asks for bytes "
                         "(default 1M; setting it needs root, 0 keeps the kernel's 128K)",
           parse_size, "SIZE"),
    Option("dir_ttl", "seconds a directory listing is trusted before it is fetched again "
                      "(default 30)", _seconds, "SECONDS"),
    Option("multipart_threshold", "files larger than this are sent with the Uploads API in "
                                  "parallel parts (default 64M)", parse_size, "SIZE"),
    Option("part_size", "size of one Uploads API part, at most 64M (default 16M)",
           parse_size, "SIZE"),
    Option("upload_concurrency", "parts in flight at once per upload (default 4)",
           _positive_int, "N"),
    Option("write_back", "close() and rm return once the change is journaled in the spool; "
                         "uploads and deletes go on in the background (--upload-concurrency at "
                         "once) and resume after a crash; sync, fsync, openai-fs sync and "
                         "unmount wait for them (default: close() returns once the server has "
                         "the file)"),
    Option("local_only", "also keep files named like GLOB local, never uploaded (repeatable; "
                         "by default editor, office and desktop temporaries are: .*.swp, *~, "
                         ".~lock.*#, ~$*, .DS_Store, Thumbs.db, ...)", str, "GLOB",
           repeat=True),
    Option("no_local_only", "upload even the editor, office and desktop temporaries kept local "
                            "by default"),
    Option("upload_on_close", "send a file only once it is closed (default: a file written "
                              "from start to end begins uploading once it holds 8M, so the "
                              "upload overlaps the writing)"),
    Option("expires_after", "new uploads expire this many seconds after creation "
                            "(3600..2592000; default: the API's policy)", _whole, "SECONDS"),
    Option("not_downloadable", "purposes (comma-separated) whose content the server does not "
                               "hand out, so it is never asked (default: learned from the "
                               "server's first refusal)", _purposes, "PURPOSES"),
    Option("api_key_file", "read the API key from FILE (must not be readable by others) "
                           "instead of OPENAI_API_KEY", Path, "FILE"),
    Option("timeout", "a server that cannot be reached, or sends nothing, for this many "
                      "seconds is given up: the read or write fails with EIO, however the "
                      "retries nest (default 30)", _seconds, "SECONDS"),
    Option("processing_timeout", "seconds the server may take to answer once the whole "
                                 "body of an upload is sent (default 600)", _seconds,
           "SECONDS"),
    Option("retries", "times a failed request is retried within one operation (408, 409, "
                      "429, 5xx and connection failures; default 5); a Retry-After of up to "
                      "120 s is honoured", _whole, "N"),
    Option("log_file", "write the log to FILE, or - for standard error (default: standard "
                       "error with -f, else ~/.local/state/openai-fs/MOUNTPOINT.log, e.g. "
                       "home-me-openai.log, rotated at 10M)", _log_file, "FILE"),
    Option("debug", "log every request and FUSE operation"),
)
_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass
class MountOptions:
    mountpoint: Path
    demo: bool = False
    foreground: bool = False
    read_only: bool = False
    allow_non_empty: bool = False
    base_url: str | None = None
    allow_other: bool = False
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    file_mode: int = 0o644
    dir_mode: int = 0o755
    umask: int = 0
    cache_size: int = 256 * purposes.MiB
    cache_dir: Path = field(default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache"))
    disk_cache_size: int = 4 * purposes.GiB
    read_ahead: int = readahead.DEFAULT_WINDOW
    dir_ttl: float = 30.0
    multipart_threshold: int = 64 * purposes.MiB
    part_size: int = 16 * purposes.MiB
    upload_concurrency: int = 4
    upload_on_close: bool = False
    write_back: bool = False
    local_only: tuple[str, ...] = ()
    no_local_only: bool = False
    expires_after: int | None = None
    not_downloadable: tuple[str, ...] = ()
    api_key_file: Path | None = None
    timeout: float = 30.0
    processing_timeout: float = 600.0
    retries: int = 5
    log_file: Path | None = None
    debug: bool = False

    def validate(self) -> MountOptions:
        if not 1 <= self.part_size <= purposes.MAX_PART_BYTES:
            raise OptionError(f"--part-size must be between 1 byte and "
                              f"{purposes.MAX_PART_BYTES // purposes.MiB}M (the API's limit)")
        if self.expires_after is not None and not (
                purposes.MIN_EXPIRES_AFTER <= self.expires_after <= purposes.MAX_EXPIRES_AFTER):
            raise OptionError("--expires-after must be between 3600 (1 hour) and 2592000 "
                              "(30 days) seconds")
        if not 0 <= self.read_ahead <= readahead.MAX_WINDOW:
            raise OptionError(f"--read-ahead must be between 0 and "
                              f"{readahead.MAX_WINDOW // purposes.MiB}M")
        if self.retries < 0:
            raise OptionError("--retries cannot be negative")
        if self.timeout <= 0 or self.processing_timeout <= 0:
            raise OptionError("--timeout and --processing-timeout must be more than 0 seconds")
        # a mount in the background runs from "/": paths given relative to the folder it was
        # started in are made absolute while that folder is known
        self.mountpoint = _absolute(self.mountpoint)
        self.cache_dir = _absolute(self.cache_dir)
        if self.api_key_file is not None:
            self.api_key_file = _absolute(self.api_key_file)
        if self.log_file is not None and self.log_file != STDERR:
            self.log_file = _absolute(self.log_file)
        return self

    @property
    def log_target(self) -> Path | None:
        """Where the log goes: a file, or None for standard error."""
        if self.log_file is not None:
            return None if self.log_file == STDERR else self.log_file
        if self.foreground:
            return None
        return default_log_file(self.mountpoint)


def _absolute(path: Path) -> Path:
    """``path`` from the current folder, made absolute without following symbolic links."""
    return Path(os.path.abspath(path))


def _xdg(variable: str, fallback: str) -> Path:
    base = os.environ.get(variable) or str(Path.home() / fallback)
    return Path(base) / "openai-fs"


def add_mount_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", type=Path, help="an empty directory to mount on")
    parser.add_argument("--demo", action="store_true",
                        help="start the bundled emulator with sample files in every purpose "
                             "and mount it: no API key, no network")
    parser.add_argument("-o", dest="mount_options", action="append", default=[],
                        metavar="NAME[=VALUE],...",
                        help="any option below as name=value (dashes or underscores), plus "
                             "ro and nonempty; for mount(8) and /etc/fstab")
    for option in OPTIONS:
        flags = [f"--{option.name.replace('_', '-')}"]
        if option.short:
            flags.insert(0, option.short)
        if option.convert is None:
            parser.add_argument(*flags, dest=option.name, action="store_true", default=None,
                                help=option.help)
        elif option.repeat:
            parser.add_argument(*flags, dest=option.name, type=_argparse_type(option),
                                action="append", default=None, metavar=option.metavar,
                                help=option.help)
        else:
            parser.add_argument(*flags, dest=option.name, type=_argparse_type(option),
                                default=None, metavar=option.metavar, help=option.help)


def _argparse_type(option: Option) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return option.convert(text)  # type: ignore[misc]
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = option.name.replace("_", "-")
    return convert


def from_arguments(args: argparse.Namespace) -> MountOptions:
    """Options from flags, ``-o`` lists and defaults; flags win over ``-o``."""
    chosen: dict[str, Any] = {}
    for group in args.mount_options:
        for item in filter(None, (part.strip() for part in group.split(","))):
            name, has_value, value = item.partition("=")
            key = name.strip().replace("-", "_")
            if key in _ALIASES and not has_value:
                chosen[_ALIASES[key]] = True
                continue
            if key in _IGNORED or key.startswith("x_"):
                continue
            option = _BY_NAME.get(key)
            if option is None:
                raise OptionError(f"unknown mount option -o {name}")
            if option.convert is None:
                if has_value and value.lower() not in ("1", "true", "yes", "on"):
                    continue
                chosen[key] = True
            else:
                if not has_value:
                    raise OptionError(f"-o {name} needs a value: -o {name}=VALUE")
                if option.repeat:
                    chosen[key] = chosen.get(key, ()) + (option.convert(value),)
                else:
                    chosen[key] = option.convert(value)
    for option in OPTIONS:
        value = getattr(args, option.name, None)
        if value is not None:
            chosen[option.name] = chosen.get(option.name, ()) + tuple(value) if option.repeat \
                else value
    return MountOptions(mountpoint=args.mountpoint, demo=bool(getattr(args, "demo", False)),
                        **chosen).validate()


# ----------------------------------------------------- where a mount's log goes by default

def state_folder() -> Path:
    """``$XDG_STATE_HOME/openai-fs``, by default ``~/.local/state/openai-fs``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "openai-fs"


def log_name(mountpoint: Path) -> str:
    """The log file's name for a mount point: its path, ``/`` turned into ``-``
    (``/home/me/openai`` -> ``home-me-openai.log``); blanks and control characters become
    ``_``, and a name too long for a file is cut and given a hash of the whole path."""
    resolved = os.path.abspath(mountpoint)
    parts = [part for part in resolved.split("/") if part]
    name = "-".join(parts) or "root"
    name = re.sub(r"[\x00-\x20\x7f]", "_", name)
    if len(name.encode("utf-8", "surrogateescape")) > 200:
        digest = hashlib.sha256(resolved.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        name = name.encode("utf-8", "surrogateescape")[:150].decode("utf-8", "ignore") + \
            "-" + digest
    return name + ".log"


def default_log_file(mountpoint: Path) -> Path:
    return state_folder() / log_name(mountpoint)
