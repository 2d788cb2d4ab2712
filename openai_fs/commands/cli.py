"""The ``openai-fs`` command: dispatches to the module that owns each subcommand.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file only
wires them together, so ``--help`` of every subcommand is written next to the code it describes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from openai_fs import __version__
from openai_fs.commands.options import OptionError

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "mount": ("openai_fs.commands.mount", "mount the Files API on a directory"),
    "unmount": ("openai_fs.commands.unmount", "wait for uploads in flight, then unmount"),
    "sync": ("openai_fs.commands.sync",
             "wait until every change queued with --write-back is on the server"),
    "status": ("openai_fs.commands.status", "show uploads in flight, failures, cache use and requests"),
    "serve": ("openai_fs.emulator.server",
              "run the local emulator of the Files and Uploads API"),
}


#: exit status of a usage error (as argparse's own), and of output cut short by a closed pipe
#: (128 + SIGPIPE, what a shell reports for ``cat big | head -1``)
USAGE_ERROR = 2
BROKEN_PIPE = 141
INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors raised (and printed by :func:`main` like every other usage
    error) instead of printed with the whole usage text."""

    def error(self, message: str):
        raise OptionError(message, command=self.prog)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, given ``command``, one whose other commands are only
    names: their modules are not imported (``mount`` loads pyfuse3, trio and httpx, ``serve``
    the web server), so ``openai-fs status`` and ``unmount`` start at once."""
    parser = _Parser(
        prog="openai-fs",
        description="Mount the OpenAI Files API as a filesystem, or serve a local emulator of it.",
    )
    parser.add_argument("--version", action="version", version=f"openai-fs {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if command is not None and name != command:
            commands.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=getattr(module, "DESCRIPTION", None),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def mount_helper_form(argv: list[str]) -> list[str]:
    """``openai-fs SOURCE MOUNTPOINT -o OPTIONS`` is how mount(8) runs a FUSE filesystem of type
    ``fuse.openai-fs`` (an /etc/fstab line): it becomes ``mount MOUNTPOINT -o OPTIONS``, with
    ``--demo`` when SOURCE is ``demo``. Any other argument list is left as it is."""
    if len(argv) >= 2 and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-") \
            and not argv[1].startswith("-"):
        source, rest = argv[0], argv[1:]
        return ["mount", *rest] + (["--demo"] if source == "demo" else [])
    return argv


def main(argv: list[str] | None = None) -> int:
    """Run one command. No ordinary situation ends in a traceback: a usage error is one line
    ``openai-fs: error: ...`` and exit 2, Ctrl-C exits 130, and output cut short because the
    reader went away (``openai-fs status M | head -1``) exits 141 without a word."""
    try:
        program = argv is None      # run as a program, not called by a test
        argv = mount_helper_form(list(sys.argv[1:] if argv is None else argv))
        command = next((arg for arg in argv if not arg.startswith("-")), None)
        if command == "mount":
            from openai_fs.commands import secrets      # loads the HTTP client: mount only
            restarted = secrets.take_handed_over_key()
            if program and not restarted:
                secrets.restart_without_key()       # returns only if it did not restart
        try:
            # no command (--version, --help, a mistake): no command's module is needed
            args = build_parser(command if command in SUBCOMMANDS else "").parse_args(argv)
            code = args.run(args)
        except OptionError as exc:
            command = exc.command or (f"openai-fs {argv[0]}" if argv[:1] and argv[0] in
                                      SUBCOMMANDS else "openai-fs")
            print(f"openai-fs: error: {exc} (see {command} --help)", file=sys.stderr)
            return USAGE_ERROR
        # written out here, inside the try, so a closed pipe is noticed here and not at exit
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        _drop_standard_output()
        return BROKEN_PIPE


def _drop_standard_output() -> None:
    """Point stdout and stderr at /dev/null, so the interpreter's final flush of what is left
    in their buffers has nowhere to fail (and print "Exception ignored ...")."""
    null = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(null, stream.fileno())
        except (OSError, ValueError):
            pass
    os.close(null)


if __name__ == "__main__":
    sys.exit(main())
