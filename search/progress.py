"""Sweep progress without a wall of logs: per study, trials running / done / pruned / errored and
the best value of the sweep's objective (val_acc, val_map, ...) so far, printed every few seconds and when the sweep ends."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback

from search.multistudy import stopped_early

log = logging.getLogger("mgkd.sweep")


@dataclass
class StudyCounts:
    pending: int = 0
    running: int = 0
    done: int = 0
    pruned: int = 0
    errored: int = 0
    interrupted: int = 0  # running when the sweep was stopped (Ctrl-C): they re-run on --resume
    best_value: float | None = None  # of the sweep's objective
    errors: list[str] = field(default_factory=list)


def classify(status: str, last_result: dict[str, Any], epochs: int) -> str:
    """Ray's trial status → pending / running / done / pruned / errored."""
    if status == "ERROR":
        return "errored"
    if status == "TERMINATED":
        return "pruned" if stopped_early(last_result.get("epoch"), epochs) else "done"
    if status == "RUNNING":
        return "running"
    return "pending"  # PENDING, PAUSED


def count_trials(trials: list, epochs: dict[str, int],
                 interrupted: frozenset[str] = frozenset(),
                 metric: str = "val_acc") -> dict[str, StudyCounts]:
    """Per study; trials whose ids are in ``interrupted`` count as interrupted, not pruned;
    ``metric``: the sweep's objective."""
    counts = {key: StudyCounts() for key in epochs}
    for trial in trials:
        key = trial.config.get("study")
        if key not in counts:
            continue
        study = counts[key]
        kind = classify(trial.status, trial.last_result or {}, epochs[key])
        if interrupted and kind != "errored" and trial.trial_id in interrupted:
            kind = "interrupted"
        setattr(study, kind, getattr(study, kind) + 1)
        if kind == "errored" and trial.error_file:
            study.errors.append(trial.error_file)
        best = (trial.last_result or {}).get(metric)
        if best is not None and math.isfinite(best):
            study.best_value = best if study.best_value is None else max(study.best_value, best)
    return counts


def with_earlier(counts: dict[str, StudyCounts],
                 earlier: dict[str, StudyCounts]) -> dict[str, StudyCounts]:
    """``counts`` plus the trials of earlier Tune runs of the same studies (an extended sweep)."""
    for key, before in earlier.items():
        if key not in counts:
            continue
        now = counts[key]
        now.done += before.done
        now.pruned += before.pruned
        now.errored += before.errored
        values = [v for v in (now.best_value, before.best_value) if v is not None]
        now.best_value = max(values) if values else None
    return counts


def format_counts(counts: dict[str, StudyCounts], samples: dict[str, int],
                  metric: str = "val_acc") -> str:
    width = max([len("study")] + [len(k) for k in counts])
    stopped = any(c.interrupted for c in counts.values())  # the column only after a Ctrl-C
    head = f"best {metric}"
    lines = [f"{'study':<{width}}  total  run  done  pruned  err  {head}"
             + ("  interrupted" if stopped else "")]
    for key, c in counts.items():
        best = "-" if c.best_value is None else f"{c.best_value:.2f}"
        lines.append(f"{key:<{width}}  {samples[key]:>5}  {c.running:>3}  {c.done:>4}  "
                     f"{c.pruned:>6}  {c.errored:>3}  {best:>{len(head)}}"
                     + (f"  {c.interrupted:>11}" if stopped else ""))
    return "\n".join(lines)


class ProgressTable(Callback):
    """A Tune callback printing the per-study table every ``interval`` seconds."""

    def __init__(self, epochs: dict[str, int], samples: dict[str, int], interval: float = 15.0,
                 metric: str = "val_acc", earlier: dict[str, StudyCounts] | None = None):
        self.epochs = epochs
        self.earlier = earlier or {}  # an extended sweep's trials from before: counted too
        self.samples = samples
        self.metric = metric  # the sweep's objective
        self.interval = interval
        self._last = 0.0
        self._running: set[str] = set()  # ids of trials running and not yet ended

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._running |= {t.trial_id for t in trials if t.status == "RUNNING"}
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            counts = with_earlier(count_trials(trials, self.epochs, metric=self.metric),
                                  self.earlier)
            log.info("sweep progress\n%s", format_counts(counts, self.samples, self.metric))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._running.discard(trial.trial_id)  # finished, or stopped by ASHA

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._running.discard(trial.trial_id)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Tune marks the trials it stops on Ctrl-C TERMINATED without ending them: those still
        # running here were interrupted, not pruned.
        interrupted = frozenset(t.trial_id for t in trials if t.trial_id in self._running
                                and t.status != "ERROR")
        counts = with_earlier(count_trials(trials, self.epochs, interrupted, self.metric),
                              self.earlier)
        title = "sweep interrupted" if interrupted else "sweep finished"
        log.info("%s\n%s", title, format_counts(counts, self.samples, self.metric))
