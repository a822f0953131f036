"""The ``mgkd`` program: the core commands of ``mgkd.cli`` plus the sweep commands."""
from __future__ import annotations

import argparse
import logging
import sys

from mgkd.cli import add_core_commands
from mgkd.errors import MgkdError


def cmd_tune(args: argparse.Namespace) -> int:
    # Ray, Optuna and the sweep machinery load only for this command.
    from search.sweep import default_sweep, load_sweep
    from search.tune import format_summary, resume_sweep, run_sweep

    if args.resume and args.sweep:
        raise MgkdError("tune: give a sweep file or --resume RUN_DIR, not both.")
    if args.resume:
        result = resume_sweep(args.resume)
    else:
        spec = load_sweep(args.sweep) if args.sweep else default_sweep()
        if args.address:
            spec = type(spec).from_dict({**spec.to_dict(), "ray_address": args.address})
        result = run_sweep(spec)
    print(format_summary(result))
    return 0


def add_sweep_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tune", help="run a sweep (no arguments: the built-in digits demo)")
    p.add_argument("sweep", nargs="?", help="sweep YAML file (see sweeps/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted sweep")
    p.add_argument("--address", help="Ray cluster address (overrides the file's ray_address)")
    p.set_defaults(handler=cmd_tune)


def add_confirm_to_best(subparsers: argparse._SubParsersAction) -> None:
    """`mgkd best --confirm K --seeds S`: re-run the top K configs of every study under S more
    seeds (through Ray, so it lives here, not in analysis), then show the table as usual."""
    best = subparsers.choices["best"]
    best.add_argument("--confirm", type=int, metavar="K",
                      help="re-run the top K configs of every study with more seeds first")
    best.add_argument("--seeds", type=int, default=3, metavar="S",
                      help="further seeds per confirmed config (default 3)")
    show = best.get_default("handler")

    def confirm_then_show(args: argparse.Namespace) -> int:
        if args.confirm is not None:
            from search.confirm import confirm
            confirm(args.run_dir, args.confirm, args.seeds)
        return show(args)

    best.set_defaults(handler=confirm_then_show)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgkd", description="Multi-granularity knowledge distillation and its tuning.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_core_commands(subparsers)
    add_sweep_commands(subparsers)
    # The analysis commands are assembled here, the program's one entry point; analysis itself
    # never imports search or Ray.
    from analysis.cli import add_analysis_commands
    add_analysis_commands(subparsers)
    add_confirm_to_best(subparsers)
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
