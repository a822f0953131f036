"""The sweep's objective (issue 10): mgkd.catalog.objectives, the sweep key and its checks, and the
analysis of a re-ID run dir selected on val_map.

The re-ID run dir is built by hand the way a sweep writes one (sweep.yaml, optuna.db, one trial
dir per trial with params.json and result.json), with the metrics re-ID trials report. The
re-ID sweep runs on market1501, whose files need not exist to plan or analyse it."""
from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import yaml

from mgkd.catalog.objectives import (OBJECTIVES, check_objective, default_objective, get_objective,
                                     objectives_for)
from mgkd.config import ExperimentConfig
from mgkd.config.sweep import SweepSpec, plan
from mgkd.errors import ConfigError
from search.sweep import validate_sweep

from sweep_helpers import tiny_sweep

KEY = "resnet32x4__ResNet50__rkd__mas"
EPOCHS = 3
DIGITS = {"dataset": "digits", "data_options": {}}  # a classification data set
MARKET = {"dataset": "market1501", "data_options": {"height": 64, "width": 32},
          "data_dir": "/nonexistent/market"}
# Per trial: lr, its final val_map / val_map_se / val_rank1 / test_map / test_rank1, and a decoy
# val_acc. Trial 2 leads on rank-1 and on the decoy but not on val_map, so it must lose.
TRIALS = {0: (0.05, 60.0, 1.0, 80.0, 58.0, 78.0, 10.0),  # the paper default
          1: (0.02, 70.0, 1.5, 82.0, 68.0, 85.0, 20.0),
          2: (0.08, 65.0, 1.2, 95.0, 66.0, 93.0, 99.0)}


def reid_spec(storage: Path, **overrides) -> SweepSpec:
    keys = {"name": "reid", "pairs": [{"teacher": "resnet32x4", "student": "ResNet50"}],
            "methods": ["rkd"], "modes": ["mas"], "objective": "val_map",
            "base": {"epochs": EPOCHS, **MARKET}}
    return tiny_sweep(storage, **{**keys, **overrides})


def _epoch(epoch: int, row: tuple) -> dict:
    """What a re-ID trial reports at ``epoch``: its final numbers, lower before the last epoch."""
    _, val_map, se, rank1, test_map, test_rank1, decoy = row
    drop = 5.0 * (EPOCHS - epoch)
    return {"epoch": epoch, "val_map": val_map - drop, "val_map_se": se, "val_rank1": rank1 - drop,
            "val_rank5": rank1, "test_map": test_map - drop, "test_rank1": test_rank1 - drop,
            "test_map_se": se, "best_val_map": val_map - drop, "val_acc": decoy, "train_loss": 1.0,
            "trial_id": "x", "config": {}}


def make_reid_run(storage: Path, trials: dict[int, tuple] = TRIALS) -> Path:
    """A finished re-ID sweep's run dir, as search.tune leaves it."""
    spec = reid_spec(storage)
    run_dir = spec.run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    (base,) = plan(spec)
    study = optuna.create_study(study_name=KEY, storage=f"sqlite:///{run_dir / 'optuna.db'}",
                                direction="maximize")
    lr = optuna.distributions.FloatDistribution(0.01, 0.1, log=True)
    for number, row in trials.items():
        ray_id = f"r{number:04d}"
        history = [_epoch(e, row) for e in range(1, EPOCHS + 1)]
        study.add_trial(optuna.trial.create_trial(
            params={"lr": row[0]}, distributions={"lr": lr}, value=row[1],
            intermediate_values={h["epoch"]: h["val_map"] for h in history},
            user_attrs={"ray_trial_id": ray_id, "paper_default": number == 0}))
        folder = run_dir / f"{KEY}_{number:03d}_{ray_id}"
        folder.mkdir()
        experiment = base.base.replace(lr=row[0]).to_dict()
        (folder / "params.json").write_text(json.dumps(
            {"study": KEY, "trial_number": number, "params": {"lr": row[0]},
             "experiment": experiment}))
        (folder / "result.json").write_text("".join(json.dumps(h) + "\n" for h in history))
        (folder / "events.out.tfevents.0.host").write_bytes(b"")
    return run_dir


