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

Paired verdicts (:func:`paired_verdict`), used when both trials stored which validation samples
they got right (``val_outcomes.json``, :mod:`mgkd.training.outcomes`): both models were scored on
the same samples, so only the samples they disagree on count. Accuracy and re-ID rank-1: the exact
McNemar test on the discordant samples; re-ID mAP: the sign-flip permutation test of the per-query
AP differences (:mod:`analysis.paired`). ``beats default`` when the gain is positive and the
two-sided p-value is below :data:`SIGNIFICANCE`; ``default best`` when the paper default is selected
or the gain is negative; ``within noise`` otherwise, a tie included (identical predictions of
a distinct config cannot tell the two apart). Confirmed runs whose seeds match pair too: the
per-seed differences' spread gives the error (``paired_seeds``).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from analysis.paired import RANDOM_FLIPS, discordant_counts, mcnemar_exact, sign_flip_test
from mgkd.training.outcomes import SampleOutcomes

BEATS_DEFAULT = "beats default"
WITHIN_NOISE = "within noise"
DEFAULT_BEST = "default best"
NO_COMPARISON = "no comparison"
VERDICTS: tuple[str, ...] = (BEATS_DEFAULT, WITHIN_NOISE, DEFAULT_BEST, NO_COMPARISON)
SE_MULTIPLE = 2.0  # a gain must exceed this many standard errors of the difference
SIGNIFICANCE = 0.05  # a paired test's two-sided p-value must be below this
MCNEMAR = "exact McNemar"
SIGN_FLIP = "sign-flip permutation"
UNPAIRED = "unpaired standard errors"
PAIRED_SEEDS = "paired seed differences"


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
    test: str = UNPAIRED  # MCNEMAR, SIGN_FLIP, PAIRED_SEEDS or UNPAIRED
    p_value: float | None = None  # a paired test's two-sided p-value
    # (samples only the best got right, only the paper default got right); re-ID mAP: queries
    # whose AP is higher with the best, with the paper default
    discordant: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        best, paper = self.discordant if self.discordant else (None, None)
        return {"verdict": self.verdict, "gain_se": self.gain_se, "verdict_basis": self.basis,
                "verdict_test": self.test, "p_value": self.p_value,
                "significance": SIGNIFICANCE if self.p_value is not None else None,
                "discordant_best": best, "discordant_paper": paper}


def _decide(gain: float | None, gain_se: float | None, default_selected: bool) -> str:
    if gain is None:
        return NO_COMPARISON
    if default_selected or gain <= 0:
        return DEFAULT_BEST
    if gain_se is not None and gain > SE_MULTIPLE * gain_se:
        return BEATS_DEFAULT
    return WITHIN_NOISE


def _decide_paired(gain: float, p_value: float, default_selected: bool) -> str:
    if default_selected or gain < 0:
        return DEFAULT_BEST
    return BEATS_DEFAULT if gain > 0 and p_value < SIGNIFICANCE else WITHIN_NOISE


def paired_verdict(best: SampleOutcomes, paper: SampleOutcomes, *, per_query_ap: bool,
                   default_selected: bool = False) -> Verdict:
    """Compare the selected trial with the paper default sample by sample (module doc):
    ``per_query_ap`` for re-ID mAP (the sign-flip test of the AP differences), else the exact
    McNemar test of the right/wrong bits. Gains are in points (percent)."""
    if best.size != paper.size:
        raise ValueError(f"the best trial was scored on {best.size} validation samples and the "
                         f"paper default on {paper.size}; a paired test needs the same samples.")
    n = best.size
    if per_query_ap:
        if best.ap is None or paper.ap is None:
            raise ValueError("a paired mAP verdict needs both trials' per-query AP")
        flip = sign_flip_test(best.ap, paper.ap)
        diff = best.ap - paper.ap
        gain_se = 100.0 * statistics.stdev(diff) / math.sqrt(n) if n > 1 else None
        gain = 100.0 * flip.mean_difference
        exact = "exact" if flip.exact else f"{RANDOM_FLIPS:,} random sign patterns"
        basis = (f"{SIGN_FLIP} test of per-query AP on {n} queries ({exact}): {flip.improved} "
                 f"better, {flip.worsened} worse")
        return Verdict(_decide_paired(gain, flip.p_value, default_selected), gain, gain_se, basis,
                       SIGN_FLIP, flip.p_value, (flip.improved, flip.worsened))
    b, c = discordant_counts(best.correct, paper.correct)
    test = mcnemar_exact(b, c)
    gain = 100.0 * (b - c) / n
    gain_se = 100.0 * math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    basis = (f"{MCNEMAR} test on {n} validation samples: {b} right only with the best config, "
             f"{c} only with the paper default")
    return Verdict(_decide_paired(gain, test.p_value, default_selected), gain, gain_se, basis,
                   MCNEMAR, test.p_value, (b, c))


