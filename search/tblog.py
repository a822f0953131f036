"""Ray's TensorBoard logger plus an ``outcome`` hparam, so the HPARAMS view tells trials that ASHA
stopped early from complete ones (Ray marks every ended trial a success there)."""
from __future__ import annotations

from typing import Any

from ray.tune.logger import TBXLoggerCallback
from ray.tune.utils import flatten_dict

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


class OutcomeTBXLogger(TBXLoggerCallback):
    """Writes what Ray's default TensorBoard logger writes (it replaces that one), and adds the
    trial's outcome to the hparams written when the trial ends."""

    def __init__(self) -> None:
        super().__init__()
        self._failed: set[str] = set()

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
