"""What a run learns and how it is scored: image classification or person re-identification.

The *task* (``config.task``, by default the data set's) decides three things and nothing else:

* the supervised base loss every network trains with — cross-entropy for classification;
  label-smoothed identity cross-entropy plus the batch-hard triplet loss for re-ID;
* how a held-out split is scored each epoch — accuracy and loss, or CMC rank-k and mAP of a
  query set against a gallery;
and, through :mod:`mgkd.objectives`, the default objective a run selects its best epoch by.

The engine, the distillation task, the trainables, sweeps and analysis stay generic: they ask the
task, found by name in :data:`TASKS`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from mgkd.data import Batch, ImageSplit, RetrievalSplit
from mgkd.reid.losses import ReidBaseLoss
from mgkd.reid.metrics import retrieval_metrics

# Triplet margin and label smoothing of the re-ID base loss: the usual values (DESIGN.md §9).
REID_LABEL_SMOOTHING = 0.1
REID_TRIPLET_MARGIN = 0.3


class Scorable(Protocol):
    """What evaluation needs from a training task."""

    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]: ...

    def embed(self, batch: Batch) -> torch.Tensor: ...


BatchesOf = Callable[[ImageSplit], Iterable[Batch]]


class Task(Protocol):
    name: str
    metric_names: tuple[str, ...]  # what ``evaluate`` returns, without the split prefix
    extra_losses: tuple[str, ...]  # base-loss terms besides ``ce`` (logged as ``loss_<name>``)
    shown_metrics: tuple[str, ...]  # what a progress line shows

    def base_loss(self, logits: torch.Tensor, embedding: torch.Tensor,
                  labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The supervised terms, named ``ce`` (always) and e.g. ``triplet``; not weighted."""
        ...

    def evaluate(self, model: Scorable, split: Any, batches_of: BatchesOf,
                 autocast: Callable[[], contextlib.AbstractContextManager]) -> dict[str, float]: ...


@dataclass(frozen=True)
class Classification:
    name: str = "classification"
    metric_names: tuple[str, ...] = ("acc", "loss")
    extra_losses: tuple[str, ...] = ()
    shown_metrics: tuple[str, ...] = ("val_acc", "test_acc")

    def base_loss(self, logits: torch.Tensor, embedding: torch.Tensor,
                  labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(logits, labels)}

    def evaluate(self, model: Scorable, split: ImageSplit, batches_of: BatchesOf,
                 autocast: Callable[[], contextlib.AbstractContextManager]) -> dict[str, float]:
        """Accuracy in % and mean loss; one host sync for the whole split."""
        loss_sum = correct = None
        for batch in batches_of(split):
            with autocast():
                batch_loss, batch_correct = model.score(batch)
            loss_sum = batch_loss.float() if loss_sum is None else loss_sum + batch_loss.float()
            correct = batch_correct.float() if correct is None else correct + batch_correct.float()
        assert loss_sum is not None and correct is not None  # split is not empty
        loss_value, correct_value = torch.stack([loss_sum, correct]).tolist()
        return {"acc": 100.0 * correct_value / len(split), "loss": loss_value / len(split)}


@dataclass(frozen=True)
class PersonReid:
    name: str = "reid"
    metric_names: tuple[str, ...] = ("map", "rank1", "rank5", "rank10", "map_se")
    extra_losses: tuple[str, ...] = ("triplet",)
    shown_metrics: tuple[str, ...] = ("val_map", "val_rank1", "test_map", "test_rank1")
    loss: ReidBaseLoss = ReidBaseLoss(ce_epsilon=REID_LABEL_SMOOTHING,
                                      triplet_margin=REID_TRIPLET_MARGIN)

    def base_loss(self, logits: torch.Tensor, embedding: torch.Tensor,
                  labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.loss(logits, embedding, labels)

    def _embed_all(self, model: Scorable, split: ImageSplit, batches_of: BatchesOf,
                   autocast: Callable[[], contextlib.AbstractContextManager]) -> torch.Tensor:
        parts = []
        for batch in batches_of(split):
            with autocast():
                parts.append(model.embed(batch).float())
        return torch.cat(parts)

    def evaluate(self, model: Scorable, split: RetrievalSplit, batches_of: BatchesOf,
                 autocast: Callable[[], contextlib.AbstractContextManager]) -> dict[str, float]:
        """CMC rank-1/5/10 and mAP (in %) of the query set against the gallery, on the device."""
        query = self._embed_all(model, split.query, batches_of, autocast)
        gallery = self._embed_all(model, split.gallery, batches_of, autocast)
        result = retrieval_metrics(query, split.query.labels, split.query.cameras,
                                   gallery, split.gallery.labels, split.gallery.cameras)
        return {"map": float(result.map), "rank1": float(result.rank[1]),
                "rank5": float(result.rank[5]), "rank10": float(result.rank[10]),
                "map_se": float(result.map_se)}


TASKS: dict[str, Task] = {task.name: task for task in (Classification(), PersonReid())}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        from mgkd.errors import ConfigError
        raise ConfigError(f"task: unknown value {name!r}; allowed: {', '.join(TASK_NAMES)}.") from None

