"""The ``mgkd`` program: the core commands of ``mgkd.cli`` plus the sweep commands."""
from __future__ import annotations

import argparse
import logging
import sys

from mgkd.cli import add_core_commands
from mgkd.errors import MgkdError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgkd", description="Multi-granularity knowledge distillation and its tuning.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_core_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        return args.handler(args)
    except MgkdError as err:
        # Bad input: one paragraph, no traceback.
        print(f"mgkd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mgkd {args.command}: interrupted; a run with a checkpoint continues with --resume.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