@pytest.fixture
def reid_run(tmp_path) -> Path:
    return make_reid_run(tmp_path / "runs")


def _row(run_dir: Path) -> dict:
    from analysis.best import best_trials
    (best,) = best_trials(run_dir)
    return best.to_dict()


# ---- mgkd.catalog.objectives -------------------------------------------------------------------
def test_the_registry_knows_each_tasks_objectives_and_default():
    assert default_objective("classification").name == "val_acc"
    assert default_objective("reid").name == "val_map"
    assert objectives_for("reid") == ("val_map", "val_rank1")
    assert get_objective("val_map").test_metric == "test_map"
    assert get_objective("val_map").se_metric == "val_map_se" and not OBJECTIVES["val_map"].binomial
    assert OBJECTIVES["val_rank1"].binomial and OBJECTIVES["val_acc"].binomial
    with pytest.raises(ConfigError, match="allowed: val_acc, val_rank1, val_map"):
        get_objective("val_top5")
    with pytest.raises(ConfigError, match="allowed for it: val_acc"):
        check_objective("val_map", "cifar100")


def test_a_config_objective_must_fit_its_data_sets_task():
    assert ExperimentConfig.from_dict({"dataset": "market1501", "objective": "val_rank1"}).objective \
        == "val_rank1"
    with pytest.raises(ConfigError, match="objective: 'val_acc' .* allowed for it: val_map, "
                                          "val_rank1"):
        ExperimentConfig.from_dict({"dataset": "market1501", "objective": "val_acc"})


# ---- the sweep key -----------------------------------------------------------------------------
def test_the_sweep_objective_defaults_to_the_data_sets_and_reaches_every_study(tmp_path):
    classification = tiny_sweep(tmp_path, base=DIGITS)
    assert {s.base.objective for s in plan(classification)} == {"val_acc"}
    reid = reid_spec(tmp_path, objective=None, modes=["plain", "mas"])
    assert {s.base.objective for s in validate_sweep(reid, check_data=False)} == {"val_map"}
    rank1 = reid_spec(tmp_path, objective="val_rank1")
    assert {s.base.objective for s in plan(rank1)} == {"val_rank1"}
    assert SweepSpec.from_dict(rank1.to_dict()) == rank1


def test_sweep_objective_errors_name_the_key_and_the_allowed_values(tmp_path):
    wrong_task = tiny_sweep(tmp_path, objective="val_map", base=DIGITS)
    with pytest.raises(ConfigError) as err:
        validate_sweep(wrong_task, check_data=False)
    assert str(err.value).startswith("sweep objective: 'val_map' cannot select runs on data set "
                                     "digits") and "allowed for it: val_acc" in str(err.value)
    with pytest.raises(ConfigError, match="sweep objective: unknown objective 'val_top5'; "
                                          "allowed: val_acc, val_rank1, val_map"):
        tiny_sweep(tmp_path, objective="val_top5")
    with pytest.raises(ConfigError, match="sweep base.objective: .* top level"):
        tiny_sweep(tmp_path, base={"objective": "val_acc"})


# ---- analysis of a re-ID run dir ---------------------------------------------------------------
def test_ranking_selects_on_val_map_and_reports_the_re_id_test_metrics(reid_run):
    row = _row(reid_run)
    assert row["objective"] == "val_map" and row["test_metric"] == "test_map"
    assert row["trial_number"] == 1  # not trial 2, which leads on rank-1 and on val_acc
    assert (row["value"], row["test_value"]) == (70.0, 68.0)
    assert (row["val_map"], row["test_map"], row["val_rank1"], row["test_rank1"]) == \
        (70.0, 68.0, 82.0, 85.0)
    assert row["paper_default_val_map"] == row["paper_default_value"] == 60.0
    assert "val_acc" not in row and "test_acc" not in row


