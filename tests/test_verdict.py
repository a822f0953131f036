"""Noise-aware verdicts (analysis.verdict), with every expected number worked out by hand, and the
tune summary that prints them."""
import math
from pathlib import Path

import pytest

from analysis.verdict import (BEATS_DEFAULT, DEFAULT_BEST, MCNEMAR, NO_COMPARISON, PAIRED_SEEDS,
                              SIGN_FLIP, WITHIN_NOISE, binomial_se, experiment_val_size,
                              paired_verdict, verdict, verdict_sentence)


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


def test_the_sentence_names_the_standard_error_and_the_threshold_apart():
    # 94 vs 90 on 100 images: se of the difference 3.83, threshold 7.65 (see above).
    sentence = verdict_sentence(verdict(94.0, 90.0, val_size=100), "accuracy")
    assert "standard error of the difference 3.83, threshold 2 x SE = 7.65" in sentence
    assert sentence.startswith("within noise: the best config is 4.00 points")
    beats = verdict_sentence(verdict(99.0, 90.0, val_size=100), "accuracy")
    assert "more than the threshold (standard error of the difference 3.16, threshold 2 x SE = 6.32" in beats


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


def test_an_interrupted_sweep_summary_counts_its_interrupted_trials():
    from analysis.records import RUNNING
    from search.tune import SweepResult, format_summary

    study = study_outcome("a__b__kd__mas", 99.0, 90.0)
    study.counts[RUNNING] = 2  # stopped by Ctrl-C: RUNNING in optuna.db
    text = format_summary(SweepResult(Path("runs/x"), [study], interrupted=True))
    header, row = (line.split() for line in text.splitlines()[:2])
    assert header[:5] == ["study", "done", "pruned", "err", "interrupted"]
    assert row[1:5] == ["8", "0", "0", "2"]
    finished = format_summary(SweepResult(Path("runs/x"), [study]))
    assert "interrupted" not in finished.splitlines()[0]


# ---- paired verdicts (analysis.paired, analysis.verdict.paired_verdict) ------------------------

def outcomes(correct, ap=None, epoch=5):
    import numpy as np

    from mgkd.training.outcomes import SampleOutcomes
    return SampleOutcomes(epoch, np.array(correct, dtype=bool),
                          None if ap is None else np.array(ap, dtype=float))


def test_exact_mcnemar_p_values_worked_out_by_hand():
    from analysis.paired import mcnemar_exact

    # b=10, c=1: 2·(C(11,0) + C(11,1)) / 2^11 = 2·12/2048.
    assert mcnemar_exact(10, 1).p_value == pytest.approx(24 / 2048, rel=1e-12)
    assert mcnemar_exact(1, 10).p_value == mcnemar_exact(10, 1).p_value  # two-sided
    assert mcnemar_exact(8, 0).p_value == pytest.approx(2 / 256, rel=1e-12)
    assert mcnemar_exact(5, 1).p_value == pytest.approx(2 * 7 / 64, rel=1e-12)
    assert mcnemar_exact(3, 3).p_value == 1.0 and mcnemar_exact(0, 0).p_value == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_exact(-1, 2)


def test_a_gain_the_unpaired_rule_calls_noise_the_paired_test_decides():
    # 100 images; the paper default gets the first 85 right, the best config those and 8 more.
    paper = outcomes([True] * 85 + [False] * 15)
    best = outcomes([True] * 93 + [False] * 7)
    # Unpaired: se 2.5515 and 3.5707, difference se sqrt(6.51 + 12.75) = 4.3886; 8 < 8.777.
    assert verdict(93.0, 85.0, val_size=100).verdict == WITHIN_NOISE
    # Paired: 8 discordant samples, all for the best: p = 2/2^8 = 0.0078 < 0.05.
    judged = paired_verdict(best, paper, per_query_ap=False)
    assert judged.verdict == BEATS_DEFAULT and judged.test == MCNEMAR
    assert judged.discordant == (8, 0) and judged.gain == pytest.approx(8.0)
    assert judged.p_value == pytest.approx(2 / 256)
    assert judged.gain_se == pytest.approx(100 * math.sqrt(8 - 64 / 100) / 100)  # 2.7129
    row = judged.to_dict()
    assert row["discordant_best"] == 8 and row["discordant_paper"] == 0
    assert row["p_value"] == pytest.approx(0.0078125) and row["significance"] == 0.05
    assert "p = 0.00781 < 0.05" in verdict_sentence(judged, "accuracy")


