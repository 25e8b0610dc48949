"""`ipfacediff` command line: one subcommand module per area, each with `register(subparsers)`.

Subcommand modules import heavy libraries (torch, diffusers) inside their handlers, so
`ipfacediff --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from .. import __version__
from ..errors import InputError

# module name -> registers these subcommands
SUBCOMMAND_MODULES = ["info", "edit", "metrics", "plan", "batch", "serve"]


class OneLineParser(argparse.ArgumentParser):
    """Argument errors in one line (like every other input error), exit 2; the usage is on --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ipfacediff", description="Identity-preserving facial video editing.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (and the traceback of an internal error)")
    parser.add_argument("--version", action="version", version=f"ipfacediff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so every `finally` (temporary files) runs before exit."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"ipfacediff: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the user named cannot be read or written (disk full, permissions)
        where = f"{e.filename}: " if e.filename else ""
        print(f"ipfacediff: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ipfacediff: interrupted (run the same command again to resume)", file=sys.stderr)
        return 130
    except Terminated:
        print("ipfacediff: terminated (run the same command again to resume)", file=sys.stderr)
        return 143
    except Exception as e:  # a bug, not the user's input: one line, the traceback on request
        if args.verbose:
            raise
        print(f"ipfacediff: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} "
              "(rerun with -v for the traceback)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