def test_the_verdict_uses_the_reported_val_map_standard_errors(reid_run, tmp_path):
    row = _row(reid_run)
    assert row["val_se"] == 1.5 and row["verdict_basis"] == "reported val_map_se"
    assert row["gain_se"] == pytest.approx(math.sqrt(1.5 ** 2 + 1.0 ** 2))
    assert row["verdict"] == "beats default"  # 10 > 2 · 1.80
    noisy = {n: (r[:2] + (6.0,) + r[3:]) for n, r in TRIALS.items()}  # se 6 each: 10 < 2 · 8.49
    assert _row(make_reid_run(tmp_path / "noisy", noisy))["verdict"] == "within noise"


def test_best_table_and_json_name_the_objective(reid_run, capsys):
    import argparse

    from analysis.cli import cmd_best
    cmd_best(argparse.Namespace(run_dir=str(reid_run), format="json"))
    document = json.loads(capsys.readouterr().out)
    (study,) = document["studies"]
    assert study["objective"] == "val_map" and study["value"] == 70.0
    cmd_best(argparse.Namespace(run_dir=str(reid_run), format="table"))
    table = capsys.readouterr().out
    head, line = table.splitlines()[:2]
    assert "val_map (selects)" in head and "test_map (reported)" in head and "paper val_map" in head
    assert "val_acc" not in head and " 70.00 " in line and " 68.00 " in line
    assert "test_map is reported beside the winner" in table and "val_map_se" in table


def test_export_carries_the_objective(reid_run, tmp_path):
    from analysis.export import export_configs
    (item,) = export_configs(reid_run, tmp_path / "best")
    text = item.path.read_text()
    assert yaml.safe_load(text)["objective"] == "val_map" and item.config.objective == "val_map"
    assert "val_map 70.00" in text and "test_map 68.00" in text and item.value == 70.0


def test_board_names_runs_by_the_objective(reid_run, tmp_path):
    from analysis.board import build_board
    from analysis.run import read_run
    board = build_board(read_run(reid_run), top=2, logdir=tmp_path / "board")
    assert [r.name for r in board.runs] == [
        "resnet32x4__ResNet50/rkd-mas/#1 val mAP 70.00 trial 1",
        "resnet32x4__ResNet50/rkd-mas/#2 val mAP 65.00 trial 2"]


def test_the_frame_has_the_re_id_columns(reid_run):
    from analysis.load import load_run
    frame = load_run(reid_run)
    assert {"val_map", "val_map_se", "val_rank1", "test_map", "test_rank1"} <= set(frame.columns)
    last = frame[(frame.trial_number == 1) & (frame.epoch == EPOCHS)].iloc[0]
    assert (last.val_map, last.objective) == (70.0, "val_map")


def test_the_report_has_the_market1501_table(reid_run, tmp_path):
    from analysis.report import write_report
    page = write_report(reid_run, tmp_path / "report").index.read_text()
    heading = "Market-1501 table of Shao &amp; Chen, 2021)</h2>"
    table = page.split(heading, 1)[1].split("</table>", 1)[0]
    assert ("<th>Setting</th><th>Data set</th><th>Method</th><th>Backbone</th><th>Rank1</th>"
            "<th>mAP</th>") in table
    assert f'<a href="#{KEY}">this sweep</a></td><td>market1501</td>' in table
    assert (f'<td data-study="{KEY}" data-field="test_rank1">85.00</td>'
            f'<td data-study="{KEY}" data-field="test_map">68.00</td>') in table
    assert "MAS_RKD (teacher resnet32x4)" in table
    assert "91.09" in table and "88.84" in table  # the paper's ResNet50 rows beside ours
    assert "<td>Shao &amp; Chen, 2021, setting 9</td>" in table
    assert "Market-1501 rows for the backbones shown (3 of its 10)" in page
    assert "94.50" not in table  # its OSNet rows are another backbone
    assert "validation mAP" in page and "val_map (selects)" not in page


