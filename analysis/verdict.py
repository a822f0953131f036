"""Noise-aware verdicts: does a study's best config really beat the paper default?

The one place that decides it; ``mgkd tune``'s summary, ``mgkd best`` (every format) and the report
all call ``verdict``.

* A validation accuracy ``acc`` (in %) measured on ``n`` images has the binomial standard error
  ``100 · sqrt(p (1 − p) / n)`` with ``p = acc / 100`` (``val_se``); so has a re-ID rank-1 over
  ``n`` validation queries. An objective that is not a share of items (re-ID mAP) has no such
  formula: its trials report its standard error (``val_map_se``), passed as ``best_se`` /
  ``paper_se``.
* Single runs: the gain of the best config over the paper default has the standard error
  ``sqrt(se_best² + se_paper²)`` (the two accuracies' binomial errors, treated as independent).
* Confirmed runs (``mgkd best --confirm``): the spread over seeds replaces it. Each side's mean has
  the error ``s / sqrt(k)`` (``s`` the sample standard deviation of its ``k`` seeds); a side with a
  single run borrows the other side's ``s``; with no spread on either side the binomial error is
  used.
* ``beats default`` only when the gain exceeds twice that error; ``within noise`` when it is
  positive but smaller; ``default best`` when the paper default is the selected config or the gain is
  not positive (ties go to the paper default); ``no comparison`` when the paper default has no value.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

BEATS_DEFAULT = "beats default"
WITHIN_NOISE = "within noise"
DEFAULT_BEST = "default best"
NO_COMPARISON = "no comparison"
VERDICTS: tuple[str, ...] = (BEATS_DEFAULT, WITHIN_NOISE, DEFAULT_BEST, NO_COMPARISON)
SE_MULTIPLE = 2.0  # a gain must exceed this many standard errors of the difference


def binomial_se(acc: float | None, n: int | None) -> float | None:
    """Standard error (points) of an accuracy ``acc`` (%) measured on ``n`` images."""
    if acc is None or not n or n <= 0 or not math.isfinite(acc):
        return None
    p = min(max(acc / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def _seed_sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


@dataclass(frozen=True)
class Verdict:
    """The outcome of one study's comparison with its paper default."""

    verdict: str
    gain: float | None  # best − paper default, points of validation accuracy
    gain_se: float | None  # standard error of that difference
    basis: str  # what the error comes from, e.g. "validation set (290 images)"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "gain_se": self.gain_se, "verdict_basis": self.basis}


def _decide(gain: float | None, gain_se: float | None, default_selected: bool) -> str:
    if gain is None:
        return NO_COMPARISON
    if default_selected or gain <= 0:
        return DEFAULT_BEST
    if gain_se is not None and gain > SE_MULTIPLE * gain_se:
        return BEATS_DEFAULT
    return WITHIN_NOISE


def verdict(best_acc: float | None, paper_acc: float | None, *, val_size: int | None,
            default_selected: bool = False, best_seeds: list[float] | None = None,
            paper_seeds: list[float] | None = None, best_se: float | None = None,
            paper_se: float | None = None, se_basis: str | None = None) -> Verdict:
    """Compare a study's selected config with its paper default.

    ``best_acc`` / ``paper_acc``: validation accuracies (%; means over seeds when confirmed).
    ``val_size``: validation images (the binomial error's ``n``). ``default_selected``: the paper
    default is the selected config. ``best_seeds`` / ``paper_seeds``: per-seed validation accuracies
    of a confirmation (``--confirm``); when given, their spread decides instead of ``val_size``.
    ``se_basis``: the name of the metric the trials reported their standard errors in
    (``best_se`` / ``paper_se``, e.g. val_map_se); given, those errors replace the binomial ones.
    """
    gain = None if best_acc is None or paper_acc is None else best_acc - paper_acc
    if best_seeds:
        paper_runs = paper_seeds or ([paper_acc] if paper_acc is not None else [])
        sd_best, sd_paper = _seed_sd(best_seeds), _seed_sd(paper_runs)
        sd_best = sd_paper if sd_best is None else sd_best
        sd_paper = sd_best if sd_paper is None else sd_paper
        basis = f"spread over seeds ({len(best_seeds)} vs {len(paper_runs)} runs)"
        if not paper_runs:
            return Verdict(_decide(None, None, default_selected), gain, None, basis)
        if sd_best is not None:
            gain_se = math.sqrt(sd_best ** 2 / len(best_seeds) + sd_paper ** 2 / len(paper_runs))
            return Verdict(_decide(gain, gain_se, default_selected), gain, gain_se, basis)
    if se_basis is not None:
        se_best, se_paper = best_se, paper_se
        basis = f"reported {se_basis}"
    else:
        se_best, se_paper = binomial_se(best_acc, val_size), binomial_se(paper_acc, val_size)
        basis = (f"validation set ({val_size} images)" if val_size
                 else "validation set size unknown")
    gain_se = (None if se_best is None or se_paper is None
               else math.sqrt(se_best ** 2 + se_paper ** 2))
    return Verdict(_decide(gain, gain_se, default_selected), gain, gain_se, basis)


def verdict_sentence(judged: Verdict, label: str) -> str:
    """One sentence saying what ``judged`` means, for an objective called ``label`` (accuracy,
    mAP, ...)."""
    twice = "-" if judged.gain_se is None else f"{2 * judged.gain_se:.2f}"
    what = f"validation {label}"
    if judged.verdict == BEATS_DEFAULT:
        return (f"beats default: the best config is {judged.gain:.2f} points of {what} "
                f"above the paper default, more than twice the difference's standard error "
                f"({twice}; {judged.basis}).")
    if judged.verdict == WITHIN_NOISE:
        return (f"within noise: the best config is {judged.gain:.2f} points above the paper "
                f"default, not more than twice the difference's standard error ({twice}; "
                f"{judged.basis}); the search did NOT clearly beat the paper default.")
    if judged.verdict == DEFAULT_BEST:
        return (f"default best: the search did NOT beat the paper default on {what}; "
                "the paper default is the best config found.")
    return "no comparison (the paper-default trial did not complete)."


def experiment_val_size(experiment: dict[str, Any] | None) -> int | None:
    """Validation images of a run of this experiment config (None when it does not parse)."""
    if not experiment:
        return None
    from mgkd.config import ExperimentConfig
    from mgkd.data import config_validation_size
    from mgkd.errors import ConfigError, DataError

    try:  # a re-ID run's query count needs its data set's listing, absent on another machine
        return config_validation_size(ExperimentConfig.from_dict(dict(experiment))) or None
    except (ConfigError, DataError, TypeError, ValueError, KeyError):
        return None
