"""Warm starts and sweep extensions, without Ray: which earlier configs a study takes, and every
refusal, each before any work, on run dirs whose optuna.db is written here through the real
search spaces."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
import pytest

from analysis.optuna_db import PAPER_DEFAULT_ATTR
from mgkd.config.sweep import SweepSpec
from mgkd.errors import ConfigError
from search.sweep import validate_sweep
from search.tune import add_warm_starts, study_entries

from conftest import assert_clean_error, mgkd
from sweep_helpers import tiny_sweep

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
MAS, PLAIN = "resnet8__resnet8__kd__mas", "resnet8__resnet8__kd__plain"


def fake_run(storage: Path, name: str, trials: dict[str, list[tuple[dict[str, Any], Any]]],
             **overrides: Any) -> SweepSpec:
    """A run dir holding sweep.yaml and an optuna.db whose studies hold ``trials``: per study
    (params, value) in order — value None leaves the trial RUNNING, "pruned" prunes it; the first
    is the paper default. Params are sampled through the study's real space."""
    spec = tiny_sweep(storage, name=name, **overrides)
    run_dir = spec.run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "sweep.yaml").write_text(spec.to_yaml())
    entries = {e.key: e for e in study_entries(spec, validate_sweep(spec, check_data=False))}
    storage_url = f"sqlite:///{run_dir / 'optuna.db'}"
    for key, rows in trials.items():
        study = optuna.create_study(study_name=key, storage=storage_url, direction="maximize")
        for i, (params, value) in enumerate(rows):
            attrs = {PAPER_DEFAULT_ATTR: True} if i == 0 else {}
            study.enqueue_trial({**entries[key].space.paper_default(), **params}, user_attrs=attrs)
            trial = study.ask()
            entries[key].space.sample(trial)
            if value == "pruned":
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            elif value is not None:
                study.tell(trial, value)
    return spec


def target(storage: Path, sources: list[Path], top_k: int = 2, **overrides: Any):
    spec = tiny_sweep(storage, name="target", warm_start={"from": [str(p) for p in sources],
                                                          "top_k": top_k}, num_samples=4,
                      **overrides)
    return spec, study_entries(spec, validate_sweep(spec, check_data=False))


# ---- which configs ---------------------------------------------------------------------------------
def test_each_study_takes_the_best_complete_configs_of_its_method_and_mode_in_turns(tmp_path, caplog):
    a = fake_run(tmp_path, "a", {MAS: [({}, 50.0), ({"lr": 0.02}, 70.0), ({"lr": 0.03}, 90.0),
                                       ({"lr": 0.2}, "pruned"), ({"lr": 0.07}, 60.0)],
                                 PLAIN: [({}, 40.0), ({"lr": 0.04}, 45.0)]}).run_dir
    b = fake_run(tmp_path, "b", {MAS: [({}, 10.0), ({"lr": 0.011}, 30.0)]},
                 modes=["mas"]).run_dir
    spec, entries = target(tmp_path, [a, b], top_k=3, modes=["mas", "plain"],
                           space={"preset": "full", "g*_dim": {"type": "categorical",
                                                               "choices": [16, 64, 256]},
                                  "g*_temperature": {"type": "categorical", "choices": [2, 8]},
                                  "lr": {"type": "float", "low": 0.012, "high": 0.1, "log": True}})
    with caplog.at_level(logging.INFO, logger="search.warmstart"):
        add_warm_starts(spec, entries)
    mas, plain = entries
    # In turns: a's best (trial 2), b's best (trial 1, lr clipped up to 0.012), a's second (1).
    assert [w.source for w in mas.warm] == [f"resnet8→resnet8, trial 2, {a}",
                                            f"resnet8→resnet8, trial 1, {b}",
                                            f"resnet8→resnet8, trial 1, {a}"]
    assert [w.params["lr"] for w in mas.warm] == [0.03, 0.012, 0.02]
    assert all(set(w.params) == set(mas.space.paper_default()) for w in mas.warm)
    assert any("clips lr 0.011 -> 0.012" in r.message for r in caplog.records)
    # plain: a's only other complete config; its paper default (40) equals this one's: skipped.
    assert [w.params["lr"] for w in plain.warm] == [0.04]
    assert any("same config as the paper default" in r.message for r in caplog.records)


