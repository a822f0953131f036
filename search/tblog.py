"""Ray's TensorBoard logger with the trial's own metrics only (not Ray's bookkeeping: ``done``,
``should_checkpoint``, ``time_*``, ``iterations_since_restore``, ...), step = epoch, plus an
``outcome`` hparam, so the HPARAMS view tells trials that ASHA stopped early from complete ones
(Ray marks every ended trial a success there)."""
from __future__ import annotations

import math
from typing import Any

from ray.air.constants import TRAINING_ITERATION
from ray.tune.logger import TBXLoggerCallback
from ray.tune.utils import flatten_dict

from mgkd.catalog.objectives import get_objective
from mgkd.catalog.tasks import CLASSIFICATION, task_entry
from mgkd.distill.learner import reported_metrics
from mgkd.training.callbacks import OUTCOME, TAG_PREFIX
from search.multistudy import stopped_early

HPARAM_TYPES = (bool, int, float, str)


def trial_outcome_label(failed: bool, epoch: Any, budget: Any) -> str:
    """``errored``, ``pruned (ASHA)`` when it ended before its epoch budget, else ``complete``."""
    if failed:
        return "errored"
    if isinstance(budget, int) and stopped_early(epoch, budget):
        return "pruned (ASHA)"
    return "complete"


def trial_metric_names(experiment: dict[str, Any] | None) -> tuple[str, ...]:
    """The metrics a sweep trial reports each epoch (``reported_metrics`` of its task and
    objective): the scalars its TensorBoard events hold, under ``ray/tune/<name>``."""
    experiment = experiment or {}
    task = experiment.get("task") or CLASSIFICATION
    objective = experiment.get("objective") or task_entry(task).default_objective
    return reported_metrics(task, get_objective(objective).name)


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class OutcomeTBXLogger(TBXLoggerCallback):
    """Replaces Ray's default TensorBoard logger: writes each result's trial metrics (nothing of
    Ray's own bookkeeping) at step = epoch, and adds the trial's outcome to the hparams written
    when the trial ends."""

    def __init__(self) -> None:
        super().__init__()
        self._failed: set[str] = set()

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        step = int(result.get("epoch") or result.get(TRAINING_ITERATION) or iteration)
        writer = self._trial_writer[trial]
        scalars = {}
        for name in trial_metric_names(trial.config.get("experiment")):
            value = _scalar(result.get(name))
            if value is not None:
                scalars[f"{TAG_PREFIX}{name}"] = value
                writer.add_scalar(f"{TAG_PREFIX}{name}", value, global_step=step)
        self._trial_result[trial] = scalars  # the metrics of the HPARAMS entry at the trial's end
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if failed:
            self._failed.add(trial.trial_id)
        super().log_trial_end(trial, failed=failed)

    def _try_log_hparams(self, trial, result: dict) -> None:
        from tensorboardX.summary import hparams

        params = {k: v for k, v in flatten_dict(trial.evaluated_params, delimiter="/").items()
                  if isinstance(v, HPARAM_TYPES)}
        budget = (trial.config.get("experiment") or {}).get("epochs")
        params[OUTCOME] = trial_outcome_label(trial.trial_id in self._failed,
                                              result.get(f"{TAG_PREFIX}epoch"), budget)
        writer = self._trial_writer[trial].file_writer
        for summary in hparams(hparam_dict=params, metric_dict=result):
            writer.add_summary(summary)
