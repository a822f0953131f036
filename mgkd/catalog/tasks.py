"""What a run learns and how it is scored, as a plain table that loads without torch: image
classification or person re-identification.

A data set's task (:mod:`mgkd.catalog.datasets`) decides the supervised base loss every network
trains with, how a held-out split is scored each epoch, and the objective a run selects its best
epoch by unless told otherwise. The implementations (loss and scoring) live in
:mod:`mgkd.training.tasks`; each entry here names its own. Adding a task is its implementation
plus one entry in :data:`TASKS` (and its objectives in :mod:`mgkd.catalog.objectives`).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from mgkd.errors import ConfigError

CLASSIFICATION = "classification"
REID = "reid"


@dataclass(frozen=True)
class TaskEntry:
    """``implementation``: ``"<module>:<class>"`` under ``mgkd.training``.
    ``default_objective``: what runs of this task select on unless they name another.
    ``metric_names``: what scoring a split returns, without the split prefix (val_, test_).
    ``extra_losses``: base-loss terms besides ``ce``, logged as ``loss_<name>``.
    ``shown_metrics``: what a progress line shows.
    ``summary_metrics``: what a run's summary (``metrics.json``'s ``final``) reports at the
    selected epoch, on validation and test (without the split prefix)."""

    name: str
    implementation: str
    default_objective: str
    metric_names: tuple[str, ...]
    extra_losses: tuple[str, ...]
    shown_metrics: tuple[str, ...]
    summary_metrics: tuple[str, ...]


TASKS: Mapping[str, TaskEntry] = MappingProxyType({t.name: t for t in (
    TaskEntry(CLASSIFICATION, "tasks:Classification", "val_acc", metric_names=("acc", "loss"),
              extra_losses=(), shown_metrics=("val_acc", "test_acc"), summary_metrics=("acc",)),
    # label-smoothed identity CE + batch-hard triplet; CMC rank-k and mAP of queries vs a gallery
    TaskEntry(REID, "tasks:PersonReid", "val_map",
              metric_names=("map", "rank1", "rank5", "rank10", "map_se"), extra_losses=("triplet",),
              shown_metrics=("val_map", "val_rank1", "test_map", "test_rank1"),
              summary_metrics=("map", "rank1", "rank5")),  # the paper's table: rank-1 beside mAP
)})
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
# How a re-ID split's embeddings are compared (mgkd.reid.metrics.DISTANCES implements each):
# squared Euclidean (torchreid's default) or 1 - cosine similarity.
REID_DISTANCES: tuple[str, ...] = ("euclidean", "cosine")


def task_entry(name: str) -> TaskEntry:
    """The entry of task ``name``; ConfigError naming the known tasks otherwise."""
    if name not in TASKS:
        raise ConfigError(f"task: unknown value {name!r}; allowed: {', '.join(TASK_NAMES)}.")
    return TASKS[name]
