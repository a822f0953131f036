"""Warm starts (the sweep file's ``warm_start``): each new study tries first, after its paper
default, the best configs that finished studies of the same method and mode found in earlier run
dirs, fitted into its own space (``spaces.fit_params``: numbers clipped, a categorical value not
among the choices drops the config, levels by position).

Which configs: every source study (same method and mode, any pair) ranks its COMPLETE trials by
its own objective; the candidates are taken in turns — each source study's best, then each one's
second best, ... (source studies in the order of ``from``, then of their sweep's plan) — because
values of different pairs or data sets cannot be ranked against each other. A config that is
dropped, or equals the paper default or one already taken, makes room for the next candidate,
until ``top_k`` are taken or the candidates run out. One log line tells each clip and each drop.

The run dirs are read with ``analysis.run.read_run``, read-only, so a source sweep that is still
running (or was copied off a cluster) can serve too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from analysis.best import ranked
from analysis.optuna_db import read_studies
from analysis.records import StudyInfo, TrialRecord
from analysis.rundir import OPTUNA_DB, locate
from analysis.run import read_run
from mgkd.config.sweep import SweepSpec, WarmStartSpec, fail_sweep
from mgkd.errors import MgkdError
from spaces import SearchSpace, fit_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmConfig:
    """A config a study enqueues after its paper default, and where it came from."""

    params: dict[str, Any]
    source: str  # "resnet56→resnet20, trial 17, /runs/cifar-r56": the trial's user attr


@dataclass
class SourceStudy:
    run_dir: Path
    info: StudyInfo
    ranked: list[TrialRecord]  # its COMPLETE trials with params, best first

    def label(self, trial: TrialRecord) -> str:
        return f"{self.info.teacher}→{self.info.student}, trial {trial.trial_number}, {self.run_dir}"


def check_warm_start(spec: SweepSpec) -> None:
    """Every ``warm_start.from`` entry a run dir other than this sweep's own (ConfigError naming
    the entry and the fix)."""
    assert spec.warm_start is not None
    own = spec.run_dir.resolve()
    for i, entry in enumerate(spec.warm_start.from_):
        key = f"warm_start.from[{i}]"
        try:
            path = locate(entry)
        except MgkdError as err:
            fail_sweep(key, f"{err} (warm_start.from lists the run dirs of earlier sweeps whose "
                            "best configs each study tries first.)")
        if path.resolve() == own:
            fail_sweep(key, f"{path} is this sweep's own run dir; to give a sweep more trials with "
                            f"its sampler seeing the earlier ones, run `mgkd tune --resume {path} "
                            "--num-samples N`.")


def read_sources(warm: WarmStartSpec) -> list[SourceStudy]:
    """Every study of the ``from`` run dirs, its COMPLETE trials ranked, in the order of ``from``
    and of each sweep's plan."""
    sources = []
    for entry in warm.from_:
        run = read_run(entry)
        for note in run.notes:
            log.info("warm start: %s: %s", run.path, note)
        for key, info in run.studies.items():
            sources.append(SourceStudy(run.path, info,
                                       [t for t in ranked(run.trials_of(key)) if t.params]))
    return sources


def started_studies(run_dir: Path) -> set[str]:
    """Studies of ``run_dir``'s optuna.db that hold a trial (those are never warm-started again)."""
    return {key for key, trials in read_studies(run_dir / OPTUNA_DB, []).items() if trials}


def _in_turns(sources: list[SourceStudy]):
    for row in zip_longest(*(s.ranked for s in sources)):
        for source, trial in zip(sources, row):
            if trial is not None:
                yield source, trial


def _frozen(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def choose(key: str, space: SearchSpace, sources: list[SourceStudy], top_k: int) -> list[WarmConfig]:
    """The ``top_k`` configs study ``key`` (of ``space``) enqueues after its paper default."""
    paper = space.paper_default()
    seen = {_frozen(paper)}
    chosen: list[WarmConfig] = []
    for source, trial in _in_turns(sources):
        if len(chosen) == top_k:
            break
        label = source.label(trial)
        fitted = fit_params(space, trial.params, paper)
        if fitted.params is None:
            log.info("study %s: warm start drops %s: %s", key, label, fitted.dropped)
            continue
        if fitted.clipped:
            log.info("study %s: warm start from %s clips %s", key, label, "; ".join(fitted.clipped))
        if _frozen(fitted.params) in seen:
            log.info("study %s: warm start skips %s: in this space it is the same config as the "
                     "paper default or an earlier warm start", key, label)
            continue
        seen.add(_frozen(fitted.params))
        chosen.append(WarmConfig(fitted.params, label))
    log.info("study %s: warm start enqueues %d config(s) after the paper default%s", key,
             len(chosen), "".join(f"; {c.source}" for c in chosen))
    return chosen


def _offered(sources: list[SourceStudy]) -> str:
    held = [f"{s.info.key} ({len(s.ranked)} complete)" for s in sources]
    return ", ".join(held) or "no study"


def warm_configs(warm: WarmStartSpec, spaces: dict[str, SearchSpace]) -> dict[str, list[WarmConfig]]:
    """What each study of ``spaces`` (key -> its space) enqueues after its paper default.

    ConfigError when no study of the sweep finds a source study of its method and mode with a
    COMPLETE trial (the run dirs were meant for something else); a study that alone finds none
    starts from its paper default, with a log line."""
    sources = read_sources(warm)
    out: dict[str, list[WarmConfig]] = {}
    for key, space in spaces.items():
        method, mode = space.base.method, space.base.mode
        matching = [s for s in sources if s.info.method == method and s.info.mode == mode
                    and s.ranked]
        if not matching:
            log.info("study %s: no study of method %s in mode %s with a complete trial in "
                     "warm_start.from; it starts from its paper default alone", key, method, mode)
            continue
        out[key] = choose(key, space, matching, warm.top_k)
    if spaces and not out:
        wanted = ", ".join(sorted({f"{s.base.method} in mode {s.base.mode}"
                                   for s in spaces.values()}))
        fail_sweep("warm_start.from", f"no run dir holds a study of this sweep's methods and modes "
                                      f"({wanted}) with a complete trial; they hold "
                                      f"{_offered(sources)}. Give run dirs of sweeps with the same "
                                      "method and mode, or remove warm_start.")
    return out
