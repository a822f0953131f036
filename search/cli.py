"""The ``mgkd`` program: the core commands of ``mgkd.cli`` plus the sweep and analysis commands.

Building the parser loads neither torch nor Ray nor Optuna: ``mgkd --help`` answers at once, and
each handler imports what it needs.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from mgkd.cli import add_core_commands
from mgkd.errors import MgkdError

INTERRUPTED = 130  # the shell's status for a process ended by SIGINT


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("mgkd-tune")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _resume_hint(run_dir) -> str:
    if (run_dir / "sweep.yaml").is_file():
        return f"continue it with `mgkd tune --resume {run_dir}`"
    return "nothing was started yet; run the same command again"


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of trials, 1 or more; got {text!r}")
    return value


def cmd_tune(args: argparse.Namespace) -> int:
    from mgkd.config.sweep import load_sweep
    from search.sweep import default_sweep, load_run_spec, validate_sweep

    if args.resume and args.sweep:
        raise MgkdError("tune: give a sweep file or --resume RUN_DIR, not both.")
    if args.num_samples is not None and not args.resume:
        raise MgkdError("--num-samples extends a finished sweep: give it with --resume RUN_DIR (a "
                        "new sweep takes num_samples from its sweep file).")
    extend = False
    if args.resume:
        spec = load_run_spec(args.resume, "--resume")
        if args.num_samples is not None:
            from search.extend import extended
            spec, extend = extended(spec, args.num_samples)
    else:
        spec = load_sweep(args.sweep) if args.sweep else default_sweep()
        if args.address:
            spec = type(spec).from_dict({**spec.to_dict(), "ray_address": args.address})
    # Every mistake in the file itself, in well under a second: before torch and Ray load.
    validate_sweep(spec, check_data=False)
    from search.tune import format_summary, run_sweep  # Ray, torch and the sweep machinery

    try:
        result = run_sweep(spec, resume=bool(args.resume), extend=extend)
    except KeyboardInterrupt:
        # A second Ctrl-C (or one before the Tuner started): stop at once. Optuna's sqlite
        # transactions are atomic, and trials re-run from their last checkpoint.
        print(f"mgkd tune: stopped at once; {_resume_hint(spec.run_dir)} (teachers, heads and "
              "trials continue from their last finished epoch).", file=sys.stderr)
        _exit_at_once_on_ctrl_c()
        return INTERRUPTED
    print(format_summary(result))
    if result.interrupted:
        print(f"mgkd tune: interrupted before every study had its {spec.num_samples} trials; the "
              f"sweep's state is saved: {_resume_hint(spec.run_dir)} (interrupted trials continue "
              "from their last checkpoint).", file=sys.stderr)
        _exit_at_once_on_ctrl_c()
        return INTERRUPTED
    return 0


def _exit_at_once_on_ctrl_c() -> None:
    """Only teardown is left (Ray's shutdown at exit): a further Ctrl-C ends the process at once
    with status 130 instead of interrupting Ray's shutdown half-way, which can crash it. The
    sweep's state and optuna.db are already written."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(INTERRUPTED))


def add_sweep_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune", help="run a sweep (no arguments: the built-in digits demo)",
        description="Run a sweep: validate the sweep file, prepare teachers and head banks once, "
                    "then one Optuna study (TPE + ASHA) per (pair, method, mode) under one Ray "
                    "Tuner. Ctrl-C stops cleanly (exit 130) and saves the state for --resume; a "
                    "second Ctrl-C stops at once.")
    p.add_argument("sweep", nargs="?", metavar="SWEEP_FILE",
                   help="sweep YAML file (see sweeps/; default: the built-in demo, sweeps/demo.yaml)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the interrupted sweep in RUN_DIR (<storage_path>/<name>): no "
                        "finished trial re-runs")
    p.add_argument("--num-samples", type=_count, metavar="N",
                   help="with --resume: extend the finished sweep to N trials a study (N at least "
                        "its num_samples); the trials done are not re-run and each study's sampler "
                        "sees them")
    p.add_argument("--address", metavar="HOST:PORT",
                   help="Ray cluster to join, or 'auto' (default: the file's ray_address; null "
                        "starts a local Ray)")
    p.set_defaults(handler=cmd_tune)


def add_confirm_to_best(subparsers: argparse._SubParsersAction) -> None:
    """`mgkd best --confirm K --seeds S`: re-run the top K configs of every study under S more
    seeds (through Ray, so it lives here, not in analysis), then show the table as usual."""
    best = subparsers.choices["best"]
    best.add_argument("--confirm", type=int, metavar="K",
                      help="re-run the top K configs of every study with more seeds first, through "
                           "Ray (default: no confirmation runs)")
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
        prog="mgkd", description="Multi-granularity knowledge distillation and its tuning. "
                                 "`mgkd COMMAND --help` describes each command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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
        hint = getattr(args, "resume_hint", None)
        print(f"mgkd {args.command}: interrupted" + (f"; {hint}" if hint else "."),
              file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
