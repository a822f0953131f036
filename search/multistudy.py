"""One Ray Tune run driving many Optuna studies: a searcher and an ASHA per study.

Each (pair, method, mode) is its own Optuna study (own TPE sampler, persisted in ``optuna.db``) and
its own ASHA bracket, so trials are only ever compared with trials of their study. One Tuner runs
them all, so while one study's last trials finish, the others' trials fill the free slots.
"""
from __future__ import annotations

import hashlib
import logging
import math
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search import Searcher

from analysis.optuna_db import PAPER_DEFAULT_ATTR, RAY_TRIAL_ATTR, WARM_START_ATTR
from mgkd.errors import ConfigError
from search.warmstart import WarmConfig
from spaces import SearchSpace

log = logging.getLogger(__name__)


@dataclass
class StudyEntry:
    """One study as the searcher sees it."""

    key: str  # also the Optuna study name
    space: SearchSpace
    num_samples: int
    epochs: int  # the trial budget: a trial that ends before it was stopped by ASHA
    warm: list[WarmConfig] = field(default_factory=list)  # enqueued after the paper default


def derived_seed(seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def study_sampler(key: str, num_samples: int, *, seed: int, multivariate: bool,
                  held: int = 0) -> optuna.samplers.TPESampler:
    """Study ``key``'s seeded TPE sampler. ``held``: the trials the study holds when this process
    opens it. A reopened study (a resumed or extended sweep) gets a seed of its own: with the
    first seed again, its random start-up draws would repeat the configs drawn before."""
    startup = max(2, min(10, num_samples // 3))
    derived = derived_seed(seed, key if held == 0 else f"{key}@{held}")
    return optuna.samplers.TPESampler(seed=derived, multivariate=multivariate, group=multivariate,
                                      constant_liar=True, n_startup_trials=startup)


def stopped_early(last_epoch: Any, epochs: int) -> bool:
    """Whether a trial that ended without an error after reporting ``last_epoch`` (None: no
    epoch) of its ``epochs`` was stopped early, by ASHA: the one rule the searcher, the progress
    table and the TensorBoard outcome share."""
    return int(last_epoch or 0) < epochs


def open_study_storage(url: str, *, attempts: int = 5) -> optuna.storages.RDBStorage:
    """The sweep's Optuna storage, created if new.

    Opening a new sqlite file writes its schema version; a second process opening it in that same
    instant (a user's ``optuna-dashboard``, a script polling the run) can write it first, and the
    driver would die on the duplicate row. The second attempt finds the database complete."""
    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                optuna.exceptions.StorageInternalError) as err:
            if attempt == attempts:
                raise
            log.info("opening %s raced another process (%s); trying again", url, err)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def trial_outcome(result: dict[str, Any] | None, error: bool, epochs: int,
                  metric: str) -> tuple[TrialState, float | None]:
    """How a finished Ray trial enters its study: errored → FAIL, stopped before its epoch budget
    (by ASHA) → PRUNED, else COMPLETE with the metric. A pruned trial is not COMPLETE: its
    early-rung value would mislead TPE."""
    if error or not result:
        return TrialState.FAIL, None
    value = result.get(metric)
    if value is None or not math.isfinite(float(value)):
        return TrialState.FAIL, None
    if stopped_early(result.get("epoch"), epochs):
        return TrialState.PRUNED, None
    return TrialState.COMPLETE, float(value)


class MultiStudySearcher(Searcher):
    """Suggests trials for many Optuna studies, each with its own seeded TPE sampler.

    The next trial goes to the study with the smallest share of its samples started, so all
    studies progress together and none leaves a slot idle while it has samples left."""

    def __init__(self, studies: list[StudyEntry], storage_url: str, *, seed: int = 0,
                 multivariate: bool = True, metric: str = "val_acc", mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self._entries = {entry.key: entry for entry in studies}
        self._storage_url = storage_url
        self._storage: optuna.storages.RDBStorage | None = None  # opened once, lazily; not pickled
        self._seed = seed
        self._multivariate = multivariate
        self._started = {entry.key: 0 for entry in studies}
        self._trials: dict[str, tuple[str, int]] = {}  # Ray trial id -> (study key, trial number)
        self._studies: dict[str, optuna.Study] = {}  # opened lazily; not pickled
        self._live: dict[str, optuna.Trial] = {}  # trial handles of this process; not pickled
        self._synced = False  # counted the trials the database holds beyond our state (see _sync)

    # ---- pickling and Ray's searcher checkpoints -------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_studies"] = {}  # database connections do not pickle; reopened on demand
        state["_storage"] = None
        state["_live"] = {}
        return state

    def get_state(self) -> dict[str, Any]:
        return {"started": dict(self._started), "trials": dict(self._trials)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._started.update(state["started"])
        self._trials = dict(state["trials"])
        self._synced = False

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # metric and mode are fixed at construction (the sweep's objective, max)

    # ---- studies --------------------------------------------------------------------------------
    def storage(self) -> optuna.storages.RDBStorage:
        if self._storage is None:
            self._storage = open_study_storage(self._storage_url)
        return self._storage

    def study(self, key: str) -> optuna.Study:
        if key not in self._studies:
            entry = self._entries[key]
            study = optuna.create_study(study_name=key, storage=self.storage(),
                                        direction="maximize", load_if_exists=True)
            # The sampler reads every trial the study holds, those of earlier Tuner runs too
            # (a resumed or extended sweep): they are its history.
            held = len(study.get_trials(deepcopy=False))
            study.sampler = study_sampler(key, entry.num_samples, seed=self._seed,
                                          multivariate=self._multivariate, held=held)
            if not held:
                # The paper's setting is every study's first trial: the baseline the search must beat.
                study.enqueue_trial(entry.space.paper_default(),
                                    user_attrs={PAPER_DEFAULT_ATTR: True})
                # Then the best configs of earlier studies (warm_start), each naming its source.
                for warm in entry.warm:
                    study.enqueue_trial(warm.params, user_attrs={WARM_START_ATTR: warm.source})
            self._studies[key] = study
        return self._studies[key]

    def _sync(self) -> None:
        """Count finished trials that the database holds and this searcher's state does not.

        Ray snapshots the searcher now and then; a driver killed after a snapshot may already have
        asked, run and told further trials. They are done (their results are in the study), so
        they count as started: otherwise a resumed sweep would run more than ``num_samples``."""
        existing = set(optuna.get_all_study_names(self.storage()))
        for key in self._entries:
            if key not in existing:
                continue
            known = {number for k, number in self._trials.values() if k == key}
            extra = [t.number for t in self.study(key).get_trials(deepcopy=False)
                     if t.state.is_finished() and t.number not in known]
            if extra and not known:  # a new Tune run of studies that hold trials (extended)
                log.info("study %s: %d finished trial(s) of earlier runs count as done and are "
                         "its sampler's history", key, len(extra))
            elif extra:
                log.info("study %s: %d trial(s) finished after the last saved sweep state "
                         "count as done", key, len(extra))
            self._started[key] += len(extra)
        self._synced = True

    def _next_study(self) -> str | None:
        open_keys = [k for k, e in self._entries.items() if self._started[k] < e.num_samples]
        if not open_keys:
            return None
        return min(open_keys, key=lambda k: self._started[k] / self._entries[k].num_samples)

    def _orphan(self, key: str, study: optuna.Study) -> optuna.trial.FrozenTrial | None:
        """A trial left RUNNING by a driver that died between asking and saving its state."""
        known = {number for k, number in self._trials.values() if k == key}
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number not in known:
                return frozen
        return None

    def _open_trial(self, key: str) -> optuna.Trial:
        study = self.study(key)
        orphan = self._orphan(key, study)
        if orphan is None:
            return study.ask()
        log.info("study %s: reusing trial %d left running by an interrupted sweep", key,
                 orphan.number)
        return optuna.trial.Trial(study, orphan._trial_id)

    # ---- Searcher interface ---------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self._synced:
            self._sync()
        key = self._next_study()
        if key is None:
            return Searcher.FINISHED
        trial = self._open_trial(key)
        entry = self._entries[key]
        self._started[key] += 1
        self._trials[trial_id] = (key, trial.number)
        self._live[trial_id] = trial
        trial.set_user_attr(RAY_TRIAL_ATTR, trial_id)
        try:
            params = entry.space.sample(trial)
            experiment = entry.space.to_config(params)
        except ConfigError as err:  # a combination the config rejects: recorded, not run
            log.warning("study %s trial %d: %s", key, trial.number, err)
            trial.set_user_attr("error", str(err))
            self.study(key).tell(trial.number, state=TrialState.FAIL)
            return None
        return {"study": key, "trial_number": trial.number, "params": params,
                "experiment": experiment.to_dict()}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._trials:
            return
        self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict[str, Any]) -> None:
        value, epoch = result.get(self.metric), result.get("epoch")
        if value is None or epoch is None or not math.isfinite(float(value)):
            return
        key, number = self._trials[trial_id]
        study = self.study(key)
        frozen = study.get_trials(deepcopy=False)[number]
        if frozen.state == TrialState.RUNNING and int(epoch) not in frozen.intermediate_values:
            # Intermediate values let optuna-dashboard and pruned-trial analysis see the curve.
            if trial_id not in self._live:  # reopened after a resume
                self._live[trial_id] = optuna.trial.Trial(study, frozen._trial_id)
            self._live[trial_id].report(float(value), int(epoch))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if trial_id not in self._trials:
            return
        key, number = self._trials[trial_id]
        study = self.study(key)
        if study.get_trials(deepcopy=False)[number].state.is_finished():
            return  # told before (e.g. by a driver that was interrupted afterwards)
        if result:  # Ray passes the result that made ASHA stop a trial here only
            self._report(trial_id, result)
        state, value = trial_outcome(result, error, self._entries[key].epochs, self.metric)
        if state == TrialState.COMPLETE:
            study.tell(number, value)
        else:
            study.tell(number, state=state)
        self._live.pop(trial_id, None)


class PerStudyASHA(FIFOScheduler):
    """An ASHA scheduler per study: a trial's rungs hold only trials of its own study."""

    def __init__(self, max_t: dict[str, int], *, grace_period: int, reduction_factor: float,
                 metric: str = "val_acc", mode: str = "max"):
        super().__init__()
        self._max_t = max_t
        self._grace_period = grace_period
        self._reduction_factor = reduction_factor
        self._metric, self._mode = metric, mode
        self._by_study: dict[str, AsyncHyperBandScheduler] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _asha(self, trial) -> AsyncHyperBandScheduler:
        key = trial.config["study"]
        if key not in self._by_study:
            self._by_study[key] = AsyncHyperBandScheduler(
                time_attr="epoch", metric=self._metric, mode=self._mode, max_t=self._max_t[key],
                grace_period=min(self._grace_period, self._max_t[key]),
                reduction_factor=self._reduction_factor)
        return self._by_study[key]

    def on_trial_add(self, tune_controller, trial) -> None:
        self._asha(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if trial.trial_id not in self._asha(trial)._trial_info:  # restored after a driver restart
            self._asha(trial).on_trial_add(tune_controller, trial)
        return self._asha(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if trial.trial_id in self._asha(trial)._trial_info:
            self._asha(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._asha(trial)._trial_info.pop(trial.trial_id, None)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._asha(trial)._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        stopped = sum(s._num_stopped for s in self._by_study.values())
        return f"ASHA per study ({len(self._by_study)} studies): {stopped} trials stopped early"

