"""Hyperparameter importances of a stored study (Optuna's fANOVA evaluator, seeded)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import TrialState

from analysis.optuna_db import load_stored_study

log = logging.getLogger(__name__)
MIN_COMPLETE = 3  # fewer complete trials say nothing about what matters


@dataclass
class Importances:
    """Importances by parameter (most important first), or why there are none."""

    values: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    trials: int = 0  # the complete trials they rest on


def study_importances(db: Path, key: str, seed: int = 0) -> Importances:
    """fANOVA importances of study ``key`` in ``db`` over its COMPLETE trials."""
    if not db.is_file():
        return Importances(reason=f"no {db.name}: importances need the stored Optuna study.")
    try:
        study = load_stored_study(db, key)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    except Exception as err:  # missing study, unreadable database
        return Importances(reason=f"the stored study could not be read ({err}).")
    if len(complete) < MIN_COMPLETE:
        return Importances(reason=f"too few complete trials for importances ({len(complete)}; at "
                                  f"least {MIN_COMPLETE} are needed).")
    try:
        values = optuna.importance.get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=seed))
    except (ValueError, RuntimeError) as err:
        return Importances(reason=f"Optuna could not evaluate importances ({err}).")
    if not values:
        return Importances(reason="no parameter was sampled in every complete trial, or none "
                                  "varied: nothing to rank.")
    return Importances(values={k: float(v) for k, v in values.items()}, trials=len(complete))
