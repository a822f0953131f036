"""What a run dir holds, as plain data: its studies, its trials (each joined from ``optuna.db``
and its Ray trial dir) and the notes made while reading damaged or partial input."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgkd.catalog.tasks import CLASSIFICATION, task_entry

# Trial states as the analysis reports them; Optuna's WAITING (queued, never started) is not a trial.
COMPLETE, PRUNED, FAIL, RUNNING, UNKNOWN = "COMPLETE", "PRUNED", "FAIL", "RUNNING", "UNKNOWN"
STATES: tuple[str, ...] = (COMPLETE, PRUNED, FAIL, RUNNING, UNKNOWN)
# Sweeps from before the objective could be chosen all selected on the classification default;
# ``read_run`` gives every study of such a run dir this objective (the one place it is assumed).
LEGACY_OBJECTIVE = task_entry(CLASSIFICATION).default_objective


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class StudyInfo:
    """One study: a pair distilled with one method in one mode."""

    key: str
    teacher: str
    student: str
    method: str
    mode: str
    budget: int | None = None  # the sweep's epochs for this study (a COMPLETE trial ran them all)
    base: dict[str, Any] | None = None  # the study's base experiment config, when sweep.yaml parses
    # the metric that selects (val_acc, val_map, ...); None only while read_run works it out
    objective: str | None = None
    # The pair's teacher_checkpoint as the sweep file wrote it (None: given none, or unknown).
    teacher_checkpoint: str | None = None

    @property
    def is_group(self) -> bool:
        """A peer group's study (online method): no teacher, ``student`` is the group's label."""
        return not self.teacher

    @property
    def pair(self) -> str:
        """``<teacher>__<student>``, or a peer group's ``<peer>+<peer>``: for file names."""
        return self.student if self.is_group else f"{self.teacher}__{self.student}"

    @property
    def label(self) -> str:
        """How pages name the pair: ``resnet32x4 → resnet8x4``, ``dml: resnet32+resnet32``."""
        return f"{self.method}: {self.student}" if self.is_group else \
            f"{self.teacher} → {self.student}"


@dataclass
class TrialRecord:
    """One trial: its Optuna record joined with its Ray trial dir (either may be missing)."""

    study: str
    trial_number: int | None
    ray_trial_id: str | None
    state: str
    paper_default: bool = False
    value: float | None = None  # Optuna's value: the last epoch's objective of a COMPLETE trial
    params: dict[str, Any] = field(default_factory=dict)  # the flat search params
    experiment: dict[str, Any] | None = None  # the trial's ExperimentConfig as a dict
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per epoch, by epoch
    trial_dir: Path | None = None
    error: str | None = None
    objective: str = LEGACY_OBJECTIVE  # its study's objective
    # where a warm-started trial's config came from ("resnet56→resnet20, trial 17, RUN_DIR")
    warm_start_source: str | None = None

    @property
    def label(self) -> str:
        number = "?" if self.trial_number is None else str(self.trial_number)
        return f"{self.study} trial {number}"

    @property
    def last(self) -> dict[str, Any]:
        """The last epoch reported (empty when none was)."""
        return self.history[-1] if self.history else {}

    @property
    def epochs(self) -> int | None:
        """How many epochs the trial ran (its last reported epoch)."""
        epoch = self.last.get("epoch")
        return int(epoch) if epoch is not None else None

    @property
    def objective_value(self) -> float | None:
        """The trial's objective (e.g. val_acc): Optuna's value, else its last reported epoch's."""
        return self.value if self.value is not None else finite(self.last.get(self.objective))

    def metric_at(self, epoch: int | None, name: str) -> float | None:
        """Metric ``name`` at ``epoch`` (None when that epoch was not reported)."""
        for row in self.history:
            if row.get("epoch") == epoch:
                return finite(row.get(name))
        return None


@dataclass
class Run:
    """A sweep's run dir, read from files alone (no Ray needed)."""

    path: Path
    name: str
    studies: dict[str, StudyInfo]  # in the sweep's plan order
    trials: list[TrialRecord]
    notes: list[str] = field(default_factory=list)  # damaged or partial input, one sentence each
    cpus_per_trial: float | None = None  # the sweep's resources_per_trial.cpu (torch threads)

    def trials_of(self, key: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.study == key]