def test_a_dropped_config_makes_room_for_the_next_best(tmp_path, caplog):
    source = fake_run(tmp_path, "a", {MAS: [({}, 50.0), ({"g0_dim": 256}, 90.0),
                                            ({"lr": 0.03}, 80.0), ({"lr": 0.02}, 70.0)]},
                      modes=["mas"]).run_dir
    spec, entries = target(tmp_path, [source], top_k=2, modes=["mas"],
                           space={"preset": "full",
                                  "g*_dim": {"type": "categorical", "choices": [16, 64]},
                                  "g1_dim": {"type": "categorical", "choices": [256]},
                                  "g*_temperature": {"type": "categorical", "choices": [2, 8]}})
    with caplog.at_level(logging.INFO, logger="search.warmstart"):
        add_warm_starts(spec, entries)
    assert [w.source.split(", ")[1] for w in entries[0].warm] == ["trial 2", "trial 3"]
    assert any("drops resnet8→resnet8, trial 1" in r.message and "g0_dim 256" in r.message
               for r in caplog.records)


def test_studies_that_hold_trials_are_not_warm_started_again(tmp_path):
    source = fake_run(tmp_path, "a", {PLAIN: [({}, 50.0), ({"lr": 0.03}, 80.0)]},
                      modes=["plain"]).run_dir
    spec, entries = target(tmp_path, [source], modes=["plain"])
    fake_run(tmp_path / "again", "target", {PLAIN: [({}, 1.0)]}, modes=["plain"])
    spec = SweepSpec.from_dict({**spec.to_dict(), "storage_path": str(tmp_path / "again")})
    add_warm_starts(spec, entries)
    assert entries[0].warm == []


# ---- refusals before any work ------------------------------------------------------------------------
def test_warm_start_dirs_must_be_other_run_dirs(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [(tmp_path / "missing", ["warm_start.from[0]", "does not exist"]),
             (tmp_path / "empty", ["warm_start.from[0]", "is not a sweep run dir"])]
    for path, words in cases:
        spec, entries = target(tmp_path, [path], modes=["plain"])
        with pytest.raises(ConfigError) as err:
            add_warm_starts(spec, entries)
        assert all(word in str(err.value) for word in words), err.value
    own = fake_run(tmp_path, "target", {}, modes=["plain"]).run_dir
    spec, entries = target(tmp_path, [own], modes=["plain"])
    with pytest.raises(ConfigError, match=r"warm_start.from\[0\].*own run dir.*--num-samples N"):
        add_warm_starts(spec, entries)


def test_run_dirs_without_a_study_of_the_method_and_mode_are_refused(tmp_path):
    source = fake_run(tmp_path, "a", {MAS: [({}, 50.0)], PLAIN: [({}, None)]}).run_dir
    spec, entries = target(tmp_path, [source], modes=["plain"])
    with pytest.raises(ConfigError) as err:
        add_warm_starts(spec, entries)
    for word in ("sweep warm_start.from", "kd in mode plain", f"{MAS} (1 complete)",
                 f"{PLAIN} (0 complete)", "remove warm_start"):
        assert word in str(err.value)


def test_extending_is_refused_below_what_is_done_and_for_unfinished_sweeps(tmp_path):
    done = fake_run(tmp_path, "done", {PLAIN: [({}, 50.0), ({"lr": 0.03}, 80.0),
                                               ({"lr": 0.02}, "pruned")]},
                    modes=["plain"], num_samples=3).run_dir
    assert_clean_error(mgkd("tune", "--resume", done, "--num-samples", 2), "--num-samples 2",
                       PLAIN, "3 finished trials", "--num-samples 3 or more")
    interrupted = fake_run(tmp_path, "interrupted", {PLAIN: [({}, 50.0), ({"lr": 0.03}, None)]},
                           modes=["plain"], num_samples=4).run_dir
    assert_clean_error(mgkd("tune", "--resume", interrupted, "--num-samples", 6),
                       "is unfinished", f"{PLAIN} (1 of 4 finished, 1 interrupted)",
                       f"mgkd tune --resume {interrupted}`")
    assert_clean_error(mgkd("tune", "--resume", interrupted, "--num-samples", 3),
                       "asks for 4 trials a study", "--num-samples 4 or more")
    assert_clean_error(mgkd("tune", "sweeps/demo.yaml", "--num-samples", 30),
                       "--num-samples", "--resume RUN_DIR")
    assert mgkd("tune", "--resume", done, "--num-samples", 0).returncode == 2  # argparse
