"""Hyperparameter importances of a stored study (Optuna's fANOVA evaluator, seeded), with their
spread over bootstrap resamples of the complete trials, and only from enough complete trials."""
from __future__ import annotations

import logging
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import TrialState

from analysis.optuna_db import load_stored_study

log = logging.getLogger(__name__)
# fANOVA fits a random forest to (params -> value) of the complete trials: with fewer than this
# many it ranks noise (a study samples up to ~15 parameters).
MIN_COMPLETE = 10
RESAMPLES = 8  # bootstrap resamples of the complete trials for the spread
RESAMPLE_TREES = 16  # trees per resample's forest (the estimate itself uses Optuna's 64)


@dataclass
class Importances:
    """Importances by parameter (most important first) and their spread, or why there are none."""

    values: dict[str, float] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)  # std over the bootstrap resamples
    reason: str = ""
    trials: int = 0  # the complete trials they rest on
    resamples: int = 0


def _evaluate(study: optuna.Study, params: list[str] | None, seed: int,
              n_trees: int = 64) -> dict[str, float]:
    return {k: float(v) for k, v in optuna.importance.get_param_importances(
        study, evaluator=FanovaImportanceEvaluator(n_trees=n_trees, seed=seed),
        params=params).items()}


def _resampled(study: optuna.Study, trials: list, rng: random.Random) -> optuna.Study:
    storage = optuna.storages.InMemoryStorage()  # create_study would log every resample
    storage.create_new_study(directions=study.directions, study_name="resample")
    copy = optuna.Study(study_name="resample", storage=storage)
    copy.add_trials([trials[rng.randrange(len(trials))] for _ in trials])
    return copy


def bootstrap_spread(study: optuna.Study, trials: list, params: list[str], seed: int,
                     resamples: int = RESAMPLES) -> dict[str, float]:
    """Standard deviation of each parameter's importance over ``resamples`` bootstrap resamples
    (with replacement, seeded) of ``trials``; a resample that fANOVA cannot evaluate is left out."""
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in params}
    for index in range(resamples):
        try:
            values = _evaluate(_resampled(study, trials, rng), params, seed + index + 1,
                               n_trees=RESAMPLE_TREES)
        except (ValueError, RuntimeError):  # e.g. a resample in which nothing varies
            continue
        for name in params:
            samples[name].append(values.get(name, 0.0))
    return {name: statistics.pstdev(found) if len(found) >= 2 else 0.0
            for name, found in samples.items()}


def study_importances(db: Path, key: str, seed: int = 0) -> Importances:
    """fANOVA importances of study ``key`` in ``db`` over its COMPLETE trials (at least
    :data:`MIN_COMPLETE`), with their bootstrap spread."""
    if not db.is_file():
        return Importances(reason=f"no {db.name}: importances need the stored Optuna study.")
    try:
        study = load_stored_study(db, key)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    except Exception as err:  # missing study, unreadable database
        return Importances(reason=f"the stored study could not be read ({err}).")
    if len(complete) < MIN_COMPLETE:
        return Importances(trials=len(complete),
                           reason=f"too few complete trials for importances: {len(complete)}, "
                                  f"and fANOVA needs at least {MIN_COMPLETE} here (pruned and "
                                  "errored trials have no final value); with fewer it ranks "
                                  "noise.")
    try:
        values = _evaluate(study, None, seed)
    except (ValueError, RuntimeError) as err:
        return Importances(trials=len(complete),
                           reason=f"Optuna could not evaluate importances ({err}).")
    if not values:
        return Importances(trials=len(complete),
                           reason="no parameter was sampled in every complete trial, or none "
                                  "varied: nothing to rank.")
    spread = bootstrap_spread(study, complete, list(values), seed)
    return Importances(values=values, spread=spread, trials=len(complete), resamples=RESAMPLES)
