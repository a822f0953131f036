"""Sweep progress without a wall of logs: per study, trials running / done / pruned / errored and
the best value of the sweep's objective (val_acc, val_map, ...) among complete trials — the rule
the summary, ``mgkd best`` and the report use — with elapsed time, trials ended per minute and an
ETA; printed when it changes (at most every few seconds), every few minutes otherwise, and when the
sweep ends."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback

from mgkd.timing import format_duration
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
    best_value: float | None = None  # of the sweep's objective, over complete trials only
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
    ``metric``: the sweep's objective, whose best is taken over complete trials only (a pruned
    trial's last value is not the value Optuna, the summary and ``mgkd best`` rank by)."""
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
        value = (trial.last_result or {}).get(metric)
        if kind == "done" and value is not None and math.isfinite(value):
            study.best_value = value if study.best_value is None else max(study.best_value, value)
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


def format_pace(counts: dict[str, StudyCounts], samples: dict[str, int], elapsed: float,
                ended_before: int = 0) -> str:
    """Elapsed time, trials ended per minute and the time left at that pace (pruned trials end
    sooner than complete ones, so it is rough until a few have ended). ``counts``: this run's
    trials; ``ended_before``: trials an extended sweep had ended before it (not in the pace)."""
    ended = sum(c.done + c.pruned + c.errored for c in counts.values())
    total = sum(samples.values())
    left = total - ended_before - ended
    parts = [f"elapsed {format_duration(elapsed)}", f"{ended_before + ended}/{total} trials ended"]
    if ended and elapsed > 0:
        rate = ended / (elapsed / 60.0)
        parts.append(f"{rate:.2f} trials/min")
        parts.append(f"ETA {format_duration(left / rate * 60.0)}" if left > 0 else "ETA 0s")
    else:
        parts.append("ETA after the first trial ends")
    return ", ".join(parts)


class ProgressTable(Callback):
    """A Tune callback printing the per-study table when it changes (checked every ``interval``
    seconds) and at least every ``heartbeat`` seconds, with the sweep's pace."""

    def __init__(self, epochs: dict[str, int], samples: dict[str, int], interval: float = 5.0,
                 metric: str = "val_acc", heartbeat: float = 300.0,
                 earlier: dict[str, StudyCounts] | None = None):
        self.epochs = epochs
        self.earlier = earlier or {}  # an extended sweep's trials from before: counted too
        self.samples = samples
        self.metric = metric  # the sweep's objective
        self.interval = interval
        self.heartbeat = heartbeat
        self._last = 0.0
        self._last_printed = 0.0
        self._last_table = ""
        self._started: float | None = None  # of this driver (a resumed sweep counts from its resume)
        self._running: set[str] = set()  # ids of trials running and not yet ended

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the sweep: a resumed driver starts its own clock.
        state = dict(self.__dict__)
        state.update(_last=0.0, _last_printed=0.0, _last_table="", _started=None)
        return state

    def _ended_before(self) -> int:
        return sum(c.done + c.pruned + c.errored for c in self.earlier.values())

    def _elapsed(self) -> float:
        now = time.monotonic()
        if self._started is None:
            self._started = now
        return now - self._started

    def _stopped_without_ending(self, trials: list) -> frozenset[str]:
        """Trials Tune marked ended that never ended (no complete or error event): stopped by a
        Ctrl-C, not by ASHA. Counted as interrupted in every table, never as pruned."""
        return frozenset(t.trial_id for t in trials
                         if t.trial_id in self._running and t.status not in ("RUNNING", "ERROR"))

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._elapsed()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._running |= {t.trial_id for t in trials if t.status == "RUNNING"}
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        counts = count_trials(trials, self.epochs, self._stopped_without_ending(trials),
                              self.metric)
        pace = format_pace(counts, self.samples, self._elapsed(), self._ended_before())
        table = format_counts(with_earlier(counts, self.earlier), self.samples, self.metric)
        if table != self._last_table or now - self._last_printed >= self.heartbeat:
            self._last_table, self._last_printed = table, now
            log.info("sweep progress (%s)\n%s", pace, table)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._running.discard(trial.trial_id)  # finished, or stopped by ASHA

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._running.discard(trial.trial_id)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Tune marks the trials it stops on Ctrl-C TERMINATED without ending them: those still
        # running here were interrupted, not pruned.
        interrupted = self._stopped_without_ending(trials)
        counts = count_trials(trials, self.epochs, interrupted, self.metric)
        pace = format_pace(counts, self.samples, self._elapsed(), self._ended_before())
        counts = with_earlier(counts, self.earlier)
        title = "sweep interrupted" if interrupted else "sweep finished"
        log.info("%s (%s)\n%s", title, pace, format_counts(counts, self.samples, self.metric))
