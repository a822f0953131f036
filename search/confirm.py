"""`mgkd best --confirm K --seeds S`: re-run each study's top K configs with S further seeds through
Ray (the same trainable), so the exported winner is not a lucky seed.

Results go to ``<run dir>/confirm/<study key>.json``, ranked by the mean of the sweep's objective:
``{"study", "objective", "seeds", "entries": [{"trial_number", "params", "val_accs", "test_accs",
"mean_val_acc", "std_val_acc"}, ...]}``. The trial's own run counts as its first seed. The keys keep
their first names for every objective: ``val_accs`` hold the objective's values (e.g. val_map) and
``test_accs`` its test metric's (e.g. test_map), as ``objective`` says.
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from analysis.best import final_metric, ranked
from analysis.records import Run, TrialRecord
from analysis.run import read_run
from analysis.rundir import CONFIRM_DIR
from mgkd.catalog.objectives import Objective
from mgkd.config.sweep import SweepSpec, plan
from mgkd.errors import ConfigError
from mgkd.io import atomic_write_text
from search.tune import (build_trainable, connect, load_run_spec, quiet_ray, study_entries,
                         sweep_objective)
from spaces import build_space

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One re-run: a study's trial config under another seed."""

    study: str
    trial_number: int
    seed: int
    experiment: dict[str, Any]


def top_trials(run: Run, key: str, k: int) -> list[TrialRecord]:
    """The ``k`` best COMPLETE trials of a study (``analysis.best.ranked``), plus its paper-default
    trial (when complete and not among them), so the verdict compares the winner with the paper
    default over the same seeds."""
    order = ranked(run.trials_of(key))
    top = order[:k]
    paper = next((t for t in order if t.paper_default), None)
    if paper is not None and paper not in top:
        top.append(paper)
    return top


def plan_jobs(spec: SweepSpec, run: Run, top_k: int, seeds: int
              ) -> tuple[list[Job], dict[str, list[TrialRecord]]]:
    """Every (study, top trial, further seed) to run, and each study's top trials."""
    jobs, tops = [], {}
    for study in plan(spec):
        space = build_space(spec.space, study.base)
        tops[study.key] = top_trials(run, study.key, top_k)
        for trial in tops[study.key]:
            config = space.to_config(trial.params)
            for offset in range(1, seeds + 1):
                jobs.append(Job(study.key, trial.trial_number, config.seed + offset,
                                config.replace(seed=config.seed + offset).to_dict()))
    return jobs, tops


def _rank(run: Run, key: str, trials: list[TrialRecord], jobs: list[Job],
          runs: dict[tuple[str, int, int], dict[str, Any]], objective: Objective) -> dict[str, Any]:
    entries = []
    budget = run.studies[key].budget
    for trial in trials:
        own_seed = int((trial.experiment or {}).get("seed", 0))
        seeds = [own_seed] + [j.seed for j in jobs
                              if j.study == key and j.trial_number == trial.trial_number]
        results = [{"value": trial.value,
                    "test_value": final_metric(trial, budget, objective.test_metric)}]
        results += [runs.get((key, trial.trial_number, seed), {}) for seed in seeds[1:]]
        val_accs = [r.get("value") for r in results]
        finite = [v for v in val_accs if v is not None]
        entries.append({
            "trial_number": trial.trial_number, "params": dict(trial.params), "seeds": seeds,
            "val_accs": val_accs, "test_accs": [r.get("test_value") for r in results],
            "mean_val_acc": statistics.fmean(finite) if finite else None,
            "std_val_acc": statistics.pstdev(finite) if len(finite) > 1 else 0.0})
    entries.sort(key=lambda e: (-(e["mean_val_acc"] or float("-inf")), e["trial_number"]))
    return {"study": key, "objective": objective.name,
            "seeds": entries[0]["seeds"] if entries else [], "entries": entries}


def confirm(run_dir: str | Path, top_k: int, seeds: int) -> dict[str, dict[str, Any]]:
    """Run the confirmation and store it; returns the ranking per study."""
    if top_k < 1 or seeds < 1:
        raise ConfigError(f"--confirm {top_k} --seeds {seeds}: both must be at least 1.")
    spec = load_run_spec(run_dir, "--confirm")
    run_dir = spec.run_dir
    run = read_run(run_dir)
    jobs, tops = plan_jobs(spec, run, top_k, seeds)
    if not jobs:
        raise ConfigError(f"{run_dir}: no study has a completed trial to confirm yet.")
    studies = plan(spec)
    objective = sweep_objective(studies)
    quiet_ray()
    connect(spec.ray_address)
    # Re-runs are short and never resumed: checkpoint only at the end.
    trainable = build_trainable(spec, studies, study_entries(spec, studies),
                                checkpoint_every=10**9)
    tuner = tune.Tuner(
        trainable,
        param_space={"experiment": tune.grid_search([job.experiment for job in jobs])},
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent_trials,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=f"{CONFIRM_DIR}-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=str(run_dir / CONFIRM_DIR), verbose=0))
    grid = tuner.fit()
    by_config = {json.dumps(job.experiment, sort_keys=True): job for job in jobs}
    runs: dict[tuple[str, int, int], dict[str, Any]] = {}
    for result in grid:
        job = by_config[json.dumps(result.config["experiment"], sort_keys=True)]
        metrics = result.metrics or {}
        if result.error is None:
            runs[(job.study, job.trial_number, job.seed)] = {
                "value": metrics.get(objective.name), "test_value": metrics.get(objective.test_metric)}
    out = {}
    for key, trials in tops.items():
        if not trials:
            continue
        ranking = _rank(run, key, trials, jobs, runs, objective)
        atomic_write_text(run_dir / CONFIRM_DIR / f"{key}.json", json.dumps(ranking, indent=1))
        out[key] = ranking
    return out
