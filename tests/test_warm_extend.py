"""Searches that learn from earlier ones, on real Ray (2 local CPUs) and the embedded digits data:
a finished sweep extended from 2 to 3 trials a study (``mgkd tune --resume RUN --num-samples 3``),
then a sweep of another pair warm-started from it (``warm_start``)."""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from analysis.best import best_trials
from analysis.load import load_run
from analysis.optuna_db import PAPER_DEFAULT_ATTR, RAY_TRIAL_ATTR, WARM_START_ATTR
from analysis.report import write_report
from analysis.run import read_run
from mgkd.config.sweep import SweepSpec
from search.multistudy import study_sampler
from search.tune import run_sweep, study_entries
from search.sweep import validate_sweep
from spaces import fit_params

from conftest import assert_clean_error, mgkd
from sweep_helpers import study_trials

SOURCE_KEY = "resnet8__resnet8__kd__plain"
TARGET_KEY = "resnet8__resnet14__kd__plain"
NARROW_LR = {"type": "float", "low": 0.04, "high": 0.06, "log": True}  # the paper's 0.05 inside


def digits_sweep(storage: Path, name: str, student: str = "resnet8", cache: Path | None = None,
                 **overrides) -> SweepSpec:
    data = {"name": name, "storage_path": str(storage),
            "pairs": [{"teacher": "resnet8", "student": student}], "methods": ["kd"],
            "modes": ["plain"], "space": "full", "num_samples": 2, "max_concurrent_trials": 2,
            "resources_per_trial": {"cpu": 1, "gpu": 0},
            # grace period = epochs: ASHA stops nothing, so every trial is COMPLETE
            "scheduler": {"grace_period": 2, "reduction_factor": 2},
            "searcher": {"seed": 0, "multivariate": True}, "checkpoint_every": 2,
            "base": {"dataset": "digits", "train_subset": 160, "val_fraction": 0.25,
                     "epochs": 2, "teacher_epochs": 1, "batch_size": 32, "device": "cpu",
                     # one teacher cache for both sweeps: the target's teacher is the source's
                     "cache_dir": str(cache or storage / "cache")}}
    data.update(overrides)
    return SweepSpec.from_dict(data)


def snapshot(trial: optuna.trial.FrozenTrial) -> tuple:
    return (trial.number, trial.state, trial.value, trial.params, trial.user_attrs,
            trial.datetime_start, trial.datetime_complete, trial.intermediate_values)


@pytest.fixture(scope="module")
def extended_source(tmp_path_factory, local_ray):
    """A 2-trial sweep, what it held, then the same sweep extended to 3 trials a study."""
    storage = tmp_path_factory.mktemp("warm-extend")
    spec = digits_sweep(storage, "source")
    run_dir = run_sweep(spec).run_dir
    before = [snapshot(t) for t in study_trials(run_dir, SOURCE_KEY)]
    results = {d.name: (d / "result.json").read_bytes()
               for d in run_dir.iterdir() if (d / "result.json").is_file()}
    refused = mgkd("tune", "--resume", run_dir, "--num-samples", 1)
    extended = mgkd("tune", "--resume", run_dir, "--num-samples", 3)
    return spec, run_dir, before, results, refused, extended


def test_extending_below_what_is_done_is_refused_before_any_work(extended_source):
    _, run_dir, _, _, refused, _ = extended_source
    assert_clean_error(refused, "--num-samples 1", SOURCE_KEY, "2 finished trials",
                       "--num-samples 2 or more")


def test_an_extended_sweep_keeps_its_trials_and_runs_only_the_new_one(extended_source):
    spec, run_dir, before, results, _, extended = extended_source
    assert extended.returncode == 0, extended.stderr[-3000:]
    trials = study_trials(run_dir, SOURCE_KEY)
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [snapshot(t) for t in trials[:2]] == before  # untouched in optuna.db
    for name, content in results.items():  # and in their trial dirs: not re-run
        assert (run_dir / name / "result.json").read_bytes() == content
    new_dir = run_dir / f"{SOURCE_KEY}_002_{trials[2].user_attrs[RAY_TRIAL_ATTR]}"
    assert [json.loads(line)["epoch"] for line in
            (new_dir / "result.json").read_text().splitlines()] == [1, 2]
    assert yaml.safe_load((run_dir / "sweep.yaml").read_text())["num_samples"] == 3
    # Both Ray experiments' trial dirs are read as one sweep.
    run = read_run(run_dir)
    assert run.notes == []
    assert [(t.trial_number, t.trial_dir is not None) for t in run.trials] == [(0, True), (1, True),
                                                                             (2, True)]
    (best,) = best_trials(run)
    assert best.counts["COMPLETE"] == 3


