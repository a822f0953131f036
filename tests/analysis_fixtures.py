"""A small real run dir for the analysis tests, made by a real sweep (Ray on 2 local CPUs, real
Optuna, real TensorBoard files), and copies of it damaged the ways real run dirs get damaged.

Analysis reads the run dir from files alone (``test_analysis_never_imports_ray`` proves it in a
process without Ray).
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Callable

import optuna
import yaml

from analysis.optuna_db import open_read_only

from sweep_helpers import TINY_SPACE, tiny_sweep

STUDIES = ("resnet8__resnet8__kd__mas", "resnet8__resnet8__kd__plain")
# ce_weight 1e7 makes a trial diverge (NaN) within an epoch: the sweep then holds errored trials.
SPACE = {**TINY_SPACE, "ce_weight": {"type": "categorical", "choices": [0.2, 1.0, 1.0e7]}}


def real_sweep(storage: Path):
    """The sweep: 2 studies (kd in mas and plain) x 6 trials, 4 epochs, ASHA from epoch 2; its
    ce_weight 1e7 makes some trials diverge. Ray's MLflow callback records it too (in the run
    dir's mlflow.db: tests/test_trackers.py reads it back)."""
    return tiny_sweep(storage, name="analysed", space=SPACE, num_samples=6,
                      scheduler={"grace_period": 2, "reduction_factor": 2},
                      searcher={"seed": 0, "multivariate": True}, callbacks=["mlflow"])



# ---- reading the ground truth ------------------------------------------------------------------
def optuna_trials(run_dir: Path, key: str) -> list[optuna.trial.FrozenTrial]:
    # Read-only: these run beside a sweep that may be creating the database.
    return optuna.load_study(study_name=key, storage=open_read_only(run_dir / "optuna.db")).trials


def trial_dir_of(run_dir: Path, key: str, number: int) -> Path:
    (found,) = run_dir.glob(f"{key}_{number:03d}_*")
    return found


def result_lines(trial_dir: Path) -> list[dict]:
    """result.json's epochs, the last report of each epoch kept."""
    by_epoch = {}
    path = trial_dir / "result.json"
    for line in (path.read_text() if path.is_file() else "").splitlines():
        if line.strip():
            record = json.loads(line)
            by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def best_complete(run_dir: Path, key: str) -> optuna.trial.FrozenTrial | None:
    """The expected winner: highest value among COMPLETE trials, ties to the lower number."""
    done = [t for t in optuna_trials(run_dir, key) if t.state == optuna.trial.TrialState.COMPLETE]
    return min(done, key=lambda t: (-t.value, t.number)) if done else None


# ---- damage ------------------------------------------------------------------------------------
def copy_run(real: Path, target: Path) -> Path:
    """A copy of the run dir under ``target`` (same name), without the board of earlier tests."""
    dest = target / real.name
    shutil.copytree(real, dest, symlinks=True, ignore=shutil.ignore_patterns("board"))
    return dest


def truncate_last_line(trial_dir: Path) -> None:
    """As if the trial were killed while Ray appended its last result line."""
    path = trial_dir / "result.json"
    text = path.read_text().rstrip("\n")
    path.write_text(text[: len(text) - 40])


def set_running(run_dir: Path, key: str, numbers: list[int], keep_epochs: int) -> None:
    """Make trials RUNNING in optuna.db (no value, no completion) and cut their results to
    ``keep_epochs`` epochs: an interrupted or still-running sweep."""
    db = sqlite3.connect(run_dir / "optuna.db")
    with db:
        (study_id,) = db.execute("SELECT study_id FROM studies WHERE study_name = ?", (key,)).fetchone()
        for number in numbers:
            (trial_id,) = db.execute("SELECT trial_id FROM trials WHERE study_id = ? AND number = ?",
                                     (study_id, number)).fetchone()
            db.execute("UPDATE trials SET state = 'RUNNING', datetime_complete = NULL "
                       "WHERE trial_id = ?", (trial_id,))
            db.execute("DELETE FROM trial_values WHERE trial_id = ?", (trial_id,))
            db.execute("DELETE FROM trial_intermediate_values WHERE trial_id = ? AND step > ?",
                       (trial_id, keep_epochs))
            folder = next(run_dir.glob(f"{key}_{number:03d}_*"), None)
            if folder is None:  # an errored-before-start trial has no dir
                continue
            for name in ("error.txt", "error.pkl"):
                (folder / name).unlink(missing_ok=True)
            if (folder / "result.json").is_file():
                lines = (folder / "result.json").read_text().splitlines()
                kept = [l for l in lines if l.strip() and json.loads(l)["epoch"] <= keep_epochs]
                (folder / "result.json").write_text("".join(l + "\n" for l in kept))
    db.close()


def make_legacy(run_dir: Path) -> None:
    """An older sweep's format: params.json without the experiment config, and a sweep.yaml
    without the keys later versions added."""
    for params in run_dir.glob("*/params.json"):
        data = json.loads(params.read_text())
        data.pop("experiment")
        params.write_text(json.dumps(data))
    sweep = yaml.safe_load((run_dir / "sweep.yaml").read_text())
    for key in ("checkpoint_every", "searcher", "ray_address", "max_concurrent_trials"):
        sweep.pop(key, None)
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(sweep))


def damaged(real: Path, tmp_path: Path, *harm: Callable[[Path], None]) -> Path:
    """A copy of ``real`` with each ``harm`` applied to it, in order."""
    run_dir = copy_run(real, tmp_path)
    for step in harm:
        step(run_dir)
    return run_dir
