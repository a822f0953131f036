"""Extending a finished sweep: ``mgkd tune --resume RUN_DIR --num-samples N``.

Ray cannot restore a finished experiment to more samples (``Tuner.restore`` keeps the sample
count it started with), so an extension starts a new Ray experiment in the same run dir, driving
the same Optuna studies in ``optuna.db``: each study's sampler sees every trial of the earlier
experiment as history, and the searcher counts those trials as done, so only ``N`` minus them run.
The new experiment's trial dirs sit beside the earlier ones (Ray names them by unique trial ids),
and ``analysis`` reads all of them as one sweep: each trial is found through the Ray trial id
``optuna.db`` records for it.

Everything here is decided from the run dir alone, before Ray starts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import TrialState

from analysis.optuna_db import read_studies
from analysis.rundir import OPTUNA_DB
from mgkd.config.sweep import SweepSpec
from mgkd.errors import ConfigError
from search.progress import StudyCounts


@dataclass(frozen=True)
class StudyProgress:
    finished: int  # COMPLETE, PRUNED or FAIL: never re-run
    running: int  # RUNNING: interrupted, continues on --resume


def study_progress(run_dir: Path) -> dict[str, StudyProgress]:
    """Every study of ``run_dir``'s optuna.db: how many trials finished and how many are running."""
    notes: list[str] = []
    studies = read_studies(run_dir / OPTUNA_DB, notes)
    if notes and not studies:
        raise ConfigError(f"--num-samples: {notes[0]} Without the studies' trials the sweep cannot "
                          "be extended.")
    return {key: StudyProgress(sum(t.state.is_finished() for t in trials),
                               sum(t.state == TrialState.RUNNING for t in trials))
            for key, trials in studies.items()}


def earlier_counts(run_dir: Path) -> dict[str, StudyCounts]:
    """The finished trials of ``run_dir``'s studies as the progress table counts them."""
    counts = {}
    for key, trials in read_studies(run_dir / OPTUNA_DB, []).items():
        values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        counts[key] = StudyCounts(done=sum(t.state == TrialState.COMPLETE for t in trials),
                                  pruned=sum(t.state == TrialState.PRUNED for t in trials),
                                  errored=sum(t.state == TrialState.FAIL for t in trials),
                                  best_value=max(values) if values else None)
    return counts


def extended(spec: SweepSpec, num_samples: int) -> tuple[SweepSpec, bool]:
    """The sweep of ``spec.run_dir`` with ``num_samples`` trials a study, and whether that extends
    it (False: the count it already has, an ordinary resume). ConfigError, naming the fix, when
    ``num_samples`` is below what a study has done or below the sweep's count, or when the sweep
    is unfinished (resume it first)."""
    run_dir, stored = spec.run_dir, spec.num_samples
    progress = study_progress(run_dir)
    if progress:
        key, most = max(progress.items(), key=lambda item: item[1].finished)
        if num_samples < most.finished:
            raise ConfigError(f"--num-samples {num_samples}: study {key} in {run_dir} already has "
                              f"{most.finished} finished trials, which are never removed; give "
                              f"--num-samples {max(most.finished, stored)} or more.")
    if num_samples < stored:
        raise ConfigError(f"--num-samples {num_samples}: the sweep in {run_dir} asks for {stored} "
                          f"trials a study and can only be extended; give --num-samples {stored} "
                          "or more (to stop a sweep early, interrupt it with Ctrl-C).")
    if num_samples == stored:
        return spec, False
    unfinished = [f"{key} ({p.finished} of {stored} finished, {p.running} interrupted)"
                  for key, p in progress.items() if p.running or p.finished < stored]
    missing = [s for s in _planned(spec) if s not in progress]
    if unfinished or missing:
        what = ", ".join(unfinished + [f"{key} (not started)" for key in missing])
        raise ConfigError(f"--num-samples {num_samples}: the sweep in {run_dir} is unfinished: "
                          f"{what}. Finish it first with `mgkd tune --resume {run_dir}`, then "
                          f"extend it with `mgkd tune --resume {run_dir} --num-samples "
                          f"{num_samples}`.")
    return dataclasses.replace(spec, num_samples=num_samples), True


def _planned(spec: SweepSpec) -> list[str]:
    from mgkd.config.sweep import plan

    return [study.key for study in plan(spec)]
