"""What `mgkd tune` costs over running the same trials by hand: one run, side by side.

    .venv/bin/python bench/tune_overhead.py [--samples 8] [--epochs 4]

1. prepares the teacher and head bank once (not timed: both paths reuse them);
2. times a sweep through ``run_sweep`` — Ray start, Tuner, searcher, ASHA (no early stopping here, so
   the work is equal), checkpoints and shutdown all included;
3. times the very same trial configs run directly, one after another, in this process;
4. prints the ratio of wall times.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from mgkd.config import ExperimentConfig
from mgkd.config.sweep import SweepSpec, plan
from mgkd.data import load_config_splits
from mgkd.distill.learner import make_trainer
from mgkd.knowledge.prepare import prepare_knowledge
from search.tune import run_sweep  # noqa: E402
from spaces import build_space  # noqa: E402


def sweep_spec(storage: Path, samples: int, epochs: int) -> SweepSpec:
    return SweepSpec.from_dict({
        "name": "overhead", "storage_path": str(storage),
        "pairs": [{"teacher": "resnet20", "student": "resnet8"}], "methods": ["kd"],
        "modes": ["mas"], "num_samples": samples, "max_concurrent_trials": 2,
        "space": {"preset": "full", "g*_dim": {"type": "categorical", "choices": [64, 256]},
                  "g*_temperature": {"type": "categorical", "choices": [2, 8]}},
        "resources_per_trial": {"cpu": 1, "gpu": 0},
        "scheduler": {"grace_period": epochs, "reduction_factor": 2},  # no early stopping
        "checkpoint_every": 2,
        "base": {"dataset": "digits", "epochs": epochs, "teacher_epochs": 3, "head_epochs": 1,
                 "device": "cpu", "cache_dir": str(storage / "cache")}})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    storage = Path(tempfile.mkdtemp(prefix="mgkd-overhead-"))
    spec = sweep_spec(storage, args.samples, args.epochs)
    (study,) = plan(spec)
    space = build_space(spec.space, study.base)

    data = load_config_splits(study.base)
    knowledge = prepare_knowledge(study.base, data, extra_levels=space.head_levels())

    start = time.perf_counter()
    result = run_sweep(spec)
    ray.shutdown()
    through_tune = time.perf_counter() - start

    configs = [ExperimentConfig.from_dict(json.loads((d / "params.json").read_text())["experiment"])
               for d in sorted(result.run_dir.iterdir()) if (d / "params.json").is_file()]
    start = time.perf_counter()
    for config in configs:
        make_trainer(config, data, knowledge).fit()
    direct = time.perf_counter() - start

    print(f"{len(configs)} trials x {args.epochs} epochs, resnet20 -> resnet8 on digits, "
          f"2 CPUs (torch threads {torch.get_num_threads()} direct, 1 per trial in Ray)")
    print(f"  direct, one after another: {direct:7.1f} s")
    print(f"  mgkd tune (Ray included):  {through_tune:7.1f} s")
    print(f"  ratio tune / direct:       {through_tune / direct:7.2f}")


if __name__ == "__main__":
    main()