def test_the_re_id_table_names_each_studys_data_set_and_shows_paper_rows_for_market_only():
    from types import SimpleNamespace

    from analysis.reid_table import reid_table

    def best(dataset: str) -> SimpleNamespace:
        study = SimpleNamespace(key=f"k_{dataset}", teacher="osnet_x1_0", student="osnet_x0_75",
                                method="rkd", mode="mas", base={"dataset": dataset})
        numbers = {"test_rank1": 80.0, "test_map": 60.0}
        return SimpleNamespace(study=study, objective=get_objective("val_map"),
                               to_dict=lambda: numbers)

    table = reid_table([best("dukemtmcreid"), best("market1501")])
    rows = table.split("<tr")[2:]
    assert "<td>dukemtmcreid</td>" in rows[0] and "k_dukemtmcreid" in rows[0]
    assert "<td>market1501</td>" in rows[1] and "k_market1501" in rows[1]
    papers = [row for row in rows if 'class="muted"' in row]
    assert papers and all("<td>market1501</td>" in row for row in papers)
    assert "94.50" in table  # the paper's OSNet x0.75 row, beside the Market-1501 study only
    assert "94.50" not in reid_table([best("dukemtmcreid")])
    assert "Muted rows" not in reid_table([best("dukemtmcreid")])  # no rows it does not show


def test_a_classification_report_has_no_re_id_table():
    from analysis.reid_table import arch_key, paper_rows, reid_table
    assert reid_table([]) == ""
    assert arch_key("osnet_x0_75") == arch_key("OSNetx0.75") == "osnetx075"
    assert [r.setting for r in paper_rows("osnet_x0_75")] == [7, 10]


# ---- search: the summary and the progress table ------------------------------------------------
def test_the_tune_summary_judges_val_map_by_its_reported_errors(reid_run):
    from analysis.best import best_trials
    from search.tune import SweepResult, format_summary
    (summary,) = best_trials(reid_run)  # what `mgkd tune` prints after a sweep
    assert (summary.value, summary.paper_value) == (70.0, 60.0)
    assert summary.verdict.verdict == "beats default" and summary.val_se == 1.5
    assert summary.verdict.gain_se == pytest.approx((1.5 ** 2 + 1.0 ** 2) ** 0.5)
    text = format_summary(SweepResult(reid_run, [summary]))
    assert "best val_map" in text and "points of validation mAP" in text


def test_progress_counts_the_objective():
    from types import SimpleNamespace

    from search.progress import count_trials, format_counts
    trials = [SimpleNamespace(config={"study": "a"}, status="TERMINATED", error_file=None,
                              trial_id=str(i), last_result={"epoch": 4, "val_map": m, "val_acc": 99})
              for i, m in enumerate((50.0, 61.0))]
    counts = count_trials(trials, {"a": 4}, metric="val_map")
    assert counts["a"].best_value == 61.0
    table = format_counts(counts, {"a": 2}, "val_map")
    assert "best val_map" in table and table.splitlines()[1].split()[-1] == "61.00"


def test_a_confirmation_ranks_by_the_objective_and_one_by_another_is_ignored(reid_run):
    from analysis.best import best_trials

    def confirm(objective: str) -> None:
        entries = [{"trial_number": 2, "params": {"lr": 0.08}, "val_accs": [65.0, 75.0, 73.0],
                    "test_accs": [66.0, 70.0, 71.0], "mean_val_acc": 71.0, "std_val_acc": 4.3}]
        (reid_run / "confirm").mkdir(exist_ok=True)
        (reid_run / "confirm" / f"{KEY}.json").write_text(json.dumps(
            {"study": KEY, "objective": objective, "seeds": [0, 1, 2], "entries": entries}))

    confirm("val_map")
    row = _row(reid_run)
    assert (row["trial_number"], row["value"], row["test_value"]) == (2, 71.0, 69.0)
    assert row["val_map"] == 71.0 and row["test_rank1"] == 93.0  # rank-1 of the selected trial
    assert row["confirmation"]["objective"] == "val_map"
    confirm("val_rank1")
    (best,) = best_trials(reid_run)
    assert best.trial_number == 1 and any("ranks by val_rank1" in n for n in best.notes)
