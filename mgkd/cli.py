"""The core subcommands of ``mgkd``: config, download, teacher, heads, train.

Each subcommand is a parser set-up plus a handler; ``search.cli`` assembles them with the sweep
commands into the ``mgkd`` program. Handlers raise ``MgkdError`` for bad input. Nothing heavy
(torch, the config machinery) loads until a handler runs, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from mgkd.catalog.datasets import DATASET_NAMES
from mgkd.catalog.methods import METHOD_NAMES, MODE_NAMES
from mgkd.catalog.models import MODEL_NAMES
from mgkd.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]
# What Ctrl-C prints, per command (``search.cli`` prints it after "interrupted").
RESUME_TRAIN = ("continue with the same command plus --resume: the run picks up after its last "
                "finished epoch (inside teacher or head training if it stopped there).")
RESUME_TEACHER = ("continue with the same command plus --resume: training picks up after the last "
                  "finished epoch.")
RESUME_HEADS = "run the same command again: head training picks up after its last finished epoch."


def _names(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help="override config keys; values are YAML. Repeatable, several pairs per flag, each key "
             "once: --set epochs=10 lr=0.1 --set 'granularities=[{dim: 32, temperature: 2}]'")


def _parser(subparsers: argparse._SubParsersAction, name: str, summary: str,
            description: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=summary, description=description)


def cmd_config(args: argparse.Namespace) -> int:
    from mgkd.config import apply_overrides, default_config, resolve

    from mgkd.config import ExperimentConfig

    if args.peers:
        if args.teacher or args.student:
            raise ConfigError("give either --teacher and --student (a pair) or --peers "
                              "(an online peer group), not both.")
        config = resolve(ExperimentConfig.from_dict({
            "peers": args.peers, "dataset": args.dataset, "method": args.method or "dml",
            "mode": args.mode or "mag"}))
    elif not (args.teacher and args.student):
        raise ConfigError("give --teacher and --student (a pair), or --peers ARCH ARCH "
                          "... (2 to 4 architectures trained together with method dml).")
    else:
        config = default_config(args.teacher, args.student, args.dataset,
                                method=args.method or "kd", mode=args.mode or "mas")
    config = resolve(apply_overrides(config, args.overrides))
    sys.stdout.write(config.to_yaml())
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from mgkd.data import download_dataset
    path = download_dataset(args.dataset, args.data_dir)
    print(f"{args.dataset} is ready under {path}")
    return 0


TOY_SWEEP = "sweeps/toy-market1501.yaml"


def cmd_toy_data(args: argparse.Namespace) -> int:
    from mgkd.data.toy_reid import OFFICIAL_FOLDER, write_market1501

    if args.identities < 8:
        raise ConfigError(f"--identities: {args.identities} is too few; give 8 or more (a batch "
                          "holds 16 identities x 4 images, and some are held out for validation).")
    root = write_market1501(args.data_dir, identities=args.identities, cameras=3, per_camera=2,
                            test_identities=max(4, args.identities // 4), seed=args.seed)
    print(f"a toy Market-1501 ({args.identities} training identities, 3 cameras, real JPEG files "
          f"in the official names and layout) is in {root / OFFICIAL_FOLDER}. Try:\n"
          f"  mgkd tune {TOY_SWEEP}    # a small re-ID sweep on it, a few minutes on 2 cores\n"
          f"  mgkd config --teacher osnet_x0_25 --student osnet_x0_25 --dataset market1501 "
          f"--method rkd --set data_dir={args.data_dir} epochs=4 teacher_epochs=10 head_epochs=2 "
          "'data_options={height: 64, width: 32}' > toy.yaml && "
          "mgkd train --config toy.yaml --out runs/toy-reid")
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from mgkd.config import ExperimentConfig, apply_overrides
    from mgkd.runner import run_teacher
    config = ExperimentConfig.from_dict({
        "teacher": args.arch, "student": args.arch, "dataset": args.dataset,
        "data_dir": args.data_dir, "teacher_epochs": args.epochs, "teacher_seed": args.seed,
        "device": args.device})
    config = apply_overrides(config, args.overrides)
    result = run_teacher(config, args.out, resume=args.resume)
    print(f"teacher saved to {result.out_dir / 'teacher.pt'}  {_outcome_line(result.final)}")
    return 0


def cmd_heads(args: argparse.Namespace) -> int:
    from mgkd.config import ExperimentConfig, apply_overrides
    from mgkd.runner import fill_head_bank, teacher_facts
    facts = teacher_facts(args.teacher)
    arch = args.arch or facts.get("arch")
    if arch is None:
        raise ConfigError(f"heads: {args.teacher} does not say its architecture; add --arch NAME "
                          f"(one of {_names(MODEL_NAMES)}).")
    dataset = args.dataset or facts.get("dataset")
    if dataset is None:
        raise ConfigError(f"heads: {args.teacher} does not say which data set it was trained on; "
                          f"add --dataset NAME (one of {_names(DATASET_NAMES)}).")
    data_options = facts.get("data_options") if dataset == facts.get("dataset") else None
    config = ExperimentConfig.from_dict({
        "teacher": arch, "student": arch, "teacher_checkpoint": args.teacher,
        "dataset": dataset, "data_dir": args.data_dir, "head_epochs": args.epochs,
        "teacher_seed": args.seed, "device": args.device, "mode": "mag",
        **({"data_options": data_options} if data_options else {}),
        **({"cache_dir": args.cache_dir} if args.cache_dir else {})})
    config = apply_overrides(config, args.overrides)
    levels = [(dim, float(temp)) for dim in args.dims for temp in args.temperatures]
    for dim, temp in levels:  # the same range checks a config gets
        config.replace(granularities=[{"dim": dim, "temperature": temp}])
    paths = fill_head_bank(config, levels)
    for path in paths:
        print(path)
    return 0


def _outcome_line(final: dict) -> str:
    """``val_acc 71.20  test_acc 70.85`` (or the run's objective and its test counterpart)."""
    parts = []
    for key, value in final.items():
        if key.startswith(("val_", "test_")) and not key.endswith("_at_best_val"):
            shown = "n/a (no validation split)" if value is None else f"{value:.2f}"
            parts.append(f"{key} {shown}")
    return "  ".join(parts)


def cmd_train(args: argparse.Namespace) -> int:
    from mgkd.config import apply_overrides, load_config
    from mgkd.runner import run_training
    config = apply_overrides(load_config(args.config), args.overrides)
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads {args.threads}: give 1 or more CPU threads.")
        import torch
        torch.set_num_threads(args.threads)
    result = run_training(config, args.out, resume=args.resume)
    print(f"done: {result.out_dir}  {_outcome_line(result.final)} (test metrics are reported, "
          "never used to select)")
    return 0


def add_core_commands(subparsers: argparse._SubParsersAction) -> None:
    p = _parser(subparsers, "config", "print a complete default experiment config",
                "Print a complete experiment config (YAML) for a teacher -> student pair (or, "
                "with --peers, an online peer group) with every default filled in: the method's "
                "loss weights and options, the paper's two granularity levels, lr. Save it, "
                "edit it, run it with `mgkd train --config`.")
    p.add_argument("--teacher", metavar="ARCH",
                   help=f"teacher architecture; one of {_names(MODEL_NAMES)} (default: none; "
                        "required with --student unless --peers is given)")
    p.add_argument("--student", metavar="ARCH",
                   help="student architecture; same choices as --teacher (default: none)")
    p.add_argument("--peers", nargs="+", metavar="ARCH",
                   help="instead of a pair: 2 to 4 architectures trained together from scratch "
                        "(deep mutual learning, method dml; default: none)")
    p.add_argument("--dataset", required=True, metavar="NAME",
                   help=f"one of {_names(DATASET_NAMES)}")
    p.add_argument("--method", default=None, metavar="NAME",
                   help=f"KD method (default kd; dml with --peers); one of {_names(METHOD_NAMES)}")
    p.add_argument("--mode", default=None, choices=MODE_NAMES,
                   help="plain: no granularity terms; mag: granularity terms on the teacher "
                        "logits; mas: granularity terms and the stable target (default mas; mag "
                        "with --peers: MDP-DML, plain: DML)")
    _add_set(p)
    p.set_defaults(handler=cmd_config)

    p = _parser(subparsers, "download", "download a CIFAR data set (the only network use)",
                "Fetch torchvision's CIFAR archive into --data-dir and check its md5. The only "
                "command that touches the network; digits and synthetic need no download.")
    p.add_argument("dataset", choices=["cifar100", "cifar10"], help="cifar100 or cifar10")
    p.add_argument("--data-dir", default="./data", metavar="DIR",
                   help="where the extracted folder goes (default ./data)")
    p.set_defaults(handler=cmd_download)

    p = _parser(subparsers, "toy-data", "write a toy Market-1501 folder to try re-ID without it",
                "Write a small Market-1501 folder of real JPEG files in the official names and "
                "layout (distinct, learnable identities; junk and distractor files as in the real "
                "archive): re-ID training, sweeps and reports run on it in minutes on a CPU. "
                f"{TOY_SWEEP} sweeps it.")
    p.add_argument("dataset", choices=["market1501"], help="the format to write: market1501")
    p.add_argument("--data-dir", default="./data/toy-reid", metavar="DIR",
                   help=f"where to write it (default ./data/toy-reid, the data_dir of {TOY_SWEEP})")
    p.add_argument("--identities", type=int, default=32, metavar="N",
                   help="training identities (default 32; a quarter as many test identities)")
    p.add_argument("--seed", type=int, default=0, help="what the identities look like (default 0)")
    p.set_defaults(handler=cmd_toy_data)

    p = _parser(subparsers, "teacher", "train a teacher network",
                "Train one network with cross-entropy into OUT/teacher.pt (plus metrics.json, "
                "tensorboard/). Every epoch is checkpointed to OUT/checkpoint.pt; after an "
                "interruption the same command plus --resume continues.")
    p.add_argument("--arch", required=True, metavar="ARCH",
                   help=f"architecture; one of {_names(MODEL_NAMES)}")
    p.add_argument("--dataset", required=True, metavar="NAME",
                   help=f"one of {_names(DATASET_NAMES)}")
    p.add_argument("--epochs", type=int, required=True, metavar="N", help="training epochs")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (created if missing; must not hold another teacher run)")
    p.add_argument("--data-dir", default="./data", metavar="DIR",
                   help="where CIFAR lives (default ./data)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--device", default="auto",
                   help="auto (the visible GPU, else CPU), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--resume", action="store_true",
                   help="continue the teacher run in --out after its last finished epoch")
    _add_set(p)
    p.set_defaults(handler=cmd_teacher, resume_hint=RESUME_TEACHER)

    p = _parser(subparsers, "heads", "fill the head bank for a teacher ahead of time",
                "Train every granularity head (all --dims x --temperatures) for a teacher "
                "checkpoint and store them in the head bank under --cache-dir; runs with the same "
                "teacher then load them. Heads sharing a teacher train together, one teacher "
                "forward per batch, checkpointed every epoch.")
    p.add_argument("--teacher", required=True, metavar="CKPT", help="teacher checkpoint file")
    p.add_argument("--arch", metavar="ARCH",
                   help="teacher architecture (default: read from the checkpoint, which `mgkd "
                        "teacher` and the cache write)")
    p.add_argument("--dims", type=int, nargs="+", required=True, metavar="D",
                   help="head widths, 1 to 4096")
    p.add_argument("--temperatures", type=float, nargs="+", required=True, metavar="T",
                   help="head temperatures, > 0")
    p.add_argument("--epochs", type=int, required=True, metavar="N", help="head training epochs")
    p.add_argument("--dataset", metavar="NAME",
                   help="default: the data set the teacher checkpoint was trained on; one of "
                        f"{_names(DATASET_NAMES)}")
    p.add_argument("--data-dir", default="./data", metavar="DIR",
                   help="where CIFAR lives (default ./data)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="cache holding the head bank (default ~/.cache/mgkd)")
    p.add_argument("--seed", type=int, default=0,
                   help="teacher_seed of the runs that use the heads (default 0)")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda or cuda:N (default auto)")
    _add_set(p)
    p.set_defaults(handler=cmd_heads, resume_hint=RESUME_HEADS)

    p = _parser(subparsers, "train", "run one distillation or final training from a config",
                "Run one config: train (or load from the cache) its teacher and heads, then distil "
                "the student. OUT gets config.yaml, metrics.json, tensorboard/ (the tags and "
                "hparams a sweep trial writes), checkpoint.pt (every epoch) and student.pt.")
    p.add_argument("--config", required=True, metavar="FILE",
                   help="experiment config YAML (from `mgkd config` or `mgkd export`)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (created if missing; must not hold another run, must "
                        "not lie inside a sweep's run dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out after its last finished epoch")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's own choice; a sweep trial uses one "
                        "per CPU it was given: match it to reproduce a trial bit for bit)")
    _add_set(p)
    p.set_defaults(handler=cmd_train, resume_hint=RESUME_TRAIN)
