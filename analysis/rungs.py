"""Can ASHA be trusted here? How well a study's early epochs rank its trials the way their last
epoch does.

ASHA stops a trial at a rung (an epoch) when its value there is below the rung's cut; that is
only sound when the value at the rung ranks trials as their final value would. Over the
study's complete trials (the only ones with both), this gives Spearman's rank correlation
between the objective at each rung epoch and the final objective, with the number of trials.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from analysis.records import COMPLETE, TrialRecord
from analysis.rundir import SWEEP_FILE
from mgkd.config.sweep import SchedulerSpec

MIN_TRIALS = 4  # below this many complete trials a rank correlation says nothing


@dataclass(frozen=True)
class Schedule:
    """A sweep's ASHA settings (``scheduler`` in sweep.yaml)."""

    grace_period: int
    reduction_factor: float


@dataclass(frozen=True)
class RungCorrelation:
    epoch: int  # the rung's epoch
    rho: float | None  # Spearman's rank correlation; None when a side does not vary
    n: int  # complete trials with a value at this epoch and a final value


@dataclass
class AshaCheck:
    """The correlations per rung below the budget, or why there are none (``reason``)."""

    rungs: list[int] = field(default_factory=list)
    correlations: list[RungCorrelation] = field(default_factory=list)
    complete: int = 0
    reason: str = ""


def asha_rungs(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """The epochs at which Ray's ASHA (one bracket, ``time_attr: epoch``, as search.multistudy
    sets it up) compares trials before their budget ``max_t``: milestones grace·rf^k (Ray's
    count of rungs), each reached at the first whole epoch at or past it."""
    grace = min(grace_period, max_t)
    count = int(math.log(max_t / grace) / math.log(reduction_factor) + 1)
    milestones = sorted(grace * reduction_factor ** k for k in range(count))
    return sorted({math.ceil(m - 1e-9) for m in milestones if m < max_t})


def read_schedule(run_dir: Path) -> Schedule | None:
    """The sweep's ASHA settings from its sweep.yaml (the schema's defaults for keys it leaves
    out); None when there is no readable sweep.yaml."""
    try:
        data = yaml.safe_load((run_dir / SWEEP_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    scheduler = data.get("scheduler") if isinstance(data, dict) else None
    scheduler = scheduler if isinstance(scheduler, dict) else {}
    default = SchedulerSpec()
    grace = scheduler.get("grace_period", default.grace_period)
    factor = scheduler.get("reduction_factor", default.reduction_factor)
    if not (isinstance(grace, int) and grace >= 1 and isinstance(factor, (int, float))
            and factor > 1):
        return None
    return Schedule(grace, float(factor))


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (Pearson's on tie-averaged ranks); None when either side
    does not vary."""
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def asha_check(trials: list[TrialRecord], budget: int | None, schedule: Schedule | None,
               objective: str) -> AshaCheck:
    """The rung-vs-final rank correlations of one study's ``trials``."""
    complete = [t for t in trials if t.state == COMPLETE and t.objective_value is not None]
    if schedule is None or not budget:
        return AshaCheck(complete=len(complete),
                         reason="the sweep's ASHA schedule or epoch budget is unknown "
                                f"(no readable {SWEEP_FILE})")
    rungs = asha_rungs(schedule.grace_period, schedule.reduction_factor, budget)
    if not rungs:
        return AshaCheck(complete=len(complete), reason="ASHA has no rung before the last "
                                                        f"epoch ({budget}): it never stopped a trial")
    if len(complete) < MIN_TRIALS:
        return AshaCheck(rungs, complete=len(complete),
                         reason=f"too few complete trials ({len(complete)}; at least "
                                f"{MIN_TRIALS} are needed)")
    correlations = []
    for epoch in rungs:
        pairs = [(v, t.objective_value) for t in complete
                 if (v := t.metric_at(epoch, objective)) is not None]
        rho = spearman(*map(list, zip(*pairs))) if len(pairs) >= MIN_TRIALS else None
        correlations.append(RungCorrelation(epoch, rho, len(pairs)))
    return AshaCheck(rungs, correlations, len(complete))


def check_sentence(check: AshaCheck, objective: str) -> str:
    """The report's one line about a study."""
    head = "Can ASHA be trusted here? "
    if check.reason:
        return head + check.reason[0].upper() + check.reason[1:] + "."
    parts = [f"epoch {c.epoch}: ρ = {c.rho:+.2f} (n = {c.n})" if c.rho is not None
             else f"epoch {c.epoch}: undefined (n = {c.n}; the values do not vary)"
             for c in check.correlations]
    return (head + f"Spearman rank correlation between {objective} at each ASHA rung and the "
            f"final {objective}, over the {check.complete} complete trials — " + "; ".join(parts)
            + ". Near +1: the rung ranks trials as their last epoch does, so stopping there is "
              "safe; near 0 or below: ASHA stops trials on noise (a later grace_period helps).")

