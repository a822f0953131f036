"""The tasks' implementations: the supervised base loss every network trains with and how a
held-out split is scored (the tasks and their metric names are listed in
:mod:`mgkd.catalog.tasks`, whose entries name these classes).

* classification: cross-entropy; accuracy and mean loss of the learner's classifier(s);
* person re-ID: label-smoothed identity cross-entropy plus the batch-hard triplet loss; CMC rank-k
  and mAP of a query set ranked against a gallery by the learner's embedding.

The engine, the learners, the trainables, sweeps and analysis stay generic: they ask the task,
found by name with :func:`get_task`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F

from mgkd.catalog.tasks import CLASSIFICATION, REID, TaskEntry, task_entry
from mgkd.data import Batch, ImageSplit, RetrievalSplit
from mgkd.reid.losses import ReidBaseLoss
from mgkd.reid.evaluation import RetrievalOptions, flip_average, score_retrieval
from mgkd.reid.metrics import RetrievalResult
from mgkd.training.learner import Learner
from mgkd.training.outcomes import SampleOutcomes

# Triplet margin and label smoothing of the re-ID base loss: the usual values (torchreid's).
REID_LABEL_SMOOTHING = 0.1
REID_TRIPLET_MARGIN = 0.3

BatchesOf = Callable[[ImageSplit], Iterable[Batch]]
Autocast = Callable[[], contextlib.AbstractContextManager]


class Task(Protocol):
    entry: TaskEntry  # the catalog's facts: name, metric names, extra losses, default objective

    def base_loss(self, logits: torch.Tensor, embedding: torch.Tensor,
                  labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The supervised terms, named ``ce`` (always) and e.g. ``triplet``; not weighted."""
        ...

    def evaluate(self, learner: Learner, split: Any, batches_of: BatchesOf,
                 autocast: Autocast) -> dict[str, float]:
        """``entry.metric_names`` on a held-out split."""
        ...

    def evaluate_outcomes(self, learner: Learner, split: Any, batches_of: BatchesOf,
                          autocast: Autocast) -> tuple[dict[str, float], SampleOutcomes | None]:
        """``evaluate`` and the per-sample outcomes behind it (``epoch`` 0: the caller sets it);
        None where there are none."""
        ...


