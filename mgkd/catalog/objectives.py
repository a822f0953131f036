"""What a sweep maximises: the validation metric that selects (TPE, ASHA, ``mgkd best``, export
and the report alike), the test metric reported beside it, and how noisy it is.

A registry; torch-free. Every value is in percent: accuracy, CMC rank-1 and mAP alike. Adding an
objective is one entry in :data:`OBJECTIVES`.
"""
from __future__ import annotations

from dataclasses import dataclass

from mgkd.catalog.datasets import dataset_task
from mgkd.catalog.tasks import CLASSIFICATION, REID, TASKS, task_entry
from mgkd.errors import ConfigError


@dataclass(frozen=True)
class Objective:
    """One selectable validation metric.

    ``binomial``: a share of independent items (images, queries), so its standard error is
    ``sqrt(p(1-p)/n)`` with ``n`` the validation size; otherwise ``se_metric`` names the per-epoch
    metric in which trials report its standard error."""

    name: str  # the per-epoch validation metric trials report, e.g. val_map
    test_metric: str  # the test metric reported beside it (never used to select)
    label: str  # for people: "accuracy", "rank-1", "mAP"
    task: str  # the data-set task it belongs to
    se_metric: str | None = None
    binomial: bool = True

    @property
    def best_metric(self) -> str:
        """The running best a trial reports each epoch, ``best_<name>``."""
        return f"best_{self.name}"

    @property
    def test_at_best(self) -> str:
        """The run summary's test value at the best validation epoch."""
        return f"{self.test_metric}_at_best_val"


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("val_acc", "test_acc", "accuracy", CLASSIFICATION, binomial=True),
    Objective("val_rank1", "test_rank1", "rank-1", REID, binomial=True),  # over the val queries
    Objective("val_map", "test_map", "mAP", REID, se_metric="val_map_se", binomial=False),
)}


def objectives_for(task: str) -> tuple[str, ...]:
    """The objective names a data set of ``task`` can select on (default first)."""
    default = TASKS[task].default_objective if task in TASKS else None
    names = [n for n, o in OBJECTIVES.items() if o.task == task]
    return tuple(sorted(names, key=lambda n: n != default))


def get_objective(name: str) -> Objective:
    """The registered objective ``name``; ConfigError naming the allowed ones."""
    if name not in OBJECTIVES:
        raise ConfigError(f"objective: unknown value {name!r}; allowed: {', '.join(OBJECTIVES)} "
                          f"(classification: {', '.join(objectives_for(CLASSIFICATION))}; re-ID: "
                          f"{', '.join(objectives_for(REID))}). Leave it out for the data set's "
                          "default.")
    return OBJECTIVES[name]


def default_objective(task: str) -> Objective:
    """The objective a run of ``task`` selects on unless told otherwise."""
    return OBJECTIVES[task_entry(task).default_objective]


def check_objective(name: str | None, dataset: str, *, key: str = "objective") -> Objective:
    """The objective a run of ``dataset`` selects on: ``name``, or the task's default when None.

    ConfigError (naming ``key``, the data set and the objectives allowed for it) when ``name``
    is unknown or belongs to another task."""
    task = dataset_task(dataset)
    default = default_objective(task)
    if name is None:
        return default
    if name not in OBJECTIVES or OBJECTIVES[name].task != task:
        allowed = objectives_for(task)
        raise ConfigError(f"{key}: {name!r} cannot select runs on data set {dataset} (a {task} "
                          f"data set); allowed for it: {', '.join(allowed)} (default "
                          f"{default.name}). Set {key} to one of them, or leave it out.")
    return OBJECTIVES[name]
