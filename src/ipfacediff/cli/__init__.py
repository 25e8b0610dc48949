"""`ipfacediff` command line: one subcommand module per area, each with `register(subparsers)`.

Subcommand modules import heavy libraries (torch, diffusers) inside their handlers, so
`ipfacediff --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import InputError

# module name -> registers these subcommands
SUBCOMMAND_MODULES = ["info", "edit", "metrics", "batch", "serve"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipfacediff", description="Identity-preserving facial video editing.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"ipfacediff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ipfacediff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
