"""A whole sweep with and without the teacher view bank, side by side in one run.

    .venv/bin/python bench/bank_sweep.py [--samples 8] [--epochs 30] [--images 256]

A CIFAR-shaped sweep (the ``synthetic`` data set: 32x32 RGB, 100 classes, crop padding 4 and
flips, so 162 views an image) of ``--samples`` kd/mas trials, every trial run to the end (no early
stopping: both variants do the same work):

1. trains the teacher and the head bank once (not timed: both variants reuse them);
2. runs the sweep with ``teacher_bank: off`` (the teacher runs online in every step), timed;
3. builds the float16 bank on its own, timed (what the first sweep of a teacher pays once);
4. runs the same sweep reading the bank, timed; the bank variant's wall time is 3 + 4;
5. prints both wall times, the ratio, and the teacher passes over the training set each variant
   makes (online: trials x epochs; bank: one per view, 162).

The bank pays when trials x epochs is well above the 162 views: a real CIFAR-100 sweep (240 epochs a
trial) passes the training set thousands of times; this one is sized to finish in minutes.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402
import torch  # noqa: E402

from mgkd.config.sweep import SweepSpec, plan  # noqa: E402
from mgkd.data import load_config_splits  # noqa: E402
from mgkd.data.augment import Augmenter  # noqa: E402
from mgkd.io import file_sha256  # noqa: E402
from mgkd.knowledge.bank_use import prepare_bank  # noqa: E402
from mgkd.knowledge.prepare import prepare_knowledge  # noqa: E402
from mgkd.knowledge.teacher import ensure_teacher, load_teacher  # noqa: E402
from search.tune import run_sweep  # noqa: E402
from spaces import build_space  # noqa: E402

TEACHER, STUDENT = "resnet56", "resnet20"


def sweep_spec(storage: Path, name: str, bank: str, args: argparse.Namespace) -> SweepSpec:
    return SweepSpec.from_dict({
        "name": name, "storage_path": str(storage),
        "pairs": [{"teacher": TEACHER, "student": STUDENT}], "methods": ["kd"], "modes": ["mas"],
        "num_samples": args.samples, "max_concurrent_trials": 2,
        "space": {"preset": "full", "g*_dim": {"type": "categorical", "choices": [64, 256]},
                  "g*_temperature": {"type": "categorical", "choices": [2, 8]}},
        "resources_per_trial": {"cpu": 1, "gpu": 0},
        "scheduler": {"grace_period": args.epochs, "reduction_factor": 2},  # no early stopping
        "searcher": {"seed": 0},
        "checkpoint_every": args.epochs,
        "base": {"dataset": "synthetic",
                 "data_options": {"num_train": args.images * 2, "num_test": 64,
                                  "num_classes": 100, "image_size": 32},
                 "val_fraction": 0.5, "epochs": args.epochs, "batch_size": 64,
                 "teacher_epochs": 2, "head_epochs": 1, "device": "cpu",
                 "teacher_bank": bank, "cache_dir": str(storage / "cache")}})


def timed_sweep(spec: SweepSpec) -> float:
    start = time.perf_counter()
    run_sweep(spec)
    ray.shutdown()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8, help="trials (default 8)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs a trial (default 30)")
    parser.add_argument("--images", type=int, default=256,
                        help="training images (as many again are held out for validation)")
    args = parser.parse_args(argv)
    # the sweeps' progress tables and the bank's build lines, as `mgkd tune` shows them
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    storage = Path(tempfile.mkdtemp(prefix="mgkd-bank-sweep-"))
    online_spec = sweep_spec(storage, "online", "off", args)
    bank_spec = sweep_spec(storage, "bank", "float16", args)
    (study,) = plan(bank_spec)
    splits = load_config_splits(study.base)
    prepare_knowledge(study.base, splits, bank_runs=[],
                      extra_levels=build_space(bank_spec.space, study.base).head_levels())

    online = timed_sweep(online_spec)

    device = torch.device("cpu")
    path = ensure_teacher(study.base, splits)
    teacher = load_teacher(path, study.base.teacher, splits.spec.num_classes, device)
    start = time.perf_counter()
    prepared = prepare_bank([(study.base, args.samples * args.epochs)], splits, teacher,
                            file_sha256(path), device)
    build = time.perf_counter() - start
    if prepared.path is None:
        raise SystemExit(f"no bank was built: {prepared.note}")
    banked = timed_sweep(bank_spec)

    views = Augmenter(splits.spec, device, train=True).view_count
    passes = args.samples * args.epochs
    print(f"{args.samples} trials x {args.epochs} epochs, {TEACHER} -> {STUDENT} kd mas, "
          f"{len(splits.train)} synthetic 32x32 training images, 100 classes, 2 trials at once")
    print(f"  teacher passes over the training set: online {passes}, bank {views} (one per view)")
    print(f"  sweep, teacher online:           {online:7.1f} s")
    print(f"  bank build (once per teacher):   {build:7.1f} s")
    print(f"  sweep reading the bank:          {banked:7.1f} s")
    print(f"  ratio online / (build + bank):   {online / (build + banked):7.2f}")
    print(f"  ratio online / bank sweep alone: {online / banked:7.2f} (a later sweep of this "
          "teacher finds the bank built)")


if __name__ == "__main__":
    main()
