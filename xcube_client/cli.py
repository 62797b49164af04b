"""Command line of the client: ``python -m xcube_client generate "PROMPT" --out DIR`` (also ``info``, ``health``).

The address defaults to $XCUBE_ADDRESS or 127.0.0.1:50051; the token to $XCUBE_TOKEN (safer than
putting it on the command line, where other users can see it in the process list).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

from xcube_client.client import DEFAULT_ADDRESS, XCubeClient
from xcube_client.errors import XCubeClientError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xcube_client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=os.environ.get("XCUBE_ADDRESS", DEFAULT_ADDRESS),
                        help="server host:port (default: $XCUBE_ADDRESS or %(default)s)")
    parser.add_argument("--token", default=os.environ.get("XCUBE_TOKEN"),
                        help="the server's --token (default: $XCUBE_TOKEN)")
    parser.add_argument("--tls-ca", type=pathlib.Path, default=None,
                        help="PEM certificate to trust; connects with TLS")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="print the server's version, model, device and limits as JSON")
    sub.add_parser("health", help="print SERVING / NOT_SERVING (exit 0 only when SERVING)")
    gen = sub.add_parser("generate", help="generate a scene and write every level as it arrives")
    gen.add_argument("prompt", help="the scene to generate, e.g. 'a small harbour town'")
    gen.add_argument("--out", type=pathlib.Path, required=True, help="folder for level_<i>.* files")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    gen.add_argument("--steps", type=int, default=0, help="diffusion steps per level (0 = server default)")
    gen.add_argument("--guidance", type=float, default=None, help="guidance scale (default: server's)")
    gen.add_argument("--levels", type=int, default=0, help="number of levels (0 = all)")
    gen.add_argument("--outputs", default="vdb", help="comma list of vdb, mesh, raw (default %(default)s)")
    gen.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    return parser


def _generate(client: XCubeClient, args) -> int:
    def progress(level: int, step: int, total: int) -> None:
        print(f"\rlevel {level}: step {step}/{total}   ", end="", file=sys.stderr, flush=True)

    def queued(position: int, length: int) -> None:
        print(f"queued: {position} job(s) ahead", file=sys.stderr)

    _check_out_folder(args.out)  # before the server spends time on level 0
    t0 = time.monotonic()
    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()]
    for level in client.generate(args.prompt, seed=args.seed, steps=args.steps, guidance=args.guidance,
                                 num_levels=args.levels, outputs=outputs, progress=progress, queued=queued,
                                 timeout=args.timeout):
        paths = level.write(args.out)
        print(f"\rlevel {level.index}: {level.num_voxels} voxels at {level.voxel_size:g} m, "
              f"{time.monotonic() - t0:.1f} s -> {', '.join(p.name for p in paths)}", file=sys.stderr)
    return 0


def _check_out_folder(out: pathlib.Path) -> None:
    """Create ``out`` or make sure it is a writable folder; OSError with the reason otherwise."""
    if out.exists() and not out.is_dir():
        raise OSError(f"--out {str(out)!r} is a file, not a folder; pass a folder for the level files")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise OSError(f"--out {str(out)!r} is not writable")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        root = args.tls_ca.read_bytes() if args.tls_ca else None
        with XCubeClient(args.address, token=args.token, root_certificates=root) as client:
            if args.command == "info":
                print(json.dumps(dataclasses.asdict(client.info()), indent=2))
                return 0
            if args.command == "health":
                status = client.health()
                print(status)
                return 0 if status == "SERVING" else 1
            return _generate(client, args)
    except (XCubeClientError, ValueError, OSError) as exc:
        print(f"\nxcube_client: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nxcube_client: interrupted (the server cancels the job)", file=sys.stderr)
        return 130
