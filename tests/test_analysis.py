"""`analysis` on a real run dir (a real sweep made in this session, then Ray shut down): the
DataFrame, `mgkd best / export / board / report` against optuna.db and the trial files, an
exported config that reproduces its trial, and run dirs damaged the ways real ones get damaged."""
from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from analysis.best import best_trials
from analysis.board import build_board
from analysis.confirm import read_confirmations
from analysis.export import export_configs
from analysis.formats import FORMATS, best_document
from analysis.load import load_run
from analysis.report import write_report
from analysis.run import read_run
from mgkd.config import ExperimentConfig, load_config
from mgkd.distill.learner import reported_metrics
from mgkd.errors import MgkdError

from analysis_fixtures import (STUDIES, best_complete, damaged, make_legacy, optuna_trials,
                               result_lines, set_running, trial_dir_of, truncate_last_line)
from conftest import mgkd

SCALARS = ("train_loss", "loss_ce", "loss_logit", "loss_feature", "loss_granularity", "val_acc",
           "val_loss", "test_acc", "best_val_acc")
PLAIN_KEYS = [k for k in ExperimentConfig().to_dict()
              if k not in ("granularities", "method_options", "data_options", "lr_milestones")]


def same(a, b) -> bool:
    """Equal, with None / NaN / pandas NA all meaning 'no value'."""
    empty = lambda v: v is None or (isinstance(v, float) and math.isnan(v)) or str(v) == "<NA>"
    return (empty(a) and empty(b)) or a == b


def paths_of(experiment: dict) -> dict:
    """The machine-specific paths of a trial's config (an export replaces them)."""
    return {"cache_dir": experiment["cache_dir"], "data_dir": experiment["data_dir"]}


def expected_winners(run_dir: Path) -> dict:
    return {key: best_complete(run_dir, key) for key in STUDIES}


# ---- the DataFrame -----------------------------------------------------------------------------
def test_the_frame_holds_every_trial_epoch_as_optuna_and_the_trial_files_say(real_run):
    frame = load_run(real_run)
    assert frame.attrs["warnings"] == []
    states = set()
    for key in STUDIES:
        for trial in optuna_trials(real_run, key):
            rows = frame[(frame.study == key) & (frame.trial_number == trial.number)]
            states.add(trial.state)
            assert set(rows.state) == {trial.state.name}
            assert set(rows.ray_trial_id) == {trial.user_attrs["ray_trial_id"]}
            assert set(rows.paper_default) == {trial.number == 0}
            assert set(rows.teacher) == {"resnet8"} and set(rows["mode"]) == {key.rsplit("__")[-1]}
            folder = trial_dir_of(real_run, key, trial.number)
            expected = result_lines(folder)
            if expected:
                assert list(rows.epoch) == [r["epoch"] for r in expected]
            else:  # diverged in its first epoch: one row, no epoch
                assert len(rows) == 1 and rows.epoch.isna().all() and rows.val_acc.isna().all()
            for name in SCALARS:
                assert [same(a, r[name]) for a, r in zip(rows[name], expected)] == [True] * len(expected)
            assert list(rows.epoch_lr) == [r["lr"] for r in expected] or not expected
            if trial.state == TrialState.COMPLETE:
                assert rows.val_acc.iloc[-1] == trial.value
            experiment = json.loads((folder / "params.json").read_text())["experiment"]
            row = rows.iloc[0]
            for name in PLAIN_KEYS:
                assert same(row[name], experiment[name]), name
            assert row.num_granularities == len(experiment["granularities"])
            for k, level in enumerate(experiment["granularities"]):
                assert (row[f"g{k}_dim"], row[f"g{k}_temperature"], row[f"g{k}_weight"]) == \
                    (level["dim"], level["temperature"], level["weight"])
            for name, value in experiment["data_options"].items():
                assert row[f"data_options.{name}"] == value
    # the sweep holds every kind of outcome the analysis must tell apart
    assert {TrialState.COMPLETE, TrialState.FAIL} <= states
    assert {"g0_dim", "g0_temperature", "g0_weight", "epoch_lr"} <= set(frame.columns)


