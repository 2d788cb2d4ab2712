"""The ``openai-fs`` command: dispatches to the module that owns each subcommand.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file only
wires them together, so ``--help`` of every subcommand is written next to the code it describes.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from openai_fs import __version__
from openai_fs.commands import secrets

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "mount": ("openai_fs.commands.mount", "mount the Files API on a directory"),
    "unmount": ("openai_fs.commands.unmount", "wait for uploads in flight, then unmount"),
    "status": ("openai_fs.commands.status", "show uploads in flight, failures, cache use and requests"),
    "serve": ("openai_fs.emulator.server",
              "run the local emulator of the Files and Uploads API"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openai-fs",
        description="Mount the OpenAI Files API as a filesystem, or serve a local emulator of it.",
    )
    parser.add_argument("--version", action="version", version=f"openai-fs {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
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
    restarted = secrets.take_handed_over_key()
    program = argv is None      # run as a program, not called by a test
    argv = mount_helper_form(list(sys.argv[1:] if argv is None else argv))
    if program and not restarted and argv[:1] == ["mount"]:
        secrets.restart_without_key()       # returns only if it did not restart
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