def score(logits: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, number correct) of one evaluation batch, each the mean over the
    classifiers whose ``logits`` are given; both device tensors."""
    loss = correct = torch.zeros((), device=labels.device)
    for classifier in logits:
        loss = loss + F.cross_entropy(classifier.float(), labels, reduction="sum")
        correct = correct + (classifier.argmax(1) == labels).sum()
    return loss / len(logits), correct / len(logits)


class Classification:
    entry = task_entry(CLASSIFICATION)

    @classmethod
    def from_config(cls, config: Any) -> "Classification":
        return cls()

    def base_loss(self, logits: torch.Tensor, embedding: torch.Tensor,
                  labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(logits, labels)}

    def evaluate(self, learner: Learner, split: ImageSplit, batches_of: BatchesOf,
                 autocast: Autocast) -> dict[str, float]:
        """Accuracy in % and mean loss; one host sync for the whole split."""
        return self._evaluate(learner, split, batches_of, autocast, keep=False)[0]

    def evaluate_outcomes(self, learner: Learner, split: ImageSplit, batches_of: BatchesOf,
                          autocast: Autocast) -> tuple[dict[str, float], SampleOutcomes | None]:
        """``evaluate`` and which samples were classified right (a learner with one classifier;
        with several, whose accuracy is a mean over them, there are no per-sample outcomes)."""
        return self._evaluate(learner, split, batches_of, autocast, keep=True)

    def _evaluate(self, learner: Learner, split: ImageSplit, batches_of: BatchesOf,
                  autocast: Autocast, keep: bool) -> tuple[dict[str, float], SampleOutcomes | None]:
        if learner.separate_classifiers:
            return _evaluate_each(learner, split, batches_of, autocast, keep)
        loss_sum = correct = None
        hits: list[torch.Tensor] | None = [] if keep else None
        for batch in batches_of(split):
            with autocast():
                logits = learner.eval_logits(batch)
                batch_loss, batch_correct = score(logits, batch.labels)
            if hits is not None and len(logits) == 1:
                hits.append(logits[0].argmax(1) == batch.labels)
            else:
                hits = None
            loss_sum = batch_loss.float() if loss_sum is None else loss_sum + batch_loss.float()
            correct = batch_correct.float() if correct is None else correct + batch_correct.float()
        assert loss_sum is not None and correct is not None  # split is not empty
        loss_value, correct_value = torch.stack([loss_sum, correct]).tolist()
        metrics = {"acc": 100.0 * correct_value / len(split), "loss": loss_value / len(split)}
        if not hits:
            return metrics, None
        # Evaluation batches may be padded past the split's end: keep its samples only.
        return metrics, SampleOutcomes(0, torch.cat(hits)[:len(split)].cpu().numpy())


def _evaluate_each(learner: Learner, split: ImageSplit, batches_of: BatchesOf,
                   autocast: Autocast, keep: bool) -> tuple[dict[str, float], SampleOutcomes | None]:
    """Each classifier scored on its own (a peer group): ``acc_peer<i>`` and ``loss_peer<i>``,
    ``acc`` / ``loss`` of the most accurate one (ties: the first) with its per-sample outcomes,
    and ``acc_ensemble``, the accuracy of the mean of their softmax outputs (for information).
    One host sync for the whole split."""
    sums: torch.Tensor | None = None  # rows: per classifier (loss, correct); last: ensemble correct
    hits: list[torch.Tensor] = []
    for batch in batches_of(split):
        with autocast():
            logits = [classifier.float() for classifier in learner.eval_logits(batch)]
        right = torch.stack([classifier.argmax(1) == batch.labels for classifier in logits])
        losses = torch.stack([F.cross_entropy(c, batch.labels, reduction="sum") for c in logits])
        ensemble = torch.stack([c.softmax(1) for c in logits]).mean(0).argmax(1) == batch.labels
        part = torch.cat([losses, right.sum(1).float(), ensemble.sum().float().reshape(1)])
        sums = part if sums is None else sums + part
        if keep:
            hits.append(right)
    assert sums is not None  # split is not empty
    values, count = sums.tolist(), len(logits)
    n = len(split)
    metrics: dict[str, float] = {}
    for i in range(count):
        metrics[f"acc_peer{i}"] = 100.0 * values[count + i] / n
        metrics[f"loss_peer{i}"] = values[i] / n
    best = max(range(count), key=lambda i: (metrics[f"acc_peer{i}"], -i))
    metrics.update(acc=metrics[f"acc_peer{best}"], loss=metrics[f"loss_peer{best}"],
                   acc_ensemble=100.0 * values[2 * count] / n)
    if not keep:
        return metrics, None
    # Evaluation batches may be padded past the split's end: keep its samples only.
    return metrics, SampleOutcomes(0, torch.cat(hits, dim=1)[best, :n].cpu().numpy())


@dataclass(frozen=True)
class PersonReid:
    """``retrieval``: how splits are scored (flip, L2, distance, re-ranking); torchreid's
    defaults unless a config sets ``eval_*`` / ``rerank``. ``triplet_weight`` weighs the
    batch-hard triplet term of the base loss."""

    entry: ClassVar[TaskEntry] = task_entry(REID)
    retrieval: RetrievalOptions = field(default_factory=RetrievalOptions)
    triplet_weight: float = 1.0  # 0: label-smoothed cross-entropy alone (torchreid's softmax)
    loss: ReidBaseLoss = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss", ReidBaseLoss(ce_epsilon=REID_LABEL_SMOOTHING,
                                                      triplet_margin=REID_TRIPLET_MARGIN,
                                                      triplet_weight=self.triplet_weight))

    @classmethod
    def from_config(cls, config: Any) -> "PersonReid":
        return cls(RetrievalOptions.of(config))

    def base_loss(self, logits: torch.Tensor, embedding: torch.Tensor,
                  labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.loss(logits, embedding, labels)

    def embed_split(self, learner: Learner, split: ImageSplit, batches_of: BatchesOf) -> torch.Tensor:
        """Float32 embeddings of every image of ``split`` (autocast off: a bf16 run evaluates
        as every reference does), flip-averaged when asked."""
        parts = []
        for batch in batches_of(split):
            with torch.autocast(device_type=batch.images.device.type, enabled=False):
                embedding = learner.embed(batch).float()
                if self.retrieval.flip:
                    mirrored = learner.embed(dataclasses.replace(batch,
                                                                 images=batch.images.flip(-1)))
                    embedding = flip_average(embedding, mirrored)
            parts.append(embedding)
        return torch.cat(parts)

    def evaluate(self, learner: Learner, split: RetrievalSplit, batches_of: BatchesOf,
                 autocast: Autocast) -> dict[str, float]:
        """CMC rank-1/5/10 and mAP (in %) of the query set against the gallery, on the device.
        ``autocast`` is not used: embeddings for evaluation are float32 on every device."""
        return self._retrieve(learner, split, batches_of, False).to_metrics()

    def evaluate_outcomes(self, learner: Learner, split: RetrievalSplit, batches_of: BatchesOf,
                          autocast: Autocast) -> tuple[dict[str, float], SampleOutcomes | None]:
        """``evaluate`` and each valid query's rank-1 hit and AP."""
        result = self._retrieve(learner, split, batches_of, True)
        assert result.query_hit is not None and result.query_ap is not None
        return result.to_metrics(), SampleOutcomes(0, result.query_hit.numpy(),
                                                   result.query_ap.numpy())

    def _retrieve(self, learner: Learner, split: RetrievalSplit, batches_of: BatchesOf,
                  per_query: bool) -> RetrievalResult:
        query = self.embed_split(learner, split.query, batches_of)
        gallery = self.embed_split(learner, split.gallery, batches_of)
        return score_retrieval(query, split.query.labels, split.query.cameras, gallery,
                               split.gallery.labels, split.gallery.cameras, self.retrieval,
                               per_query=per_query)


def _task_class(name: str) -> Any:
    module, cls = task_entry(name).implementation.split(":")
    return getattr(importlib.import_module(f"mgkd.training.{module}"), cls)


@functools.cache
def get_task(name: str) -> Task:
    """The implementation of task ``name`` with its default settings, as its catalog entry names
    it (one instance each); ConfigError naming the known tasks otherwise."""
    return _task_class(name)()


def task_of(config: Any) -> Task:
    """The task of a resolved ``ExperimentConfig`` with the settings the config gives it (for
    re-ID the evaluation options)."""
    return _task_class(config.task).from_config(config)
