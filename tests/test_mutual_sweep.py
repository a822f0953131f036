"""A peer-group sweep on real Ray and Optuna (method dml in plain and mag), and what the analysis
makes of it: per-peer metrics in every trial, the paper default first, `mgkd best`, export (a
config `mgkd train` runs), the report and the board treating the group like a pair."""
from __future__ import annotations

import json

import pytest
import yaml

from mgkd.config import load_config
from mgkd.runner import run_training
from search.tune import run_sweep

from conftest import mgkd
from sweep_helpers import TINY_SPACE, study_trials, tiny_sweep, trial_dirs

GROUP = "resnet8+resnet8"
STUDIES = [f"{GROUP}__dml__plain", f"{GROUP}__dml__mag"]


@pytest.fixture(scope="module")
def group_run(tmp_path_factory, local_ray):
    spec = tiny_sweep(tmp_path_factory.mktemp("dml-sweep"), name="dml", pairs=[],
                      groups=[{"peers": ["resnet8", "resnet8"]}], methods=["dml"],
                      modes=["plain", "mag"], num_samples=2, space=TINY_SPACE,
                      base={"epochs": 2, "teacher_epochs": 1})  # teacher_epochs: pairs' only
    return spec, run_sweep(spec).run_dir


def result_lines(trial_dir):
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()
            if line.strip()]


def test_each_group_study_runs_the_paper_default_first_and_reports_every_peer(group_run):
    spec, run_dir = group_run
    for key in STUDIES:
        trials = study_trials(run_dir, key)
        assert len(trials) == 2 and all(t.state.is_finished() for t in trials)
        first = trials[0]
        assert first.user_attrs["paper_default"] is True
        # dml.py's --alpha 0.5 and --T 4 (used here); mdp_dml.py's heads 64 at T 2, 256 at T 8
        assert (first.params["ce_weight"], first.params["logit_weight"],
                first.params["temperature"]) == (0.5, 0.5, 4.0)
        if key.endswith("mag"):
            assert [first.params[f"g{k}_{f}"] for k in (0, 1) for f in ("dim", "temperature")] \
                == [64, 2, 256, 8]
    dirs = trial_dirs(run_dir)
    assert {d.name.split("_0", 1)[0] for d in dirs} == set(STUDIES)
    for trial_dir in dirs:
        for row in result_lines(trial_dir):
            peers = [row["val_acc_peer0"], row["val_acc_peer1"]]
            assert row["val_acc"] == max(peers)
            assert row["test_acc"] == row[f"test_acc_peer{row['best_peer']}"]
        experiment = json.loads((trial_dir / "params.json").read_text())["experiment"]
        assert experiment["peers"] == ["resnet8", "resnet8"] and "teacher" not in experiment
    assert not (run_dir / "cache").exists() or not any((run_dir / "cache").rglob("*.pt"))


def test_best_export_report_and_board_treat_the_group_like_a_pair(group_run, tmp_path):
    spec, run_dir = group_run
    best = mgkd("best", run_dir, "--format", "json")
    assert best.returncode == 0, best.stderr
    rows = {s["study"]: s for s in json.loads(best.stdout)["studies"]}
    assert list(rows) == STUDIES
    for key, row in rows.items():
        assert row["teacher"] == "" and row["student"] == GROUP and row["method"] == "dml"
        assert row["val_acc"] is not None
    text = mgkd("best", run_dir)
    assert text.returncode == 0 and f"peer groups (dml: {GROUP}): val_acc is the best peer's" \
        in text.stdout, text.stdout

    out = tmp_path / "best"
    exported = mgkd("export", run_dir, "--out", out)
    assert exported.returncode == 0, exported.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{k}.yaml" for k in STUDIES)
    config = load_config(out / f"{STUDIES[1]}.yaml")
    assert config.peers == ["resnet8", "resnet8"] and config.val_fraction == 0.0
    assert "teacher" not in yaml.safe_load((out / f"{STUDIES[1]}.yaml").read_text())
    final = run_training(config.replace(epochs=1, data_dir=spec.base.get("data_dir", "./data"),
                                        cache_dir=str(tmp_path / "cache")), tmp_path / "final")
    assert final.final["best_peer"] in (0, 1)  # no validation split: chosen by training CE
    assert (tmp_path / "final" / "student.pt").is_file()

    report = mgkd("report", run_dir, "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    assert f"dml: {GROUP}" in (tmp_path / "report" / "index.html").read_text()

    board = mgkd("board", run_dir, "--top", "1", "--print", "--logdir", tmp_path / "links")
    assert board.returncode == 0, board.stderr
    assert sorted(p.name for p in (tmp_path / "links" / GROUP).iterdir()) == [
        "dml-mag", "dml-plain"]
