"""A model file for the analyses: a ``teacher.pt`` / ``student.pt`` (or the run dir holding one),
RepDistiller's or mdistiller's ``ckpt_epoch_*.pth`` or a bare state dict, read through the
restricted unpickler and loaded strictly into its zoo architecture.

Besides the weights it finds what the model was trained on, so an analysis evaluates it on the
right data without being told: a teacher file records its data recipe; a ``student.pt`` written by
``mgkd train`` has the run's ``config.yaml`` beside it. Files that say neither (RepDistiller's)
need ``--arch`` / ``--dataset``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from mgkd.catalog.datasets import DATASET_NAMES, dataset_entry
from mgkd.catalog.models import MODEL_NAMES, model_entry
from mgkd.errors import ConfigError
from mgkd.io import safe_torch_load
from mgkd.models.identify import classes_of
from mgkd.models.loading import load_zoo_model, state_dict_of

# What a directory argument stands for, in the order tried.
FILES_IN_A_RUN_DIR = ("student.pt", "teacher.pt")


@dataclass(frozen=True)
class TrainedOn:
    """The data a model was trained on, as far as its file tells (the split settings say which
    training images were held out for validation)."""

    dataset: str
    options: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.1
    split_seed: int = 0
    train_subset: int | None = None


@dataclass
class ModelFile:
    """A loaded model (CPU, eval mode) and what its file says about it."""

    path: Path
    model: nn.Module
    arch: str
    num_classes: int
    trained_on: TrainedOn | None


def resolve_model_path(path: str | Path, what: str) -> Path:
    """``path`` itself, or the model file inside the run dir ``path``."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in FILES_IN_A_RUN_DIR:
            if (path / name).is_file():
                return path / name
        raise ConfigError(f"{what}: {path} is a directory holding none of "
                          f"{', '.join(FILES_IN_A_RUN_DIR)}; give a model file or the out dir of "
                          "`mgkd train` / `mgkd teacher`.")
    if not path.is_file():
        raise ConfigError(f"{what}: {path} does not exist; give a model file (teacher.pt, "
                          "student.pt, a RepDistiller ckpt_epoch_*.pth) or a run dir holding one.")
    return path


def _from_recipe(raw: dict) -> TrainedOn | None:
    recipe = raw.get("recipe")
    if not (isinstance(recipe, dict) and isinstance(recipe.get("data"), str)):
        return None
    data = json.loads(recipe["data"])
    return TrainedOn(dataset=data["dataset"], options=data.get("options") or {},
                     val_fraction=data.get("val_fraction", 0.1),
                     split_seed=data.get("split_seed", 0), train_subset=data.get("train_subset"))


def _from_run_config(path: Path, arch: str) -> TrainedOn | None:
    """The data of the ``mgkd train`` run whose ``config.yaml`` lies beside ``path``."""
    config_file = path.parent / "config.yaml"
    ours = path.name == "student.pt" or re.fullmatch(r"peer\d+\.pt", path.name)
    if not ours or not config_file.is_file():
        return None
    config = yaml.safe_load(config_file.read_text()) or {}
    if not isinstance(config, dict) or "dataset" not in config:
        return None
    archs = [config.get("student"), *(config.get("peers") or [])]  # a pair's, or a peer group's
    if arch not in archs:
        return None
    return TrainedOn(dataset=config["dataset"], options=config.get("data_options") or {},
                     val_fraction=config.get("val_fraction", 0.1),
                     split_seed=config.get("split_seed", 0),
                     train_subset=config.get("train_subset"))


def load_model_file(path: str | Path, *, arch: str | None = None, what: str = "MODEL_FILE"
                    ) -> ModelFile:
    """Read and load a model file (or the one in a run dir). ``arch`` overrides (and is needed
    for files that do not name) the architecture. Raises ConfigError naming the file and the fix."""
    path = resolve_model_path(path, what)
    raw = safe_torch_load(path, what)
    recorded = raw.get("arch") if isinstance(raw, dict) else None
    if arch is not None:
        model_entry(arch, "--arch")
    elif isinstance(recorded, str) and recorded in MODEL_NAMES:
        arch = recorded
    else:
        raise ConfigError(f"{what}: {path} does not say its architecture; add --arch NAME (one "
                          f"of {', '.join(MODEL_NAMES)}).")
    state = state_dict_of(raw, f"{what}: {path}")
    num_classes = raw.get("num_classes") if isinstance(raw, dict) else None
    if not isinstance(num_classes, int):
        num_classes = classes_of(state)
    if num_classes is None:
        raise ConfigError(f"{what}: {path} holds no classifier weights; give a zoo model's "
                          "checkpoint.")
    model = load_zoo_model(arch, num_classes, state, source=f"{what}: {path}", key="--arch")
    trained_on = None
    if isinstance(raw, dict):
        trained_on = _from_recipe(raw) or _from_run_config(path, arch)
    return ModelFile(path, model.eval(), arch, num_classes, trained_on)


def data_of(model_file: ModelFile, dataset: str | None, what: str) -> TrainedOn:
    """The data set to evaluate ``model_file`` on: ``dataset`` if given (with default split
    settings unless it is the one the model was trained on), else the one its file records."""
    if dataset is not None:
        dataset_entry(dataset, "--dataset")
        known = model_file.trained_on
        return known if known is not None and known.dataset == dataset else TrainedOn(dataset)
    if model_file.trained_on is None:
        raise ConfigError(f"{what}: {model_file.path} does not say which data set it was trained "
                          f"on; add --dataset NAME (one of {', '.join(DATASET_NAMES)}).")
    return model_file.trained_on