def _paired_seeds(best_seeds: list[float], paper_seeds: list[float],
                  default_selected: bool) -> Verdict:
    diff = [b - p for b, p in zip(best_seeds, paper_seeds)]
    gain = statistics.fmean(diff)
    gain_se = statistics.stdev(diff) / math.sqrt(len(diff))
    basis = f"paired differences over {len(diff)} seeds"
    return Verdict(_decide(gain, gain_se, default_selected), gain, gain_se, basis, PAIRED_SEEDS)


def verdict(best_acc: float | None, paper_acc: float | None, *, val_size: int | None,
            default_selected: bool = False, best_seeds: list[float] | None = None,
            paper_seeds: list[float] | None = None, best_se: float | None = None,
            paper_se: float | None = None, se_basis: str | None = None,
            paired_seeds: bool = False) -> Verdict:
    """Compare a study's selected config with its paper default.

    ``best_acc`` / ``paper_acc``: validation accuracies (%; means over seeds when confirmed).
    ``val_size``: validation images (the binomial error's ``n``). ``default_selected``: the paper
    default is the selected config. ``best_seeds`` / ``paper_seeds``: per-seed validation accuracies
    of a confirmation (``--confirm``); when given, their spread decides instead of ``val_size``.
    ``se_basis``: the name of the metric the trials reported their standard errors in
    (``best_se`` / ``paper_se``, e.g. val_map_se); given, those errors replace the binomial ones.
    ``paired_seeds``: ``best_seeds[i]`` and ``paper_seeds[i]`` ran with the same seed; with two
    or more such pairs the per-seed differences' spread gives the error (``stdev(d) / sqrt(k)``).
    """
    gain = None if best_acc is None or paper_acc is None else best_acc - paper_acc
    if (paired_seeds and best_seeds and paper_seeds and len(best_seeds) == len(paper_seeds) > 1
            and gain is not None):
        return _paired_seeds(best_seeds, paper_seeds, default_selected)
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
    what = f"validation {label}"
    if judged.p_value is not None and judged.verdict in (BEATS_DEFAULT, WITHIN_NOISE):
        return _paired_sentence(judged, what)
    if judged.gain_se is None:
        noise = f"the difference's standard error is unknown; {judged.basis}"
    else:  # both numbers, named: "(2.72)" alone read as the standard error, not its double
        noise = (f"standard error of the difference {judged.gain_se:.2f}, threshold 2 x SE = "
                 f"{2 * judged.gain_se:.2f}; {judged.basis}")
    if judged.verdict == BEATS_DEFAULT:
        return (f"beats default: the best config is {judged.gain:.2f} points of {what} "
                f"above the paper default, more than the threshold ({noise}).")
    if judged.verdict == WITHIN_NOISE:
        return (f"within noise: the best config is {judged.gain:.2f} points above the paper "
                f"default, not more than the threshold ({noise}); the search did NOT clearly "
                "beat the paper default.")
    if judged.verdict == DEFAULT_BEST:
        return (f"default best: the search did NOT beat the paper default on {what}; "
                "the paper default is the best config found.")
    return "no comparison (the paper-default trial did not complete)."


def _paired_sentence(judged: Verdict, what: str) -> str:
    assert judged.gain is not None and judged.p_value is not None
    p_value = f"p = {judged.p_value:.3g}"
    if judged.verdict == BEATS_DEFAULT:
        return (f"beats default: the best config is {judged.gain:.2f} points of {what} above the "
                f"paper default, and a paired test says it is real ({p_value} < {SIGNIFICANCE}; "
                f"{judged.basis}).")
    return (f"within noise: the best config is {judged.gain:.2f} points of {what} above the "
            f"paper default, but a paired test cannot tell them apart ({p_value}, not below "
            f"{SIGNIFICANCE}; {judged.basis}); the search did NOT clearly beat the paper default.")


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
