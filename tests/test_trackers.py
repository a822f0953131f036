"""What a sweep hands to the tools users already have: optuna-dashboard on the run dir's optuna.db
(read-only, over HTTP), the sweep file's ``callbacks`` (Ray Tune's MLflow / W&B / Aim logger
callbacks) and ``ray_dashboard``, and TensorBoard events that hold the trial's metrics only.

MLflow is read back from the shared sweep (conftest's ``real_result`` runs with
``callbacks: [mlflow]``); W&B, whose package is heavy, runs only where it is installed."""
from __future__ import annotations

import json
import math
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from mgkd.catalog.trackers import TRACKERS
from mgkd.errors import ConfigError
from search.sweep import validate_sweep
from search.trackers import BUILDERS, check_dashboard, check_trackers, mlflow_uri

from analysis_fixtures import STUDIES, result_lines
from sweep_helpers import tiny_sweep, trial_dirs

BIN = Path(sys.executable).parent


def _absent(module: str):
    return None


# ---- the sweep keys ----------------------------------------------------------------------------
def test_callbacks_and_ray_dashboard_are_checked_before_ray_starts(tmp_path):
    assert set(BUILDERS) == set(TRACKERS)  # one builder per tracker the sweep file may name
    spec = tiny_sweep(tmp_path, callbacks=["mlflow"])
    assert (spec.callbacks, spec.ray_dashboard) == (["mlflow"], False)  # the dashboard is opt-in
    assert yaml.safe_load(spec.to_yaml())["callbacks"] == ["mlflow"]
    with pytest.raises(ConfigError, match=r"sweep callbacks\[1\]: unknown value 'tensorboard'; "
                                          "allowed: mlflow, wandb, aim"):
        tiny_sweep(tmp_path, callbacks=["mlflow", "tensorboard"])
    with pytest.raises(ConfigError, match=r"callbacks\[1\]: 'mlflow' is listed twice"):
        tiny_sweep(tmp_path, callbacks=["mlflow", "mlflow"])
    # A tracker whose package is missing: refused with the pip command, before anything runs.
    with pytest.raises(ConfigError) as err:
        check_trackers(["mlflow", "wandb"], find=lambda m: None if m == "wandb" else object())
    assert str(err.value).startswith("sweep callbacks[1]: 'wandb' logs through Ray Tune's "
                                     "ray.air.integrations.wandb.WandbLoggerCallback")
    assert "`pip install wandb`" in str(err.value) and "remove 'wandb'" in str(err.value)
    with pytest.raises(ConfigError, match="mlflow-skinny"):
        check_trackers(["mlflow"], find=_absent)
    # The dashboard: only for a local Ray, and only with ray[default]'s packages.
    with pytest.raises(ConfigError, match="sweep ray_dashboard: applies to a local Ray only"):
        check_dashboard(tiny_sweep(tmp_path, ray_dashboard=True, ray_address="auto"))
    with pytest.raises(ConfigError, match=r"aiohttp.* missing here\); install them with "
                                          r"`.venv/bin/pip install 'ray\[default\]==2.60.0'`"):
        check_dashboard(tiny_sweep(tmp_path, ray_dashboard=True), find=_absent)
    check_dashboard(tiny_sweep(tmp_path, ray_dashboard=True), find=lambda m: object())


def test_each_trackers_ray_callback_exists_in_the_pinned_ray():
    import importlib
    for tracker in TRACKERS.values():
        module, name = tracker.callback.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), name), tracker.callback


def test_the_real_check_finds_an_installed_tracker_and_refuses_a_missing_one(tmp_path):
    validate_sweep(tiny_sweep(tmp_path, callbacks=["mlflow"]), check_data=False)  # installed for CI
    missing = [name for name, t in TRACKERS.items()
               if __import__("importlib").util.find_spec(t.module) is None]
    for name in missing:  # aim here, for one: its package is not installed
        with pytest.raises(ConfigError, match=f"pip install {TRACKERS[name].pip}"):
            validate_sweep(tiny_sweep(tmp_path, callbacks=[name]), check_data=False)


