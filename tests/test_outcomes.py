"""Per-sample validation outcomes (mgkd.training.outcomes): what a run keeps at its best and last
epoch, the compact file a trial writes, and that a resumed run keeps the same ones."""
import json

import numpy as np
import pytest

from mgkd.runner import run_training
from mgkd.training.outcomes import (BEST, LAST, OUTCOMES_FILE, OutcomesError, SampleOutcomes,
                                    read_outcomes, write_outcomes)

from test_engine import StopAfter


def test_outcomes_round_trip_through_the_file_packed_eight_to_a_byte(tmp_path):
    correct = np.array([True, False, True, True, False, False, True, False, True, True])
    ap = np.array([1.0, 0.5, 0.25, 0.0, 0.125, 1.0, 0.75, 0.5, 0.5, 1.0])
    record = SampleOutcomes(7, correct, ap).to_dict()
    write_outcomes(tmp_path / OUTCOMES_FILE, {BEST: record, LAST: None})
    back = read_outcomes(tmp_path / OUTCOMES_FILE)
    assert list(back) == [BEST] and back[BEST].epoch == 7 and back[BEST].size == 10
    assert back[BEST].correct.tolist() == correct.tolist()
    assert back[BEST].ap.tolist() == ap.tolist()  # exact in float32
    # 10 bools take 2 bytes: base64 of 2 bytes is 4 characters.
    assert len(json.loads((tmp_path / OUTCOMES_FILE).read_text())["records"][BEST]["correct"]) == 4


def test_a_damaged_outcomes_file_is_a_clear_error(tmp_path):
    path = tmp_path / OUTCOMES_FILE
    path.write_text("{not json")
    with pytest.raises(OutcomesError, match="could not be read"):
        read_outcomes(path)
    record = SampleOutcomes(1, np.ones(20, dtype=bool)).to_dict()
    write_outcomes(path, {LAST: {**record, "n": 30}})
    with pytest.raises(OutcomesError, match="record 'last'.*3 bytes, not the 4 that 30"):
        read_outcomes(path)


def test_a_run_keeps_its_best_and_last_epochs_outcomes_and_resumes_them_exactly(
        tmp_path, tiny_config):
    config = tiny_config(epochs=3)
    whole = run_training(config, tmp_path / "whole")
    state = whole.state
    last = SampleOutcomes.from_dict(state.last_outcomes)
    best = SampleOutcomes.from_dict(state.best_outcomes)
    assert last.epoch == 3 and best.epoch == state.best_epoch
    # The bits are the accuracy: their share is the epoch's val_acc.
    assert 100.0 * last.correct.mean() == pytest.approx(state.history[-1]["val_acc"], rel=1e-9)
    at_best = state.history[state.best_epoch - 1]["val_acc"]
    assert 100.0 * best.correct.mean() == pytest.approx(at_best, rel=1e-9)
    assert last.size == 20  # the tiny data's validation split (0.25 of 80)
    with pytest.raises(KeyboardInterrupt):
        run_training(config, tmp_path / "cut", callbacks=[StopAfter(2)])
    resumed = run_training(config, tmp_path / "cut", resume=True).state
    assert resumed.best_outcomes == state.best_outcomes
    assert resumed.last_outcomes == state.last_outcomes


def test_analysis_finds_the_record_of_the_epoch_a_trials_value_comes_from(tmp_path):
    from analysis.outcomes import trial_outcomes
    from analysis.records import TrialRecord

    trial = TrialRecord("a__b__kd__mas", 3, "r3", "COMPLETE", trial_dir=tmp_path)
    assert trial_outcomes(trial, 4).missing == "trial 3 has no val_outcomes.json"
    best = SampleOutcomes(2, np.array([True, True, False])).to_dict()
    last = SampleOutcomes(4, np.array([True, False, False])).to_dict()
    write_outcomes(tmp_path / OUTCOMES_FILE, {BEST: best, LAST: last})
    assert trial_outcomes(trial, 4).outcomes.correct.tolist() == [True, False, False]
    assert trial_outcomes(trial, 2).outcomes.correct.tolist() == [True, True, False]
    assert trial_outcomes(trial, 6).missing == ("trial 3's val_outcomes.json holds epoch(s) [2, 4], "
                                                "not epoch 6 its value comes from")
    (tmp_path / OUTCOMES_FILE).write_text('{"format": 9}')
    assert "not an outcomes file of format 1" in trial_outcomes(trial, 4).missing
    assert trial_outcomes(TrialRecord("s", 1, None, "COMPLETE"), 4).missing == \
        "trial 1 has no trial dir"
