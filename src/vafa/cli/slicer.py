"""``vafa slicer install DIR``: the 3D Slicer CLI modules (:mod:`vafa.slicer`)."""

from __future__ import annotations

import json

from vafa.cli.common import add_common_arguments

__all__ = ["add_parser"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "slicer",
        help="install the 3D Slicer modules (VAFA attack, VAFA evaluate, VAFT fine-tune)",
        description="Write the 3D Slicer CLI modules into a folder; then add the folder to "
        "Slicer's Application Settings > Modules > Additional module paths and restart Slicer.",
    )
    sub = p.add_subparsers(dest="slicer_command", metavar="ACTION", required=True)
    install = sub.add_parser(
        "install", help="write the modules into DIR", description="Write the modules into DIR."
    )
    add_common_arguments(
        install,
        ignored={"device": "the modules choose theirs", "seed": "nothing is drawn at random"},
        quiet="print nothing",
        json='print {"dir": DIR, "written": [files]} as JSON',
        overwrite="replace an earlier install",
    )
    install.add_argument("dir", help="folder for the modules (created if needed)")
    install.add_argument("--python", help="interpreter the modules run (default: this one)")
    install.add_argument("--windows", action="store_true", help="write .bat executables")
    install.set_defaults(func=run)


def run(args) -> int:
    from vafa.slicer.install import install

    written = install(
        args.dir, python=args.python, windows=args.windows or None, overwrite=args.overwrite
    )
    if args.json:
        print(json.dumps({"dir": str(args.dir), "written": [str(p) for p in written]}, indent=2))
        return 0
    if args.quiet:
        return 0
    for path in written:
        print(path)
    print(
        f"add {args.dir} to Slicer's Application Settings > Modules > Additional module paths, "
        "then restart Slicer: the modules appear under the category VAFA"
    )
    return 0
