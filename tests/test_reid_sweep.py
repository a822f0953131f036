"""A re-ID sweep end to end on real Ray (2 local CPUs), real Optuna and real TensorBoard files: a
tiny OSNet distils into a tiny OSNet with rkd in mode mas on a Market-format fixture of real JPEGs,
selected on val_map; then `mgkd best`, export, board and report on its run dir."""
from __future__ import annotations

import json

import optuna
import pytest
import yaml

from conftest import mgkd
from market_fixture import write_market1501
from search.tune import run_sweep
from sweep_helpers import study_trials, tiny_sweep, trial_dirs

KEY = "osnet_x0_25__osnet_x0_25__rkd__mas"
RETRIEVAL = ("val_map", "val_rank1", "val_rank5", "val_rank10", "val_map_se", "test_map",
             "test_rank1", "best_val_map", "loss_triplet")


@pytest.fixture(scope="module")
def reid_sweep(tmp_path_factory, local_ray):
    # Teachers and heads train at batch 64 = 16 identities x 4: 24 identities, 6 held out for val.
    data_dir = write_market1501(tmp_path_factory.mktemp("market"), identities=24, cameras=2,
                                per_camera=2, test_identities=4)
    spec = tiny_sweep(tmp_path_factory.mktemp("sweeps"), name="reid",
                      pairs=[{"teacher": "osnet_x0_25", "student": "osnet_x0_25"}],
                      methods=["rkd"], modes=["mas"], num_samples=2, objective="val_map",
                      base={"dataset": "market1501", "data_dir": str(data_dir),
                            "data_options": {"height": 64, "width": 32, "instances": 4},
                            "epochs": 2})
    return spec, run_sweep(spec)


def test_trials_report_retrieval_metrics_and_optuna_selects_on_val_map(reid_sweep):
    spec, result = reid_sweep
    (summary,) = result.studies
    assert summary.study.key == KEY and summary.objective.name == "val_map"
    finals = {}
    for folder in trial_dirs(result.run_dir):
        rows = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
        for key in RETRIEVAL:
            assert all(0.0 <= row[key] for row in rows), key
        assert "val_acc" not in rows[-1]
        params = json.loads((folder / "params.json").read_text())
        assert params["experiment"]["objective"] == "val_map"
        finals[params["trial_number"]] = rows[-1]
    trials = study_trials(result.run_dir, KEY)
    assert len(trials) == spec.num_samples
    for trial in trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.value == pytest.approx(finals[trial.number]["val_map"])
    assert summary.value == max(t.value for t in trials if t.value is not None)


def test_best_export_and_report_work_on_the_re_id_run(reid_sweep, tmp_path):
    _, result = reid_sweep
    run_dir = result.run_dir
    best = mgkd("best", run_dir, "--format", "json")
    assert best.returncode == 0, best.stderr
    (row,) = json.loads(best.stdout)["studies"]
    assert row["objective"] == "val_map" and row["test_metric"] == "test_map"
    assert row["value"] == max(t.value for t in study_trials(run_dir, KEY) if t.value is not None)
    assert {"val_map", "val_rank1", "test_map", "test_rank1"} <= set(row)

    exported = mgkd("export", run_dir, "--out", tmp_path / "best")
    assert exported.returncode == 0, exported.stderr
    config = yaml.safe_load((tmp_path / "best" / f"{KEY}.yaml").read_text())
    assert (config["dataset"], config["objective"], config["val_fraction"]) == (
        "market1501", "val_map", 0.0)
    assert str(run_dir) not in json.dumps({k: v for k, v in config.items()
                                           if k in ("cache_dir", "data_dir", "teacher_checkpoint")})

    report = mgkd("report", run_dir, "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert "layout of the Market-1501 table of Shao &amp; Chen, 2021" in page
    assert "CIFAR-100 table" not in page
    assert 'data-field="test_rank1"' in page and 'data-field="test_map"' in page

    board = mgkd("board", run_dir, "--print", "--logdir", tmp_path / "board")
    assert board.returncode == 0, board.stderr
    assert any("mAP" in p.name for p in (tmp_path / "board").rglob("#1*"))
