"""The core subcommands of ``mgkd``: config, download, teacher, heads, train.

Each subcommand is a parser set-up plus a handler; ``search.cli`` assembles them with the sweep
commands into the ``mgkd`` program. Handlers raise ``MgkdError`` for bad input.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from mgkd.config import ExperimentConfig, apply_overrides, default_config, load_config, resolve
from mgkd.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys; values are YAML (e.g. --set epochs=10 "
                             "'granularities=[{dim: 32, temperature: 2}]')")


def cmd_config(args: argparse.Namespace) -> int:
    config = default_config(args.teacher, args.student, args.dataset, method=args.method,
                            mode=args.mode)
    config = resolve(apply_overrides(config, args.overrides))
    sys.stdout.write(config.to_yaml())
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from mgkd.data import download_dataset
    path = download_dataset(args.dataset, args.data_dir)
    print(f"{args.dataset} is ready under {path}")
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from mgkd.runner import run_teacher
    config = ExperimentConfig.from_dict({
        "teacher": args.arch, "student": args.arch, "dataset": args.dataset,
        "data_dir": args.data_dir, "teacher_epochs": args.epochs, "teacher_seed": args.seed,
        "device": args.device})
    config = apply_overrides(config, args.overrides)
    result = run_teacher(config, args.out)
    print(f"teacher saved to {result.out_dir / 'teacher.pt'}  val_acc {result.final['val_acc']:.2f}"
          f"  test_acc {result.final['test_acc']:.2f}")
    return 0


def cmd_heads(args: argparse.Namespace) -> int:
    from mgkd.runner import fill_head_bank, teacher_arch_of
    arch = args.arch or teacher_arch_of(args.teacher)
    if arch is None:
        raise ConfigError(f"heads: {args.teacher} does not say its architecture; add --arch NAME.")
    config = ExperimentConfig.from_dict({
        "teacher": arch, "student": arch, "teacher_checkpoint": args.teacher,
        "dataset": args.dataset, "data_dir": args.data_dir, "head_epochs": args.epochs,
        "teacher_seed": args.seed, "device": args.device, "mode": "mag",
        **({"cache_dir": args.cache_dir} if args.cache_dir else {})})
    config = apply_overrides(config, args.overrides)
    levels = [(dim, float(temp)) for dim in args.dims for temp in args.temperatures]
    for dim, temp in levels:  # the same range checks a config gets
        config.replace(granularities=[{"dim": dim, "temperature": temp}])
    paths = fill_head_bank(config, levels)
    for path in paths:
        print(path)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from mgkd.runner import run_training
    config = apply_overrides(load_config(args.config), args.overrides)
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads {args.threads}: give 1 or more CPU threads.")
        import torch
        torch.set_num_threads(args.threads)
    result = run_training(config, args.out, resume=args.resume)
    final = result.final
    val = "n/a (no validation split)" if final["val_acc"] is None else f"{final['val_acc']:.2f}"
    print(f"done: {result.out_dir}  val_acc {val}  test_acc {final['test_acc']:.2f} "
          "(test accuracy is reported, never used to select)")
    return 0


def add_core_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("config", help="print a complete default experiment config")
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--method", default="kd")
    p.add_argument("--mode", default="mas")
    _add_set(p)
    p.set_defaults(handler=cmd_config)

    p = subparsers.add_parser("download", help="download a CIFAR data set (the only network use)")
    p.add_argument("dataset", choices=["cifar100", "cifar10"])
    p.add_argument("--data-dir", default="./data")
    p.set_defaults(handler=cmd_download)

    p = subparsers.add_parser("teacher", help="train a teacher network")
    p.add_argument("--arch", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    _add_set(p)
    p.set_defaults(handler=cmd_teacher)

    p = subparsers.add_parser("heads", help="fill the head bank for a teacher ahead of time")
    p.add_argument("--teacher", required=True, help="teacher checkpoint file")
    p.add_argument("--arch", help="teacher architecture (read from our checkpoints if omitted)")
    p.add_argument("--dims", type=int, nargs="+", required=True)
    p.add_argument("--temperatures", type=float, nargs="+", required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--dataset", default="cifar100")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--cache-dir")
    p.add_argument("--seed", type=int, default=0, help="teacher_seed of the runs that use the heads")
    p.add_argument("--device", default="auto")
    _add_set(p)
    p.set_defaults(handler=cmd_heads)

    p = subparsers.add_parser("train", help="run one distillation or final training from a config")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--threads", type=int, help="torch CPU threads (a sweep trial uses one per CPU "
                   "it was given: match it to reproduce a trial bit for bit)")
    _add_set(p)
    p.set_defaults(handler=cmd_train)