def test_the_extension_was_sampled_with_the_earlier_trials_as_history(extended_source):
    spec, run_dir, _, _, _, _ = extended_source
    trials = study_trials(run_dir, SOURCE_KEY)
    (entry,) = study_entries(spec, validate_sweep(spec, check_data=False))

    def ask(history: list[optuna.trial.FrozenTrial]) -> dict:
        study = optuna.create_study(direction="maximize", sampler=study_sampler(
            SOURCE_KEY, 3, seed=0, multivariate=True, held=len(history)))
        study.add_trials(history)
        return entry.space.sample(study.ask())

    # TPE (2 start-up trials, both done) given exactly the two earlier trials proposes trial 2 ...
    assert ask(trials[:2]) == trials[2].params
    # ... which it would not have proposed without them.
    assert ask([]) != trials[2].params


@pytest.fixture(scope="module")
def warm_run(extended_source, tmp_path_factory):
    _, source_dir, *_ = extended_source
    storage = tmp_path_factory.mktemp("warm-target")
    spec = digits_sweep(storage, "target", student="resnet14", cache=source_dir.parent / "cache",
                        num_samples=3,
                        space={"preset": "full", "lr": NARROW_LR},
                        warm_start={"from": [str(source_dir)], "top_k": 2})
    return spec, source_dir, run_sweep(spec)


def test_a_warm_started_study_first_tries_the_best_earlier_configs_fitted_to_its_space(warm_run):
    spec, source_dir, result = warm_run
    (entry,) = study_entries(spec, validate_sweep(spec, check_data=False))
    paper = entry.space.paper_default()
    source = sorted(study_trials(source_dir, SOURCE_KEY), key=lambda t: (-t.value, t.number))
    expected = []
    for trial in source:  # best first; a config equal to the paper default here is skipped
        fitted = fit_params(entry.space, trial.params).params
        if fitted != paper and fitted not in [e[1] for e in expected] and len(expected) < 2:
            expected.append((trial.number, fitted))
    assert len(expected) == 2
    trials = study_trials(result.run_dir, TARGET_KEY)
    assert len(trials) == 3
    assert trials[0].user_attrs[PAPER_DEFAULT_ATTR] and trials[0].params == paper
    for trial, (number, params) in zip(trials[1:], expected):
        assert trial.params == params
        assert trial.user_attrs[WARM_START_ATTR] == f"resnet8→resnet8, trial {number}, {source_dir}"
    assert all(0.04 <= t.params["lr"] <= 0.06 for t in trials)  # clipped into this space


def test_mgkd_best_and_the_report_say_where_warm_started_trials_came_from(warm_run, tmp_path):
    _, source_dir, result = warm_run
    shown = mgkd("best", result.run_dir, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    (study,) = json.loads(shown.stdout)["studies"]
    trials = study_trials(result.run_dir, TARGET_KEY)
    assert [(row["trial_number"], row["source"]) for row in study["warm_started"]] == [
        (t.number, t.user_attrs[WARM_START_ATTR]) for t in trials[1:]]
    assert study["warm_start_source"] == (trials[study["trial_number"]].user_attrs
                                          .get(WARM_START_ATTR))
    table = mgkd("best", result.run_dir).stdout
    assert f"trial 1 from {trials[1].user_attrs[WARM_START_ATTR]} (COMPLETE" in table
    frame = load_run(result.run_dir)
    sources = frame.drop_duplicates("trial_number").set_index("trial_number")["warm_start_source"]
    assert sources.isna().tolist() == [True, False, False]
    assert [sources[1], sources[2]] == [t.user_attrs[WARM_START_ATTR] for t in trials[1:]]
    page = write_report(result.run_dir, tmp_path / "report").index.read_text()
    assert f"warm-started from {trials[1].user_attrs[WARM_START_ATTR]}" in page