def test_identical_predictions_are_within_noise_and_few_discordant_pairs_too():
    same = outcomes([True, False, True, True])
    judged = paired_verdict(same, same, per_query_ap=False)
    assert judged.verdict == WITHIN_NOISE and judged.p_value == 1.0 and judged.discordant == (0, 0)
    # 5 against 1 on 50 images: p = 2·7/64 = 0.21875, not below 0.05.
    paper = outcomes([True] * 40 + [False] * 10)
    best = outcomes([True] * 39 + [False] + [True] * 5 + [False] * 5)
    noisy = paired_verdict(best, paper, per_query_ap=False)
    assert noisy.discordant == (5, 1) and noisy.p_value == pytest.approx(0.21875)
    assert noisy.verdict == WITHIN_NOISE and "cannot tell them apart" in verdict_sentence(noisy, "x")
    # The paper default ahead, or selected: default best whatever the p-value.
    assert paired_verdict(paper, best, per_query_ap=False).verdict == DEFAULT_BEST
    assert paired_verdict(best, paper, per_query_ap=False,
                          default_selected=True).verdict == DEFAULT_BEST
    with pytest.raises(ValueError, match="same samples"):
        paired_verdict(outcomes([True] * 3), outcomes([True] * 4), per_query_ap=False)


def test_sign_flip_test_of_per_query_ap_worked_out_by_hand():
    from analysis.paired import sign_flip_test

    # Four positive differences: only all-plus and all-minus reach |sum| = 1.0 -> 2/16.
    four = sign_flip_test([0.6, 0.7, 0.8, 0.9], [0.5, 0.5, 0.5, 0.5])
    assert four.p_value == pytest.approx(2 / 16) and four.exact and four.improved == 4
    # Six +0.3 and one -0.1 (sum 1.7): the pattern itself, the one flipping only -0.1 (1.9) and
    # their negations -> 4/128.
    seven = sign_flip_test([0.8] * 6 + [0.4], [0.5] * 6 + [0.5])
    assert seven.p_value == pytest.approx(4 / 128) and seven.worsened == 1
    # Beyond 16 queries: 20,000 seeded patterns; all 40 queries better: only the +1 of the count.
    many = sign_flip_test([0.9] * 40, [0.5] * 40)
    assert not many.exact and many.p_value == pytest.approx(1 / 20_001)
    assert sign_flip_test([0.3] * 40, [0.3] * 40).p_value == 1.0


def test_paired_map_verdict_uses_the_sign_flip_test():
    paper = outcomes([False] * 7, ap=[0.5] * 7)
    best = outcomes([False] * 7, ap=[0.8] * 6 + [0.4])
    judged = paired_verdict(best, paper, per_query_ap=True)
    # mean difference (1.8 - 0.1)/7 = 0.242857 -> 24.29 points; p = 4/128 < 0.05.
    assert judged.verdict == BEATS_DEFAULT and judged.test == SIGN_FLIP
    assert judged.gain == pytest.approx(100 * 1.7 / 7) and judged.discordant == (6, 1)
    assert judged.p_value == pytest.approx(4 / 128)
    identical = paired_verdict(paper, paper, per_query_ap=True)
    assert identical.verdict == WITHIN_NOISE and identical.p_value == 1.0


def test_confirmed_runs_with_matching_seeds_judge_the_per_seed_differences():
    # best [80, 82, 84] vs paper [79, 81, 83] on the same seeds: every seed +1, no spread at all;
    # unpaired (se 1.63299) that was noise, paired it is a clear gain.
    seeds = {"best_seeds": [80.0, 82.0, 84.0], "paper_seeds": [79.0, 81.0, 83.0]}
    assert verdict(82.0, 81.0, val_size=100, **seeds).verdict == WITHIN_NOISE
    paired = verdict(82.0, 81.0, val_size=100, paired_seeds=True, **seeds)
    assert paired.verdict == BEATS_DEFAULT and paired.gain_se == 0.0
    assert paired.test == PAIRED_SEEDS and paired.basis == "paired differences over 3 seeds"
    # Differences [1, -1, 3]: mean 1, sd 2, se 2/sqrt(3) = 1.15470; 1 < 2.31: noise.
    mixed = verdict(82.0, 81.0, val_size=100, paired_seeds=True, best_seeds=[80.0, 82.0, 84.0],
                    paper_seeds=[79.0, 83.0, 81.0])
    assert mixed.verdict == WITHIN_NOISE and mixed.gain_se == pytest.approx(1.15470, abs=1e-5)
