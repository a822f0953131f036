"""Tiny sweeps on synthetic data for the Ray tests: seconds per trial on two CPU cores."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna

from analysis.optuna_db import open_read_only
from mgkd.config.sweep import SweepSpec

TINY_SPACE = {"preset": "full", "g*_dim": {"type": "categorical", "choices": [16, 64, 256]},
              "g*_temperature": {"type": "categorical", "choices": [2, 8]}}


def tiny_sweep(storage: Path, name: str = "tiny", **overrides: Any) -> SweepSpec:
    base = {"dataset": "synthetic",
            "data_options": {"num_train": 80, "num_test": 24, "num_classes": 4, "image_size": 16},
            "val_fraction": 0.25, "epochs": 4, "teacher_epochs": 1, "head_epochs": 1,
            "batch_size": 16, "device": "cpu"}
    base.update(overrides.pop("base", {}))
    data = {"name": name, "storage_path": str(storage),
            "pairs": [{"teacher": "resnet8", "student": "resnet8"}], "methods": ["kd"],
            "modes": ["mas", "plain"], "space": TINY_SPACE, "num_samples": 3,
            "max_concurrent_trials": 2, "resources_per_trial": {"cpu": 1, "gpu": 0},
            "scheduler": {"grace_period": 1, "reduction_factor": 2},
            "searcher": {"seed": 0, "multivariate": True}, "checkpoint_every": 2, "base": base}
    data.update(overrides)
    return SweepSpec.from_dict(data)


def study_trials(run_dir: Path, key: str) -> list[optuna.trial.FrozenTrial]:
    # Read-only: these run beside a sweep that may be creating the database.
    return optuna.load_study(study_name=key, storage=open_read_only(run_dir / "optuna.db")).trials


def trial_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.iterdir() if (p / "params.json").is_file())


def epochs_reported(trial_dir: Path) -> list[int]:
    lines = (trial_dir / "result.json").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if line.strip()]
