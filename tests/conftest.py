"""Shared fixtures: tiny synthetic experiments that run in a second on two CPU cores."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from mgkd.catalog.objectives import get_objective
from mgkd.config import ExperimentConfig

VAL_ACC = get_objective("val_acc")  # what a classification Trainer selects its best epoch by
TINY_DATA = {"num_train": 80, "num_test": 24, "num_classes": 4, "image_size": 16, "seed": 0}


MGKD = Path(sys.executable).parent / "mgkd"  # the console script pyproject.toml declares


def mgkd(*args, cwd=None):
    """Run the ``mgkd`` console script; returns the completed process (text output)."""
    return subprocess.run([str(MGKD), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def assert_clean_error(result, *words):
    """Exit status 2, no traceback, one paragraph on stderr that holds every word."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.count("\n") == 0, message  # one paragraph
    for word in words:
        assert word in message, message


def tiny_config_dict(cache_dir: Path, **overrides: Any) -> dict[str, Any]:
    base = {
        "teacher": "resnet8x4", "student": "resnet8", "dataset": "synthetic",
        "data_options": dict(TINY_DATA), "val_fraction": 0.25, "teacher_epochs": 1,
        "head_epochs": 1, "epochs": 2, "batch_size": 16, "device": "cpu",
        "cache_dir": str(cache_dir), "method": "kd", "mode": "mas",
        "granularities": [{"dim": 8, "temperature": 2.0, "weight": 1.0},
                          {"dim": 16, "temperature": 8.0, "weight": 0.5}],
    }
    base.update(overrides)
    return base


@pytest.fixture
def tiny_config(tmp_path: Path):
    """A factory: ``tiny_config(method="at", mode="mag")`` -> ExperimentConfig."""
    def make(**overrides: Any) -> ExperimentConfig:
        return ExperimentConfig.from_dict(tiny_config_dict(tmp_path / "cache", **overrides))
    return make


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)
