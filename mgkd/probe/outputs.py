"""One pass of a frozen model over a split: logits and, if asked, every feature the model exposes
(``model(x, features=True)``: the stem, each stage, last the pooled embedding), gathered on the
CPU. The model runs in eval mode under ``torch.inference_mode``: no BatchNorm statistic moves, no
gradient is kept."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mgkd.catalog.datasets import dataset_task
from mgkd.catalog.tasks import CLASSIFICATION
from mgkd.data import DatasetSpec, DeviceBatches, ImageSplit, load_splits
from mgkd.errors import ConfigError
from mgkd.probe.modelfile import TrainedOn

Keep = Literal["none", "embedding", "all"]
SPLITS = ("test", "val")


@dataclass
class Outputs:
    """Per sample (rows in split order): ``logits`` (N, classes), ``labels`` (N,) and the kept
    ``features`` (each (N, ...); the embedding is the last)."""

    logits: torch.Tensor
    labels: torch.Tensor
    features: list[torch.Tensor]


def stage_names(count: int) -> list[str]:
    """Names of a zoo model's ``count`` features: stem, stage1 .. stageK, embedding."""
    return ["stem", *(f"stage{i}" for i in range(1, count - 1)), "embedding"]


def held_out_split(data: TrainedOn, data_dir: str | Path, split: str, what: str
                   ) -> tuple[ImageSplit, DatasetSpec]:
    """The data set's ``test`` split, or the ``val`` split its training held out (the same images,
    carved with the model's own split settings). Classification data sets only."""
    if split not in SPLITS:
        raise ConfigError(f"{what}: --split must be one of {', '.join(SPLITS)}, got {split!r}")
    if dataset_task(data.dataset) != CLASSIFICATION:  # before anything is read
        raise ConfigError(f"{what}: {data.dataset} is a person re-ID data set; this analysis "
                          "needs a classification data set (class probabilities).")
    val_fraction = data.val_fraction if split == "val" else 0.0
    if split == "val" and val_fraction == 0:
        raise ConfigError(f"{what}: the model was trained with val_fraction 0, so no training "
                          "images were held out; use --split test.")
    splits = load_splits(data.dataset, data_dir, val_fraction=val_fraction,
                         train_subset=data.train_subset, seed=data.split_seed,
                         options=data.options)
    chosen = splits.test if split == "test" else splits.val
    assert isinstance(chosen, ImageSplit)
    return chosen, splits.spec


def check_classes(model: nn.Module, arch: str, spec: DatasetSpec, what: str) -> None:
    """The model's classifier fits the data set's class count."""
    classes = getattr(model, "num_classes", None)
    if classes != spec.num_classes:
        raise ConfigError(f"{what}: the {arch} has {classes} classes but {spec.name} has "
                          f"{spec.num_classes}; give --dataset the data set the model was "
                          "trained on.")


def run_model(model: nn.Module, split: ImageSplit, spec: DatasetSpec, *, keep: Keep = "none",
              batch_size: int = 256, device: torch.device | str = "cpu") -> Outputs:
    """Logits (and the ``keep`` features) of ``model`` over ``split``, normalised with ``spec``'s
    statistics, in order. ``model`` is left in eval mode on ``device``."""
    count = len(split)
    if count == 0:
        raise ConfigError(f"{spec.name}: the split to evaluate holds no images")
    model = model.to(device).eval()
    logits: torch.Tensor | None = None
    kept: list[torch.Tensor] = []
    done = 0
    with torch.inference_mode():
        for batch in DeviceBatches(split.to(device), spec, batch_size, train=False):
            feats, out = model(batch.images, features=True)
            chosen = {"all": feats, "embedding": feats[-1:], "none": []}[keep]
            if logits is None:  # filled in place: no list of batches to concatenate later
                logits = torch.empty((count, out.shape[1]))
                kept = [torch.empty((count, *f.shape[1:])) for f in chosen]
            rows = slice(done, done + out.shape[0])
            logits[rows] = out.float().cpu()
            for target, feature in zip(kept, chosen):
                target[rows] = feature.float().cpu()
            done += out.shape[0]
    assert logits is not None and done == count
    return Outputs(logits, split.labels.cpu(), kept)