# ---- optuna-dashboard --------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, deadline: float) -> dict:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _serve(command: str, port: int) -> subprocess.Popen:
    args = shlex.split(command)
    args[0] = str(BIN / args[0])  # the console script installed with the project
    return subprocess.Popen([*args, "--port", str(port), "--host", "127.0.0.1", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_optuna_dashboard_serves_the_run_dirs_studies_without_writing(real_run, tmp_path):
    from analysis.optuna_db import dashboard_command
    from search.tune import SweepResult, format_summary

    db = real_run / "optuna.db"
    command = dashboard_command(db)
    assert f"optuna study: {command}" in format_summary(SweepResult(real_run, []))
    before = (db.read_bytes(), sorted(p.name for p in real_run.iterdir()))
    port = _free_port()
    server = _serve(command, port)
    try:
        deadline = time.monotonic() + 60
        listed = _get(f"http://127.0.0.1:{port}/api/studies", deadline)["study_summaries"]
        assert sorted(s["study_name"] for s in listed) == sorted(STUDIES)
        study = _get(f"http://127.0.0.1:{port}/api/studies/{listed[0]['study_id']}", deadline)
        assert len(study["trials"]) == 6
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (db.read_bytes(), sorted(p.name for p in real_run.iterdir())) == before

    # Pointed at a run dir whose optuna.db does not exist yet, it creates nothing.
    missing = tmp_path / "early" / "optuna.db"
    missing.parent.mkdir()
    server = _serve(dashboard_command(missing), _free_port())
    try:
        time.sleep(3)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert list(missing.parent.iterdir()) == []


# ---- MLflow: the shared sweep ran with callbacks: [mlflow] -------------------------------------
def test_mlflow_holds_every_trial_with_its_metrics_per_epoch(real_result):
    from mlflow.tracking import MlflowClient

    spec, result = real_result
    client = MlflowClient(tracking_uri=mlflow_uri(result.run_dir))
    experiment = client.get_experiment_by_name(spec.name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    folders = trial_dirs(result.run_dir)
    assert len(runs) == len(folders) == 2 * spec.num_samples
    by_trial = {(r.data.params["study"], int(r.data.params["trial_number"])): r for r in runs}
    checked = 0
    for folder in folders:
        params = json.loads((folder / "params.json").read_text())
        run = by_trial[(params["study"], params["trial_number"])]
        epochs = result_lines(folder)
        errored = any(folder.glob("error*.txt"))
        assert run.info.status == ("FAILED" if errored else "FINISHED")
        history = client.get_metric_history(run.info.run_id, "val_acc")
        logged = {m.step: m.value for m in history}
        expected = {e["training_iteration"]: e["val_acc"] for e in epochs}
        assert logged == pytest.approx(expected, rel=1e-9)
        checked += bool(epochs)
    assert checked >= 6


# ---- TensorBoard: the trial's metrics, nothing of Ray's bookkeeping ----------------------------
def test_tensorboard_holds_the_trials_metrics_only_at_epoch_steps(real_result):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mgkd.distill.learner import reported_metrics
    _, result = real_result
    reported = reported_metrics("classification", "val_acc")
    checked = 0
    for folder in trial_dirs(result.run_dir):
        epochs = result_lines(folder)
        if not epochs:
            continue
        events = EventAccumulator(str(folder))
        events.Reload()
        tags = set(events.Tags()["scalars"])
        # Every reported metric that was a number in some epoch (a diverging trial's losses are
        # NaN), and nothing else: no done, should_checkpoint, time_*, iterations_since_restore.
        expected = {f"ray/tune/{name}" for name in reported
                    if any(math.isfinite(e.get(name, math.nan)) for e in epochs)}
        assert tags == expected, tags ^ expected
        assert {"ray/tune/val_acc", "ray/tune/train_loss", "ray/tune/lr"} <= tags
        # step = epoch (a trial that errored and was retried writes its epochs again)
        steps = sorted({e.step for e in events.Scalars("ray/tune/val_acc")})
        assert steps == [e["epoch"] for e in epochs]
        checked += 1
    assert checked >= 6


# ---- W&B offline, where its package is installed -----------------------------------------------
def test_wandb_offline_records_each_trial(tmp_path, local_ray, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (optional; heavy): "
                                        "`.venv/bin/pip install wandb` to run this test")
    from search.tune import run_sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = tiny_sweep(tmp_path, name="wandb", modes=["plain"], num_samples=2, callbacks=["wandb"],
                      base={"epochs": 2})
    run_sweep(spec)
    offline = sorted((spec.run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2
    for folder in offline:
        assert list(folder.glob("run-*.wandb")), folder
