"""The analysis subcommands of ``mgkd``: best, export, board, report.

Each is a parser set-up plus a handler; ``search.cli`` adds them to the ``mgkd`` program with
``add_analysis_commands``. Handlers print their output, warnings about damaged or partial input go
to stderr, and bad input raises ``MgkdError``. Heavy imports (pandas, optuna, matplotlib) wait until
a handler runs.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mgkd.errors import MgkdError

WARNING_PREFIX = "warning: "


def _warn(notes: list[str]) -> None:
    for note in notes:
        print(f"{WARNING_PREFIX}{note}", file=sys.stderr)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value


def _out_dir(path: str, run_dir: Path, command: str) -> Path:
    out = Path(path).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise MgkdError(f"{command} --out: {out} exists and is not a directory; give a directory "
                        "path (it is created if missing).")
    if out == run_dir or run_dir in out.parents:
        where = "is the run dir itself" if out == run_dir else f"lies inside the run dir {run_dir}"
        raise MgkdError(f"{command} --out: {out} {where}, which the analysis never writes; give a "
                        f"directory of its own, e.g. {run_dir.name}-{command}.")
    from mgkd.paths import writable_dir
    return writable_dir(out, f"{command} --out", "give a directory you can write (it is created "
                        "if missing).")


def cmd_best(args: argparse.Namespace) -> int:
    from analysis.best import best_of_run
    from analysis.formats import FORMATS
    from analysis.run import read_run

    run = read_run(args.run_dir)
    bests = best_of_run(run)
    _warn(run.notes)
    sys.stdout.write(FORMATS[args.format](run, bests))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from analysis.export import export_run
    from analysis.formats import fmt_number
    from analysis.run import read_run

    run = read_run(args.run_dir)
    out = _out_dir(args.out, run.path, "export")
    try:
        written = export_run(run, out)
    finally:
        _warn(run.notes)
    for item in written:
        print(f"{item.path}  (trial {item.trial_number}, {item.config.objective} "
              f"{fmt_number(item.value)}, "
              f"epochs {item.config.epochs}, val_fraction 0)")
    print(f"final training: mgkd train --config {written[0].path} --out DIR")
    return 0


def cmd_board(args: argparse.Namespace) -> int:
    from analysis.board import build_board, start
    from analysis.run import read_run

    run = read_run(args.run_dir)
    logdir = Path(args.logdir) if args.logdir else None
    board = build_board(run, top=args.top, port=args.port, logdir=logdir)
    _warn(run.notes)
    for item in board.runs:
        print(f"{item.name}  <- {item.trial.trial_dir}")
    command = shlex.join(board.command)
    if args.print or not board.runs:
        print(command)
        return 0
    print(f"starting: {command}", flush=True)
    start(board)


def cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import write_report
    from analysis.run import read_run

    run = read_run(args.run_dir)
    out = _out_dir(args.out, run.path, "report")
    finals = []
    if args.final:
        from analysis.final_runs import read_final_run
        from mgkd.training.engine import resolve_device
        device = resolve_device(args.device)
        finals = [read_final_run(path, device=device) for path in args.final]
    report = write_report(run, out, top=args.top, finals=finals)
    _warn(run.notes)
    print(f"report: {report.index} ({len(report.images)} pictures beside it)")
    return 0


RUN_DIR_HELP = ("the sweep's run dir, <storage_path>/<name> (e.g. runs/demo); only read, also when "
                "copied off a cluster or while the sweep runs")


def add_analysis_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``best``, ``export``, ``board``, ``report`` and the model analyses (``noise``, ``cka``,
    ``transfer``) to the ``mgkd`` program."""
    from analysis.formats import FORMATS  # light: no pandas, optuna or matplotlib

    p = subparsers.add_parser(
        "best", help="the best config of every study of a sweep",
        description="One row per study: trial counts, the best value of the sweep's objective "
                    "(val_acc; val_map or val_rank1 for re-ID; it selects) and its standard "
                    "error, its test metric (test_acc, test_map, ...: reported, never used to "
                    "select), the paper default's value, the gain over it and the verdict (beats "
                    "default / within noise / default best), and the winning hyperparameters.")
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    p.add_argument("--format", choices=list(FORMATS), default="table",
                   help=f"output format: {', '.join(FORMATS)} (default table)")
    p.set_defaults(handler=cmd_best)

    p = subparsers.add_parser(
        "export", help="write each study's best config for `mgkd train`",
        description="Write each study's selected trial as an experiment config for the final "
                    "training: the sweep's full epochs, val_fraction 0, and no paths of the "
                    "sweep's machine (cache_dir and data_dir take their defaults; set them with "
                    "`mgkd train --set`).")
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory for the <teacher>__<student>__<method>__<mode>.yaml files "
                        "(created if missing; not the run dir)")
    p.set_defaults(handler=cmd_export)

    p = subparsers.add_parser(
        "board", help="TensorBoard on the top trials of every study",
        description="Build a tree of links to the event files of every study's top trials, each "
                    "named <pair>/<method>-<mode>/#<rank> val <value> trial <n>, outside the run "
                    "dir, and start TensorBoard on it.")
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    p.add_argument("--top", type=_positive, default=3, metavar="K",
                   help="trials per study, 1 or more (default 3)")
    p.add_argument("--port", type=_port, default=6006, help="TensorBoard's port, 1-65535 "
                   "(default 6006)")
    p.add_argument("--logdir", metavar="DIR",
                   help="where to build the link tree, outside the run dir; rebuilt on every call "
                        "(default: <temp dir>/mgkd-board/<run name>-<hash>)")
    p.add_argument("--print", action="store_true",
                   help="build the links and print the TensorBoard command instead of starting it")
    p.set_defaults(handler=cmd_board)

    p = subparsers.add_parser(
        "report", help="an HTML report with plots of a sweep",
        description="Write index.html and its PNGs: the best-per-study table, the paper-layout "
                    "table, and per study the validation curves of the top trials, the selected "
                    "config beside the paper default, importances and parallel coordinates.")
    p.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory for index.html and its pictures (created if missing; not the "
                        "run dir)")
    p.add_argument("--top", type=_positive, default=5, metavar="K",
                   help="trials per study in the validation curves, 1 or more (default 5)")
    p.add_argument("--final", nargs="+", default=[], metavar="DIR",
                   help="`mgkd train` out dirs of final runs: the report adds a table of their "
                        "test accuracy, prediction noise, ECE and embedding CKA, and a CKA "
                        "heatmap each (computed from their student.pt and teacher)")
    p.add_argument("--device", default="auto",
                   help="where --final's analyses run: auto, cpu, cuda or cuda:N (default auto)")
    p.set_defaults(handler=cmd_report)

    from analysis.probe_cli import add_probe_commands  # light: no torch until a handler runs
    add_probe_commands(subparsers)