def test_analysis_never_imports_ray(real_run):
    code = ("import sys; from analysis.load import load_run; from analysis.best import best_trials;"
            "import analysis.cli, analysis.export, analysis.board, analysis.report;"
            "load_run(sys.argv[1]); best_trials(sys.argv[1]);"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('ray', 'trainables')]")
    result = subprocess.run([sys.executable, "-c", code, str(real_run)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_attribute_names_match_the_searcher():
    from analysis import optuna_db
    from search import multistudy
    assert optuna_db.PAPER_DEFAULT_ATTR == multistudy.PAPER_DEFAULT_ATTR
    assert optuna_db.RAY_TRIAL_ATTR == multistudy.RAY_TRIAL_ATTR


# ---- mgkd best ---------------------------------------------------------------------------------
def test_best_json_selects_by_validation_and_reports_test_beside_it(real_run):
    result = mgkd("best", real_run, "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [s["study"] for s in document["studies"]] == list(STUDIES)
    rows = {s["study"]: s for s in document["studies"]}
    for key, winner in expected_winners(real_run).items():
        trials, row = optuna_trials(real_run, key), rows[key]
        for field, state in (("complete", TrialState.COMPLETE), ("pruned", TrialState.PRUNED),
                             ("errored", TrialState.FAIL)):
            assert row[field] == sum(t.state == state for t in trials)
        last = result_lines(trial_dir_of(real_run, key, winner.number))[-1]
        assert (row["trial_number"], row["val_acc"], row["params"]) == \
            (winner.number, winner.value, winner.params)
        assert row["test_acc"] == last["test_acc"] and row["epochs"] == last["epoch"] == 4
        paper = trials[0]
        assert paper.user_attrs["paper_default"] is True
        # tiny_sweep: 80 synthetic training images, val_fraction 0.25 -> 20 validation images.
        p = winner.value / 100
        assert row["val_size"] == 20
        assert row["val_se"] == pytest.approx(100 * (p * (1 - p) / 20) ** 0.5)
        if paper.state == TrialState.COMPLETE:
            assert row["paper_default_val_acc"] == paper.value
            assert row["gain_over_paper_default"] == pytest.approx(winner.value - paper.value)
            assert row["notes"] == []
            if winner.number != paper.number:  # judged sample by sample (the trials' bitsets)
                b, c = discordant_by_hand(trial_dir_of(real_run, key, winner.number),
                                          trial_dir_of(real_run, key, paper.number))
                assert winner.value - paper.value == pytest.approx(100 * (b - c) / 20, abs=1e-9)
                assert (row["discordant_best"], row["discordant_paper"]) == (b, c)
                tail = sum(math.comb(b + c, i) for i in range(min(b, c) + 1))
                p_value = min(1.0, 2 * tail / 2 ** (b + c))
                assert row["p_value"] == pytest.approx(p_value, rel=1e-12)
                assert row["verdict_test"] == "exact McNemar"
                expected = ("default best" if b < c else
                            "beats default" if b > c and p_value < 0.05 else "within noise")
                assert row["verdict"] == expected
            else:
                assert row["verdict"] == "default best" and row["p_value"] is None
        else:  # ASHA stopped the paper default: no gain to give, and the row says why
            assert row["gain_over_paper_default"] is None and "paper-default" in row["notes"][0]
            assert row["verdict"] == "no comparison"
        assert row["selected_by"] == "single run"
    mas, plain = rows[STUDIES[0]], rows[STUDIES[1]]
    assert mas["gain_over_plain_kd"] == pytest.approx(mas["val_acc"] - plain["val_acc"])
    assert plain["gain_over_plain_kd"] is None


def discordant_by_hand(best_dir, paper_dir):
    """(right only with the best, right only with the paper default) at the final epoch (4), read
    straight from the two trials' val_outcomes.json."""
    import base64

    def bits(folder):
        data = json.loads((folder / "val_outcomes.json").read_text())
        (record,) = [r for r in data["records"].values() if r["epoch"] == 4][:1]
        raw = base64.b64decode(record["correct"])
        return [(raw[i // 8] >> (7 - i % 8)) & 1 for i in range(record["n"])]

    best, paper = bits(best_dir), bits(paper_dir)
    return (sum(x and not y for x, y in zip(best, paper)),
            sum(y and not x for x, y in zip(best, paper)))


def test_an_older_run_dir_without_outcomes_falls_back_to_the_unpaired_rule(real_run, tmp_path):
    def drop_outcomes(run_dir):
        for path in run_dir.glob("*/val_outcomes.json"):
            path.unlink()

    run_dir = damaged(real_run, tmp_path, drop_outcomes)
    for best in best_trials(run_dir):
        row = best.to_dict()
        assert row["verdict_test"] == "unpaired standard errors" and row["p_value"] is None
        if best.winner and best.paper and best.paper.state == "COMPLETE" \
                and not best.default_selected:
            assert any("no paired verdict" in note and "val_outcomes.json" in note
                       for note in row["notes"])
            assert row["verdict_basis"] == "validation set (20 images)"


def test_the_other_formats_show_the_same_winners(real_run):
    run = read_run(real_run)
    bests = best_trials(run)
    document = best_document(run, bests)
    table, markdown, text = (FORMATS[f](run, bests) for f in ("table", "markdown", "csv"))
    import csv
    import io
    rows = list(csv.DictReader(io.StringIO(text)))
    for row, study in zip(rows, document["studies"]):
        assert row["study"] == study["study"] and float(row["val_acc"]) == study["val_acc"]
        assert float(row["test_acc"]) == study["test_acc"]
        for name, value in study["params"].items():
            assert float(row[f"param.{name}"]) == value
        line = next(l for l in table.splitlines() if l.startswith(study["study"]))
        assert f"{study['val_acc']:.2f}" in line and f"{study['test_acc']:.2f}" in line
        assert f"#{study['trial_number']}" in line
        assert study["verdict"] in line and row["verdict"] == study["verdict"]
        assert row["val_se"] == ("" if study["val_se"] is None else str(study["val_se"]))
        assert f"| {study['study']} |" in markdown
    assert "never used to select" in table


def test_ties_go_to_the_earlier_trial(real_run, tmp_path):
    run = read_run(real_run)
    key = STUDIES[0]
    complete = [t for t in run.trials_of(key) if t.state == "COMPLETE"]
    for trial in complete:
        trial.value = 50.0
    (best,) = [b for b in best_trials(run) if b.study.key == key]
    assert best.trial_number == min(t.trial_number for t in complete)


# ---- confirmation results ----------------------------------------------------------------------
def test_a_confirmed_winner_replaces_the_single_run_winner(real_run, tmp_path):
    run_dir = damaged(real_run, tmp_path)
    done = {key: sorted((t for t in optuna_trials(run_dir, key) if t.state == TrialState.COMPLETE),
                        key=lambda t: (-t.value, t.number)) for key in STUDIES}
    key = next(k for k in STUDIES if len(done[k]) >= 2)
    top, runner_up = done[key][0], done[key][1]
    entries = [{"trial_number": runner_up.number, "params": runner_up.params,
                "val_accs": [60.0, 62.0, 64.0], "test_accs": [50.0, 52.0, 57.0],
                "mean_val_acc": 62.0, "std_val_acc": 1.63},
               {"trial_number": top.number, "params": top.params, "val_accs": [40.0, 45.0, 50.0],
                "test_accs": [40.0, 40.0, 40.0], "mean_val_acc": 45.0, "std_val_acc": 4.08}]
    (run_dir / "confirm").mkdir()
    (run_dir / "confirm" / f"{key}.json").write_text(json.dumps(
        {"study": key, "seeds": [1, 2, 3], "entries": entries}))
    (run_dir / "confirm" / "broken.json").write_text("{not json")
    assert set(read_confirmations(run_dir)) == {key}

    result = mgkd("best", run_dir, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "broken.json" in result.stderr
    row = next(s for s in json.loads(result.stdout)["studies"] if s["study"] == key)
    assert row["selected_by"] == "mean of 3 seeds"
    assert (row["trial_number"], row["val_acc"], row["val_acc_std"]) == (runner_up.number, 62.0, 1.63)
    assert row["test_acc"] == pytest.approx(53.0)
    assert row["single_run"]["trial_number"] == top.number
    assert row["verdict_basis"].startswith("spread over seeds (3 vs")
    table = mgkd("best", run_dir).stdout
    assert "62.00 ± 1.63" in table and "mean of 3 seeds" in table

    (exported,) = [e for e in export_configs(run_dir, tmp_path / "best") if e.study == key]
    params = json.loads((trial_dir_of(run_dir, key, runner_up.number) / "params.json").read_text())
    assert exported.config.replace(epochs=4, val_fraction=0.25, **paths_of(params["experiment"])
                                   ).to_dict() == params["experiment"]
    assert "mean of 3 seeds" in exported.path.read_text().splitlines()[1]


# ---- mgkd export -------------------------------------------------------------------------------
def test_export_writes_each_winner_for_the_full_budget_on_the_full_training_set(real_run, tmp_path):
    out = tmp_path / "best"
    result = mgkd("export", real_run, "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{key}.yaml" for key in STUDIES]
    sweep = yaml.safe_load((real_run / "sweep.yaml").read_text())
    for key, winner in expected_winners(real_run).items():
        path = out / f"{key}.yaml"
        config = load_config(path)
        trial = json.loads((trial_dir_of(real_run, key, winner.number) / "params.json").read_text())
        assert config.epochs == sweep["base"]["epochs"] and config.val_fraction == 0.0
        assert config.replace(val_fraction=sweep["base"]["val_fraction"],
                              **paths_of(trial["experiment"])).to_dict() == trial["experiment"]
        # portable: the user's default paths, none of the sweep machine's
        defaults = ExperimentConfig()
        assert (config.cache_dir, config.data_dir) == (defaults.cache_dir, defaults.data_dir)
        body = [line for line in path.read_text().splitlines() if not line.startswith("#")]
        assert not any(str(real_run) in line or str(real_run.parent) in line for line in body)
        header = path.read_text().splitlines()[:2]
        assert key in header[0] and f"trial {winner.number}" in header[1]
        assert f"val_acc {winner.value:.2f}" in header[1]
        assert "--set data_dir=PATH cache_dir=PATH" in path.read_text()


def test_an_exported_teacher_checkpoint_is_portable(real_run, tmp_path):
    key = STUDIES[0]
    winner = best_complete(real_run, key)

    def trial_teacher(path_of: Callable[[Path], str]) -> Callable[[Path], None]:
        def apply(run_dir: Path) -> None:
            params = trial_dir_of(run_dir, key, winner.number) / "params.json"
            data = json.loads(params.read_text())
            data["experiment"]["teacher_checkpoint"] = path_of(run_dir)
            params.write_text(json.dumps(data))
        return apply

    def sweep_file_teacher(run_dir: Path) -> None:
        sweep = yaml.safe_load((run_dir / "sweep.yaml").read_text())
        sweep["pairs"][0]["teacher_checkpoint"] = "teachers/r8.pt"
        (run_dir / "sweep.yaml").write_text(yaml.safe_dump(sweep))

    def export(run_dir: Path) -> tuple[ExperimentConfig, list[str], list[str]]:
        (exported,) = [e for e in export_configs(run_dir, run_dir.parent / "best") if e.study == key]
        lines = exported.path.read_text().splitlines()
        return (load_config(exported.path), [l for l in lines if l.startswith("#")],
                [l for l in lines if not l.startswith("#")])

    # A teacher the sweep trained and cached in its run dir: null, and no path under the run dir.
    run_dir = damaged(real_run, tmp_path / "cached",
                      trial_teacher(lambda d: str(d / "cache" / "teachers" / "resnet8.pt")))
    config, header, body = export(run_dir)
    assert config.teacher_checkpoint is None
    assert not any(str(run_dir) in line for line in body)
    assert any("teacher_checkpoint is null" in line for line in header)
    # A teacher the sweep file names: the path as written there, not the absolute one it became.
    run_dir = damaged(real_run, tmp_path / "given", sweep_file_teacher,
                      trial_teacher(lambda d: "/elsewhere/teachers/r8.pt"))
    config, header, _ = export(run_dir)
    assert config.teacher_checkpoint == "teachers/r8.pt"
    assert any("as the sweep file gave it" in line for line in header)
    # Not recorded in the sweep file: kept, and the header says so.
    run_dir = damaged(real_run, tmp_path / "unrecorded",
                      trial_teacher(lambda d: "/elsewhere/teachers/r8.pt"))
    config, header, _ = export(run_dir)
    assert config.teacher_checkpoint == "/elsewhere/teachers/r8.pt"
    assert any("is the sweep machine's path" in line for line in header)


def test_an_exported_config_reproduces_its_trial_exactly(real_run, tmp_path):
    key = STUDIES[1]  # plain: no heads, the quickest to re-run
    winner = best_complete(real_run, key)
    (exported,) = [e for e in export_configs(real_run, tmp_path / "best") if e.study == key]
    trial_last = result_lines(trial_dir_of(real_run, key, winner.number))[-1]
    cached = sorted(p.name for p in (real_run / "cache").rglob("*.pt"))
    command = exported.path.read_text().split("\n# Reproduce the trial", 1)[1].splitlines()[1]
    assert command == (f"#   mgkd train --config THIS_FILE --out DIR --threads 1 --set "
                       f"epochs={trial_last['epoch']} val_fraction=0.25")  # 1 CPU per trial
    cache = real_run / "cache"
    assert f"add cache_dir={cache} to load" in exported.path.read_text()
    before = tree_state(real_run)
    result = mgkd("train", "--config", exported.path, "--out", tmp_path / "final", "--threads", "1",
                  "--set", f"epochs={trial_last['epoch']}", "val_fraction=0.25",
                  "--set", f"cache_dir={cache}")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in cache.rglob("*.pt")) == cached  # loaded, not trained
    assert tree_state(real_run) == before  # nothing written into the sweep's run dir
    final = json.loads((tmp_path / "final" / "metrics.json").read_text())["history"][-1]
    assert final["val_acc"] == trial_last["val_acc"] == winner.value
    assert final["val_loss"] == trial_last["val_loss"]
    assert final["test_acc"] == trial_last["test_acc"]

    # In one TensorBoard the final run overlays its trial: the same tags, the same hparam names.
    trial_dir = trial_dir_of(real_run, key, winner.number)
    trial_tags, trial_hparams = board_contents(trial_dir)
    final_tags, final_hparams = board_contents(tmp_path / "final" / "tensorboard")
    reported = reported_metrics("classification", "val_acc")
    assert {f"ray/tune/{name}" for name in reported} <= trial_tags & final_tags
    assert {"study", "outcome", "experiment/lr", "experiment/temperature"} <= \
        set(trial_hparams) & set(final_hparams)
    assert final_hparams["study"] == trial_hparams["study"] == key
    assert final_hparams["experiment/lr"] == trial_hparams["experiment/lr"]
    assert (trial_hparams["outcome"], final_hparams["outcome"]) == ("complete", "mgkd train")

    # A final training may not write new teachers or heads into the sweep's run dir.
    refused = mgkd("train", "--config", exported.path, "--out", tmp_path / "final-full",
                   "--set", f"cache_dir={cache}")
    assert refused.returncode == 2 and "lies inside the sweep run dir" in refused.stderr
    assert tree_state(real_run) == before and not (tmp_path / "final-full" / "config.yaml").exists()


def board_contents(log_dir: Path) -> tuple[set[str], dict]:
    """(scalar tags, HPARAMS session values) of the event files in ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    events = EventAccumulator(str(log_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    hparams = {name: getattr(value, value.WhichOneof("kind"))
               for name, value in session.hparams.items()}
    return set(events.Tags()["scalars"]), hparams


def test_trials_stopped_by_asha_are_marked_in_the_hparams_view(real_run):
    outcomes = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned (ASHA)",
                TrialState.FAIL: "errored"}
    seen = set()
    for key in STUDIES:
        for trial in optuna_trials(real_run, key):
            if trial.state not in outcomes:
                continue
            trial_dir = trial_dir_of(real_run, key, trial.number)
            if trial.state == TrialState.FAIL and not result_lines(trial_dir):
                continue  # diverged before its first report: Ray writes no hparams then
            _, hparams = board_contents(trial_dir)
            assert hparams["outcome"] == outcomes[trial.state], (key, trial.number)
            seen.add(trial.state)
    assert seen == set(outcomes)


def tree_state(folder: Path) -> dict[str, tuple[int, str]]:
    """Every entry under ``folder``: its size and content hash (links: their target)."""
    import hashlib
    state = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            state[rel] = (0, str(path.readlink()))
        elif path.is_file():
            state[rel] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            state[rel] = (-1, "dir")
    return state


def test_analysis_commands_leave_the_run_dir_unchanged(real_run, tmp_path):
    run_dir = damaged(real_run, tmp_path)
    before = tree_state(run_dir)
    for args in (["best", run_dir], ["best", run_dir, "--format", "json"],
                 ["export", run_dir, "--out", tmp_path / "best"],
                 ["board", run_dir, "--print", "--logdir", tmp_path / "board"],
                 ["board", run_dir, "--print"],
                 ["report", run_dir, "--out", tmp_path / "report", "--top", "2"]):
        result = mgkd(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert tree_state(run_dir) == before, args
    inside = mgkd("report", run_dir, "--out", run_dir / "report")
    assert inside.returncode == 2 and "inside the run dir" in inside.stderr
    inside = mgkd("board", run_dir, "--print", "--logdir", run_dir / "board")
    assert inside.returncode == 2 and "inside the run dir" in inside.stderr
    assert tree_state(run_dir) == before


# ---- mgkd board --------------------------------------------------------------------------------
def test_board_links_the_top_trials_under_readable_names(real_run, tmp_path):
    run_dir = damaged(real_run, tmp_path)
    logdir = tmp_path / "links"
    logdir.mkdir()
    (logdir / "mine.txt").write_text("not the board's")
    refused = mgkd("board", run_dir, "--print", "--logdir", logdir)  # never deletes user files
    assert refused.returncode == 2 and "did not make" in refused.stderr
    (logdir / "mine.txt").unlink()
    for _ in range(2):  # the second call rebuilds the tree it made
        result = mgkd("board", run_dir, "--top", "2", "--port", "6123", "--print",
                      "--logdir", logdir)
        assert result.returncode == 0, result.stderr
    command = result.stdout.strip().splitlines()[-1]
    assert command.endswith(f"--logdir {logdir} --port 6123")
    assert "tensorboard" in command and not (run_dir / "board").exists()
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    board = EventMultiplexer().AddRunsFromDirectory(str(logdir))
    board.Reload()
    names = sorted(board.Runs())
    for key in STUDIES:
        pair, method, mode = "resnet8__resnet8", "kd", key.rsplit("__", 1)[1]
        ranked = sorted((t for t in optuna_trials(run_dir, key) if t.state == TrialState.COMPLETE),
                        key=lambda t: (-t.value, t.number))[:2]
        expected = [f"{pair}/{method}-{mode}/#{rank} val {t.value:.2f} trial {t.number}"
                    for rank, t in enumerate(ranked, 1)]
        shown = [n for n in names if n.startswith(f"{pair}/{method}-{mode}/")]
        assert len(shown) == 2 and shown[:len(expected)] == expected
        for name, trial in zip(expected, ranked):
            links = list((logdir / name).iterdir())
            assert links and all(l.is_symlink() and l.resolve().parent ==
                                 trial_dir_of(run_dir, key, trial.number) for l in links)
            curve = [e.value for e in board.Scalars(name, "ray/tune/val_acc")]
            lines = result_lines(trial_dir_of(run_dir, key, trial.number))
            assert curve[-1] == pytest.approx(lines[-1]["val_acc"])


# ---- mgkd report -------------------------------------------------------------------------------
class _Page(HTMLParser):
    """Collects <img src> and the text of elements with data-study / data-field."""

    def __init__(self):
        super().__init__()
        self.images, self.numbers, self._open = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if "data-field" in attrs:
            self._open.append([attrs["data-study"], attrs["data-field"], ""])

    def handle_data(self, data):
        if self._open:
            self._open[-1][2] += data

    def handle_endtag(self, tag):
        if tag in ("td", "span") and self._open:
            self.numbers.append(tuple(self._open.pop()))


def test_parallel_coordinates_use_log_axes_for_log_sampled_parameters(real_run):
    from analysis.optuna_db import log_sampled
    from analysis.plots import _axis
    logs = log_sampled(real_run / "optuna.db", STUDIES[0])
    assert {"lr", "weight_decay"} <= logs and "g0_dim" not in logs and "ce_weight" not in logs
    values = [0.01, 0.1, 10 ** -1.5]
    axis = _axis("lr", values, log=True)
    assert axis.log and axis.scaled == pytest.approx([0.0, 1.0, 0.5])
    assert [label for _, label in axis.ticks] == ["0.01", "0.0316", "0.1"]
    linear = _axis("lr", values, log=False)
    assert not linear.log and linear.scaled[2] == pytest.approx((10 ** -1.5 - 0.01) / 0.09)
    assert _axis("g3_dim", [None, None]) is None  # a level no shown trial has: no empty axis


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        image.verify()


def _shown(value) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, (int, str)) else f"{value:.2f}"


def test_report_adds_the_final_runs_it_is_given(real_run, tmp_path):
    from test_final_runs import _final_run

    final, _ = _final_run(tmp_path, same_weights=True)
    out = tmp_path / "report"
    result = mgkd("report", real_run, "--out", out, "--final", final, tmp_path / "missing",
                  "--device", "cpu")
    assert result.returncode == 0, result.stderr
    page = (out / "index.html").read_text()
    assert "<h2>Final runs</h2>" in page and "<td>41.50</td>" in page
    assert "<td>1.000</td>" in page  # the student is its teacher: embedding CKA 1
    assert "not an `mgkd train` out dir" in page
    assert_png(out / "final-1-cka.png")


def test_report_pictures_exist_and_its_numbers_are_those_of_best(real_run, tmp_path):
    out = tmp_path / "report"
    result = mgkd("report", real_run, "--out", out)
    assert result.returncode == 0, result.stderr
    page = _Page()
    page.feed((out / "index.html").read_text())
    assert len(page.images) >= 2 * len(STUDIES)  # curves + parallel coordinates at least
    for src in page.images:
        assert not src.startswith(("/", "http")) and (out / src).is_file()
        assert_png(out / src)
    best = json.loads(mgkd("best", real_run, "--format", "json").stdout)
    rows = {s["study"]: s for s in best["studies"]}
    assert page.numbers
    seen = set()
    for study, field, text in page.numbers:
        row = rows[study]
        if field.startswith("params."):
            value = row["params"][field.split(".", 1)[1]]
            assert text == (f"{value:.4g}" if isinstance(value, float) else str(value))
        elif field.startswith("gain"):
            assert text == ("-" if row[field] is None else f"{row[field]:+.2f}")
        elif field == "running":
            assert text == str(row["running"] + row["unknown"])
        else:
            assert text == _shown(row[field]), (study, field)
        seen.add((study, field))
    for key in STUDIES:
        assert {(key, "val_acc"), (key, "test_acc"), (key, "paper_default_val_acc"),
                (key, "val_se"), (key, "verdict")} <= seen
    html = (out / "index.html").read_text()
    assert "layout of the CIFAR-100 table of Shao &amp; Chen, 2021" in html and "kd + MAS" in html
    for key in STUDIES:  # 6 trials a study: too few complete ones for importances
        assert not (out / f"{key}-importance.png").exists()
        assert f"too few complete trials for importances: {rows[key]['complete']}" in html


# ---- damaged and partial run dirs --------------------------------------------------------------
def test_a_truncated_result_line_is_noted_and_the_rest_analysed(real_run, tmp_path):
    key = STUDIES[0]
    winner = best_complete(real_run, key)
    run_dir = damaged(real_run, tmp_path,
                      lambda d: truncate_last_line(trial_dir_of(d, key, winner.number)))
    frame = load_run(run_dir)
    assert any("truncated" in w and f"{key}_{winner.number:03d}" in w
               for w in frame.attrs["warnings"])
    rows = frame[(frame.study == key) & (frame.trial_number == winner.number)]
    assert list(rows.epoch) == [1, 2, 3]  # the complete lines
    (best,) = [b for b in best_trials(run_dir) if b.study.key == key]
    assert best.trial_number == winner.number and best.value == winner.value  # optuna.db's value
    assert best.test_value is None and any("final epoch" in n for n in best.notes)
    other = [b for b in best_trials(run_dir) if b.study.key != key][0]
    assert other.test_value is not None and not any("epoch" in n for n in other.notes)


def test_missing_files_and_unknown_entries_are_noted_and_the_rest_analysed(real_run, tmp_path):
    mas, plain = STUDIES
    mas_winner, plain_winner = best_complete(real_run, mas), best_complete(real_run, plain)
    victims = [t for t in optuna_trials(real_run, plain) if t.number not in (0, plain_winner.number)
               and t.state != TrialState.FAIL]

    def harm(run_dir: Path) -> None:
        (trial_dir_of(run_dir, mas, mas_winner.number) / "result.json").unlink()
        (trial_dir_of(run_dir, mas, mas_winner.number) / "progress.csv").unlink()
        (trial_dir_of(run_dir, plain, 0) / "params.json").unlink()
        shutil.rmtree(trial_dir_of(run_dir, plain, victims[0].number))
        (run_dir / "notes.txt").write_text("my notes")
        (run_dir / "stray").mkdir()

    run_dir = damaged(real_run, tmp_path, harm)
    result = mgkd("best", run_dir, "--format", "json")
    assert result.returncode == 0, result.stderr
    warnings = result.stderr
    assert "notes.txt" in warnings and "stray/" in warnings
    assert f"{mas}_{mas_winner.number:03d}" in warnings and "no reported epoch" in warnings
    assert "no params.json" in warnings and "is missing" in warnings
    rows = {s["study"]: s for s in json.loads(result.stdout)["studies"]}
    # optuna.db still knows the winner; its test accuracy is gone with its result file
    assert rows[mas]["trial_number"] == mas_winner.number and rows[mas]["test_acc"] is None
    assert rows[plain]["trial_number"] == plain_winner.number and rows[plain]["test_acc"] is not None
    assert rows[plain]["paper_default_val_acc"] == optuna_trials(run_dir, plain)[0].value

    frame = load_run(run_dir)
    gone = frame[(frame.study == plain) & (frame.trial_number == victims[0].number)]
    assert list(gone.val_acc) == [victims[0].intermediate_values[e]
                                  for e in sorted(victims[0].intermediate_values)]
    assert gone.test_acc.isna().all() and gone.trial_dir.isna().all()
    no_params = frame[(frame.study == plain) & (frame.trial_number == 0)]
    original = load_run(real_run)
    original = original[(original.study == plain) & (original.trial_number == 0)]
    assert list(no_params.val_acc) == list(original.val_acc)  # the curve is kept, and the config
    for name in ("lr", "ce_weight", "logit_weight", "temperature", "num_granularities"):  # rebuilt
        assert list(no_params[name]) == list(original[name])


def test_a_running_sweep_and_a_study_without_a_finished_trial(real_run, tmp_path):
    mas, plain = STUDIES
    mas_numbers = [t.number for t in optuna_trials(real_run, mas)]
    plain_winner = best_complete(real_run, plain)

    def harm(run_dir: Path) -> None:
        set_running(run_dir, mas, mas_numbers, keep_epochs=2)  # nothing of mas finished yet
        set_running(run_dir, plain, [plain_winner.number], keep_epochs=3)

    run_dir = damaged(real_run, tmp_path, harm)
    frame = load_run(run_dir)
    assert set(frame[frame.study == mas].state) == {"RUNNING"}
    assert frame[frame.study == mas].epoch.max() <= 2
    bests = {b.study.key: b for b in best_trials(run_dir)}
    assert bests[mas].selected is None and bests[mas].counts["RUNNING"] == len(mas_numbers)
    assert any("no trial finished" in n for n in bests[mas].notes)
    others = [t for t in optuna_trials(real_run, plain)
              if t.state == TrialState.COMPLETE and t.number != plain_winner.number]
    runner_up = min(others, key=lambda t: (-t.value, t.number)) if others else None
    assert bests[plain].trial_number == (runner_up.number if runner_up else None)
    table = mgkd("best", run_dir)
    assert table.returncode == 0 and "no trial finished" in table.stdout

    result = mgkd("export", run_dir, "--out", tmp_path / "best")
    assert f"not exported: study {mas} has no finished trial" in result.stderr
    if runner_up is not None:
        assert result.returncode == 0, result.stderr
        assert [p.name for p in (tmp_path / "best").iterdir()] == [f"{plain}.yaml"]
    report = write_report(run_dir, tmp_path / "report")
    assert "No trial finished yet" in report.index.read_text()
    board = build_board(read_run(run_dir), top=2, logdir=tmp_path / "board")
    assert any(r.study == mas and "running" in r.name for r in board.runs)


def test_an_older_sweep_format_is_rebuilt_from_sweep_yaml_and_params(real_run, tmp_path):
    run_dir = damaged(real_run, tmp_path, make_legacy)
    frame, original = load_run(run_dir), load_run(real_run)
    assert any("older sweep format" in w and "rebuilt" in w for w in frame.attrs["warnings"])
    config_columns = [c for c in original.columns if c != "cache_dir" and (
        c in PLAIN_KEYS or c.startswith("g") or c == "num_granularities")]
    assert list(frame.trial_number) == list(original.trial_number)
    for column in config_columns:
        assert [same(a, b) for a, b in zip(frame[column], original[column])] == \
            [True] * len(frame), column
    exported = export_configs(run_dir, tmp_path / "best")
    assert len(exported) == len(STUDIES)


def test_an_unparseable_sweep_file_and_a_missing_optuna_db(real_run, tmp_path):
    def harm(run_dir: Path) -> None:
        sweep = yaml.safe_load((run_dir / "sweep.yaml").read_text())
        (run_dir / "sweep.yaml").write_text(yaml.safe_dump({**sweep, "retired_key": 1}))
        (run_dir / "optuna.db").unlink()

    run_dir = damaged(real_run, tmp_path, harm)
    run = read_run(run_dir)
    assert any("does not parse" in n for n in run.notes)
    assert any("no optuna.db" in n for n in run.notes)
    assert list(run.studies) == list(STUDIES) and all(s.budget == 4 for s in run.studies.values())
    by_number = {(t.study, t.trial_number): t for t in run.trials}
    for key in STUDIES:
        for trial in optuna_trials(real_run, key):
            inferred = by_number[(key, trial.number)].state
            # from files alone: errored and complete are certain; pruned is not told apart
            expected = {"COMPLETE": "COMPLETE", "FAIL": "FAIL", "PRUNED": "UNKNOWN"}
            assert inferred == expected[trial.state.name]
    bests = {b.study.key: b for b in best_trials(run)}
    for key, winner in expected_winners(real_run).items():
        assert bests[key].trial_number == winner.number and bests[key].value == winner.value


# ---- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["best", "board", "export", "report"])
def test_a_missing_run_dir_is_one_clear_paragraph(tmp_path, command):
    extra = ["--out", str(tmp_path / "o")] if command in ("export", "report") else []
    result = mgkd(command, tmp_path / "nope", *extra)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.count("\n") == 0 and str(tmp_path / "nope") in message
    assert "mgkd tune" in message


def test_a_directory_that_is_no_run_dir_is_rejected(tmp_path):
    with pytest.raises(MgkdError, match="not a sweep run dir"):
        load_run(tmp_path)


def test_reading_a_database_still_being_created_writes_nothing(tmp_path):
    """A reader (mgkd status, the report) racing the sweep's creation of optuna.db must not write
    the schema version itself: the sweep's own write would then fail. It notes the database as
    unreadable for now and leaves the file as it found it."""
    import sqlalchemy
    from optuna.storages._rdb import models

    from analysis.optuna_db import read_studies
    db = tmp_path / "optuna.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    models.BaseModel.metadata.create_all(engine)  # tables made, version not yet written
    engine.dispose()
    before = db.read_bytes()
    notes: list[str] = []
    assert read_studies(db, notes) == {}
    assert "could not be opened" in notes[0]
    assert db.read_bytes() == before
    optuna.storages.RDBStorage(f"sqlite:///{db}").engine.dispose()  # the sweep completes it
    assert read_studies(db, []) == {}  # now readable: no studies yet
