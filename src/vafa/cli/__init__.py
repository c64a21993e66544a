"""The ``vafa`` command line: ``demo``, ``attack``, ``evaluate``, ``info``, ``train``,
``report``, ``gui``, ``slicer`` — one module per command, each with ``add_parser(subparsers)``;
every command takes the common flags (:func:`vafa.cli.common.add_common_arguments`) and its help
says which of them it ignores.

Errors in what the user gave (paths, files, cards, options) print one line on stderr and exit
with status 2, never a traceback; Ctrl-C exits with 130 and leaves no partial file (every
write is atomic).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from vafa import __version__
from vafa.cli import attack, demo, evaluate, gui, info, report, slicer, train
from vafa.cli.common import CLIError, CLIParser
from vafa.cli.options import flag_prefix
from vafa.ops.messages import USER_ERRORS, one_line

__all__ = ["build_parser", "main"]

#: The commands in the order ``vafa --help`` lists them.
COMMANDS = (demo, attack, evaluate, info, gui, train, report, slicer)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vafa`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from vafa.ops.devices import keep_freed_memory

    keep_freed_memory()
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # the reader stopped reading (`| head`): no traceback, status 1
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("vafa: interrupted (nothing partial was written)", file=sys.stderr)
        return 130
    except (CLIError, *USER_ERRORS) as err:
        print(f"vafa {args.command}: error: {flag_prefix(err)}{one_line(err)}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = CLIParser(
        prog="vafa",
        description="Volumetric adversarial frequency attacks (VAFA) and training (VAFT) for 3D "
        "medical segmentation models.",
    )
    parser.add_argument("--version", action="version", version=f"vafa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser
