"""``read_run``: a run dir's studies and trials, joining each trial's Optuna record with its Ray
trial dir, and noting (not failing on) whatever is missing, damaged, unknown or still running."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from analysis.flatten import rebuild_experiment
from analysis.optuna_db import (PAPER_DEFAULT_ATTR, RAY_TRIAL_ATTR, WARM_START_ATTR, read_studies,
                                state_name)
from analysis.records import (COMPLETE, FAIL, LEGACY_OBJECTIVE, RUNNING, UNKNOWN, Run, StudyInfo,
                              TrialRecord, finite)
from analysis.rundir import OPTUNA_DB, locate, read_sweep, scan
from analysis.trialdir import TrialDir, read_trial_dir
from mgkd.config.sweep import split_study_key
from mgkd.errors import ConfigError

log = logging.getLogger(__name__)


class _Dirs:
    """The trial dirs of a run, found by Ray trial id or by (study, trial number)."""

    def __init__(self, dirs: list[TrialDir]):
        self.all = dirs
        self.by_ray = {d.ray_trial_id: d for d in dirs if d.ray_trial_id}
        self.by_number: dict[tuple[str, int], list[TrialDir]] = {}
        for d in dirs:
            if d.study is not None and d.trial_number is not None:
                self.by_number.setdefault((d.study, d.trial_number), []).append(d)
        self.used: set[Path] = set()

    def find(self, key: str, trial: FrozenTrial) -> TrialDir | None:
        ray_id = trial.user_attrs.get(RAY_TRIAL_ATTR)
        found = self.by_ray.get(ray_id) if ray_id else None
        if found is None and not ray_id:
            candidates = self.by_number.get((key, trial.number), [])
            found = candidates[0] if len(candidates) == 1 else None
        if found is not None:
            self.used.add(found.path)
        return found


def _curve_from_optuna(trial: FrozenTrial, objective: str) -> list[dict[str, Any]]:
    return [{"epoch": int(epoch), objective: value}
            for epoch, value in sorted(trial.intermediate_values.items())]


def experiment_objective(experiment: dict[str, Any] | None) -> str | None:
    """The objective a trial's config selects on: its ``objective``, else its data set's
    default; None when the config does not say (older configs of unknown data sets)."""
    if not experiment:
        return None
    from mgkd.catalog.datasets import dataset_task
    from mgkd.catalog.objectives import OBJECTIVES, default_objective

    named = experiment.get("objective")
    if isinstance(named, str) and named in OBJECTIVES:
        return named
    try:
        return default_objective(dataset_task(str(experiment.get("dataset", "cifar100")))).name
    except (ConfigError, TypeError, ValueError, KeyError):
        return None


def _fill_objectives(studies: dict[str, StudyInfo], dirs: list[TrialDir]) -> None:
    """Studies whose sweep.yaml did not say: the objective of their trials' configs, else
    val_acc (every sweep before the objective existed selected on it)."""
    for study in studies.values():
        if study.objective is None:
            found = (experiment_objective(d.experiment) for d in dirs if d.study == study.key)
            study.objective = next((name for name in found if name), LEGACY_OBJECTIVE)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _from_optuna(key: str, objective: str, trial: FrozenTrial, state: str,
                 found: TrialDir | None, notes: list[str]) -> TrialRecord:
    record = TrialRecord(
        study=key, trial_number=trial.number,
        ray_trial_id=trial.user_attrs.get(RAY_TRIAL_ATTR),
        state=state, paper_default=bool(trial.user_attrs.get(PAPER_DEFAULT_ATTR)),
        value=finite(trial.value) if state == COMPLETE else None, params=dict(trial.params),
        error=trial.user_attrs.get("error"), objective=objective,
        warm_start_source=_text(trial.user_attrs.get(WARM_START_ATTR)))
    if found is not None:
        record.ray_trial_id = record.ray_trial_id or found.ray_trial_id
        record.params = record.params or dict(found.params)
        record.experiment, record.history, record.trial_dir = found.experiment, found.history, found.path
        record.error = found.error or record.error
    elif record.ray_trial_id is not None:  # Ray ran it, but its dir is gone
        record.history = _curve_from_optuna(trial, objective)
        notes.append(f"{record.label}: its trial dir (Ray trial {record.ray_trial_id}) is missing; "
                     f"its curve is Optuna's intermediate {objective} only (no test metric).")
    return record


def _infer_state(found: TrialDir, budget: int | None) -> str:
    if found.error is not None:
        return FAIL
    last = found.history[-1].get("epoch") if found.history else None
    if budget is not None and last is not None and last >= budget:
        return COMPLETE
    return UNKNOWN


def _from_files(found: TrialDir, study: StudyInfo | None) -> TrialRecord:
    budget = study.budget if study else None
    if budget is None and found.experiment:
        budget = found.experiment.get("epochs")
    state = _infer_state(found, budget)
    objective = study.objective if study else LEGACY_OBJECTIVE  # read_run filled it in
    value = finite(found.history[-1].get(objective)) if state == COMPLETE else None
    return TrialRecord(study=found.study or "?", trial_number=found.trial_number,
                       ray_trial_id=found.ray_trial_id, state=state,
                       paper_default=found.trial_number == 0, value=value,
                       params=dict(found.params), experiment=found.experiment,
                       history=found.history, trial_dir=found.path, error=found.error,
                       objective=objective)


def _leftover(found: TrialDir, studies: dict[str, StudyInfo],
              optuna_trials: dict[str, list[FrozenTrial]], notes: list[str]) -> TrialRecord | None:
    """A trial dir no Optuna trial claimed: identified from its own files, or noted and skipped."""
    name = found.path.name
    if found.study is None or found.trial_number is None:
        notes.append(f"trial dir {name} cannot be identified (no readable params.json and a name "
                     "not of the form <study>_<trial number>_<Ray trial id>); ignored.")
        return None
    if found.study in optuna_trials:
        claimed = [t for t in optuna_trials[found.study] if t.number == found.trial_number]
        if claimed and claimed[0].user_attrs.get(RAY_TRIAL_ATTR):
            notes.append(f"trial dir {name} is an abandoned attempt at {found.study} trial "
                         f"{found.trial_number} (optuna.db records Ray trial "
                         f"{claimed[0].user_attrs[RAY_TRIAL_ATTR]} for it); ignored.")
            return None
    if optuna_trials:
        notes.append(f"trial dir {name} is not in optuna.db; its state is inferred from its files.")
    return _from_files(found, studies.get(found.study))


def _add_studies(studies: dict[str, StudyInfo], keys: list[str], from_sweep: bool,
                 notes: list[str]) -> None:
    for key in dict.fromkeys(keys):
        parts = split_study_key(key)
        if key in studies or parts is None:
            continue
        studies[key] = StudyInfo(key, *parts)
        if from_sweep:
            notes.append(f"study {key} has trials in this run dir but is not in sweep.yaml (the "
                         "sweep file was edited, or the run dir mixes sweeps); it is analysed too.")


def _fill_budgets(studies: dict[str, StudyInfo], trials: list[TrialRecord]) -> None:
    for study in studies.values():
        if study.budget is None:
            budgets = [t.experiment.get("epochs") for t in trials
                       if t.study == study.key and t.experiment and t.experiment.get("epochs")]
            study.budget = Counter(budgets).most_common(1)[0][0] if budgets else None


def _rebuild_configs(studies: dict[str, StudyInfo], trials: list[TrialRecord],
                     notes: list[str]) -> None:
    """Configs for trials whose params.json has none (older sweeps), from base + params."""
    missing: dict[str, list[TrialRecord]] = {}
    for trial in trials:
        if trial.experiment is None and trial.params:
            missing.setdefault(trial.study, []).append(trial)
    for key, group in missing.items():
        base = studies[key].base if key in studies else None
        rebuilt = 0
        for trial in group:
            if base is None:
                continue
            try:
                trial.experiment = rebuild_experiment(base, trial.params)
                rebuilt += 1
            except (ConfigError, TypeError, ValueError) as err:
                if trial.state != FAIL:  # a FAIL may be a combination the config rejected
                    notes.append(f"{trial.label}: its config could not be rebuilt from its params "
                                 f"({err}).")
        with_dirs = sum(t.trial_dir is not None for t in group)
        how = (f"rebuilt from sweep.yaml's base and their params ({rebuilt} of {len(group)})"
               if base is not None else "unknown (sweep.yaml gives no base config): config "
                                        "columns stay empty")
        notes.append(f"study {key}: {len(group)} trial(s) ({with_dirs} with a trial dir) carry no "
                     f"experiment config (params.json missing, or of an older sweep format); their "
                     f"configs are {how}.")


def _note_silent(trials: list[TrialRecord], notes: list[str]) -> None:
    for trial in trials:
        if trial.trial_dir is not None and not trial.history and trial.error is None \
                and trial.state != RUNNING:
            notes.append(f"trial dir {trial.trial_dir.name} ({trial.state}) holds no reported "
                         "epoch (no result.json, or an empty one): its files are missing.")


def read_run(run_dir: str | Path) -> Run:
    """Read a run dir from files alone: sweep.yaml, optuna.db and the trial dirs.

    Raises MgkdError when ``run_dir`` is not a run dir; anything else that is missing or damaged
    becomes a sentence in ``Run.notes`` and the rest is still read."""
    path = locate(run_dir)
    notes: list[str] = []
    sweep = read_sweep(path, notes)
    layout = scan(path)
    notes += [f"{name} in {path} is not part of a sweep run dir; ignored." for name in layout.unknown]
    dirs = _Dirs([read_trial_dir(p) for p in layout.trial_dirs])
    for found in dirs.all:
        notes += found.notes
    optuna_trials = read_studies(path / OPTUNA_DB, notes)
    studies = dict(sweep.studies)
    _add_studies(studies, [*optuna_trials, *(d.study for d in dirs.all if d.study)],
                 bool(sweep.studies), notes)
    _fill_objectives(studies, dirs.all)

    trials: list[TrialRecord] = []
    for key, frozen in optuna_trials.items():
        objective = studies[key].objective if key in studies else LEGACY_OBJECTIVE
        for trial in frozen:
            state = state_name(trial)
            if state is not None:
                trials.append(_from_optuna(key, objective, trial, state, dirs.find(key, trial),
                                           notes))
    _fill_budgets(studies, trials)
    for found in dirs.all:
        if found.path not in dirs.used:
            record = _leftover(found, studies, optuna_trials, notes)
            if record is not None:
                trials.append(record)
    _fill_budgets(studies, trials)
    _rebuild_configs(studies, trials, notes)
    _note_silent(trials, notes)
    order = {key: i for i, key in enumerate(studies)}
    trials.sort(key=lambda t: (order.get(t.study, len(order)), t.trial_number is None,
                               t.trial_number or 0))
    return Run(path=path, name=sweep.name, studies=studies, trials=trials, notes=notes,
               cpus_per_trial=sweep.cpus_per_trial)
