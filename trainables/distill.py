"""The Ray Tune function trainable: one mgkd distillation run per trial.

Data and the teachers' knowledge arrive through Ray's object store (``tune.with_parameters``), so a
trial re-reads nothing from disk and never trains a teacher or a head. Every epoch is reported under
the same metric names; every ``checkpoint_every`` epochs (and at the end) the report carries a
checkpoint from which a killed worker or a resumed sweep continues exactly.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from mgkd.config import ExperimentConfig
from mgkd.data import DataSplits
from mgkd.distill.learner import make_trainer, reported_metrics
from mgkd.knowledge.prepare import Knowledge
from mgkd.training.engine import EpochReport
from mgkd.training.outcomes import BEST, LAST, OUTCOMES_FILE, write_outcomes

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"


def teacher_key(teacher: str, checkpoint: str | None) -> str:
    """How a trial finds its teacher's knowledge in the mapping handed to the trainable."""
    return f"{teacher}@{checkpoint or 'cached'}"


def _report_metrics(metrics: dict[str, Any], node: str, reported: tuple[str, ...]
                    ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in reported:
        value = metrics.get(key)
        out[key] = float("nan") if value is None else value
    out["node"] = node  # which Ray node ran the epoch (several share one IP in tests)
    return out


class TuneReporter:
    """Engine callback: ``tune.report`` every epoch, with a checkpoint every few epochs."""

    def __init__(self, epochs: int, checkpoint_every: int, reported: tuple[str, ...]):
        self.epochs = epochs
        self.reported = reported
        self.every = max(1, checkpoint_every)
        self.node = ray.get_runtime_context().get_node_id()[:12]

    def __call__(self, report: EpochReport) -> None:
        _write_outcomes(report)
        metrics = _report_metrics(report.metrics, self.node, self.reported)
        if report.epoch % self.every and report.epoch != self.epochs:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="mgkd-ckpt-") as folder:
            report.save_checkpoint(Path(folder) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _write_outcomes(report: EpochReport) -> None:
    """The run's per-sample validation outcomes (best and last epoch) into the trial dir, before
    the epoch is reported: the paired verdict reads them (mgkd.training.outcomes)."""
    state = report.trainer.state
    if state.last_outcomes is None:
        return
    folder = Path(tune.get_context().get_trial_dir())
    write_outcomes(folder / OUTCOMES_FILE, {BEST: state.best_outcomes, LAST: state.last_outcomes})


def _use_assigned_cpus() -> None:
    """One torch thread per CPU Ray gave this trial: more threads than cores stall each other."""
    try:
        cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    except Exception:  # outside a Tune session (direct calls in benchmarks)
        return
    torch.set_num_threads(max(1, int(math.floor(cpus))))


def distill_trainable(config: dict[str, Any], *, data: DataSplits,
                      knowledge: dict[str, Knowledge], checkpoint_every: int = 2) -> None:
    """Tune function trainable. ``config["experiment"]`` is the trial's resolved ExperimentConfig
    as a dict, validated when the searcher made it (so not again here)."""
    experiment = ExperimentConfig.from_validated(config["experiment"])
    _use_assigned_cpus()
    # Ray picks the GPU (CUDA_VISIBLE_DEVICES); device "auto" then means that GPU.
    teacher = (None if experiment.peers is not None  # a peer group has no teacher
               else knowledge[teacher_key(experiment.teacher, experiment.teacher_checkpoint)])
    reported = reported_metrics(experiment.task, experiment.objective,
                                len(experiment.peers or []))
    trainer = make_trainer(experiment, data, teacher,
                           callbacks=[TuneReporter(experiment.epochs, checkpoint_every, reported)])
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_checkpoint(Path(folder) / CHECKPOINT_FILE)
        log.info("trial %s resumes after epoch %d (pid %d)", tune.get_context().get_trial_id(),
                 trainer.state.epoch, os.getpid())
    trainer.fit()
