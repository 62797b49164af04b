"""`xcube` command line: one sub-command module per job.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its sub-command(s)
and sets ``func`` on its parser. Heavy imports (torch models, openvdb) happen inside the handlers so
that ``xcube --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from xcube_core.errors import XCubeError

COMMAND_MODULES = ("generate", "edit", "train", "eval", "data", "bench", "export", "addon")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xcube",
        description="XCube for artists: generate 3D scenes as sparse voxel hierarchies from text, "
        "train and evaluate the models, benchmark the engine, and export OpenVDB/mesh files.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module_name = f"xcube_core.cli.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except XCubeError as exc:
        print(f"xcube {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"xcube {args.command}: error: file not found: {exc.filename or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xcube {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
