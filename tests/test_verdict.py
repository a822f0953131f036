"""Noise-aware verdicts (analysis.verdict), with every expected number worked out by hand, and the
tune summary that prints them."""
from pathlib import Path

import pytest

from analysis.verdict import (BEATS_DEFAULT, DEFAULT_BEST, NO_COMPARISON, WITHIN_NOISE,
                              binomial_se, experiment_val_size, verdict)


def test_binomial_standard_error_in_points():
    assert binomial_se(90.0, 100) == pytest.approx(3.0)    # 100·sqrt(0.9·0.1/100)
    assert binomial_se(50.0, 400) == pytest.approx(2.5)    # 100·sqrt(0.25/400)
    assert binomial_se(100.0, 50) == 0.0
    assert binomial_se(90.0, None) is None and binomial_se(None, 100) is None


def test_single_run_gain_must_exceed_twice_the_standard_error_of_the_difference():
    # 94 vs 90 on 100 images: se 2.3749 and 3.0, difference se sqrt(5.64 + 9) = 3.8262; 4 < 7.65.
    close = verdict(94.0, 90.0, val_size=100)
    assert close.verdict == WITHIN_NOISE
    assert close.gain == pytest.approx(4.0) and close.gain_se == pytest.approx(3.82623, abs=1e-4)
    # 99 vs 90: se 0.99499 and 3.0, difference se sqrt(0.99 + 9) = 3.16070; 9 > 6.32.
    clear = verdict(99.0, 90.0, val_size=100)
    assert clear.verdict == BEATS_DEFAULT and clear.gain_se == pytest.approx(3.16070, abs=1e-4)
    assert clear.basis == "validation set (100 images)"
    # The same 4-point gain on 10,000 images: se 0.23749 and 0.3, difference se 0.38262; beats.
    assert verdict(94.0, 90.0, val_size=10_000).verdict == BEATS_DEFAULT


def test_ties_and_the_paper_default_winning_go_to_the_default():
    assert verdict(90.0, 90.0, val_size=100).verdict == DEFAULT_BEST
    assert verdict(85.0, 90.0, val_size=100).verdict == DEFAULT_BEST
    assert verdict(99.0, 90.0, val_size=100, default_selected=True).verdict == DEFAULT_BEST
    assert verdict(99.0, None, val_size=100).verdict == NO_COMPARISON
    assert verdict(99.0, 90.0, val_size=None).verdict == WITHIN_NOISE  # no n: no claim


def test_confirmed_runs_use_the_spread_over_seeds_instead():
    # best [80, 82, 84] (sd 2), paper [70, 71, 72] (sd 1): se sqrt(4/3 + 1/3) = 1.29099; 12 > 2.58.
    clear = verdict(82.0, 71.0, val_size=100, best_seeds=[80.0, 82.0, 84.0],
                    paper_seeds=[70.0, 71.0, 72.0])
    assert clear.verdict == BEATS_DEFAULT and clear.gain_se == pytest.approx(1.29099, abs=1e-4)
    assert clear.basis == "spread over seeds (3 vs 3 runs)"
    # best [80, 82, 84] vs paper [79, 81, 83]: se sqrt(4/3 + 4/3) = 1.63299; a 1-point gain is noise,
    # although 100,000 validation images alone would call it clear.
    noisy = verdict(82.0, 81.0, val_size=100_000, best_seeds=[80.0, 82.0, 84.0],
                    paper_seeds=[79.0, 81.0, 83.0])
    assert noisy.verdict == WITHIN_NOISE and noisy.gain_se == pytest.approx(1.63299, abs=1e-4)
    # A paper default run once borrows the winner's spread: se sqrt(4/3 + 4/1) = 2.30940.
    single = verdict(82.0, 81.0, val_size=100, best_seeds=[80.0, 82.0, 84.0])
    assert single.gain_se == pytest.approx(2.30940, abs=1e-4)


def test_validation_size_comes_from_the_experiment_config():
    experiment = {"dataset": "synthetic", "val_fraction": 0.25,
                  "data_options": {"num_train": 80, "num_test": 24}}
    assert experiment_val_size(experiment) == 20
    assert experiment_val_size({"dataset": "digits", "val_fraction": 0.2}) == 288  # 0.2 · 1438
    assert experiment_val_size({"dataset": "nope"}) is None and experiment_val_size(None) is None


def study_outcome(key: str, best: float, paper: float, paper_selected: bool = False):
    """One study as analysis.best reads it from a run dir: 8 complete trials, the paper default
    (trial 0) and the winner (trial 3, or the paper default itself)."""
    from analysis.best import StudyBest
    from analysis.records import COMPLETE, STATES, StudyInfo, TrialRecord

    info = StudyInfo(key, *key.split("__"), budget=8, objective="val_acc")
    default = TrialRecord(key, 0, "r0", COMPLETE, paper_default=True, value=paper)
    winner = default if paper_selected else TrialRecord(key, 3, "r3", COMPLETE, value=best,
                                                        params={"lr": 0.1})
    counts = {**{state: 0 for state in STATES}, COMPLETE: 8}
    return StudyBest(info, counts, winner, default, val_size=100)


def test_the_tune_summary_prints_standard_errors_and_verdicts():
    from search.tune import SweepResult, format_summary

    studies = [study_outcome("a__b__kd__mas", 99.0, 90.0),
               study_outcome("a__b__kd__mag", 94.0, 90.0),
               study_outcome("a__b__at__mas", 90.0, 90.0, paper_selected=True)]
    text = format_summary(SweepResult(Path("runs/x"), studies))
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("a__b")}
    assert "beats default" in lines["a__b__kd__mas"] and " 0.99 " in lines["a__b__kd__mas"]
    assert "within noise" in lines["a__b__kd__mag"] and " 2.37 " in lines["a__b__kd__mag"]
    assert "default best" in lines["a__b__at__mas"] and " 3.00 " in lines["a__b__at__mas"]
    assert "a__b__kd__mag: within noise" in text and "did NOT clearly beat" in text
