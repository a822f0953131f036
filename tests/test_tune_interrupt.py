"""Ctrl-C on a real `mgkd tune`: the first stops cleanly (exit 130, running trials shown as
interrupted, the exact resume command), a second stops at once; optuna.db survives both."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from analysis.optuna_db import open_read_only

from conftest import mgkd
from sweep_helpers import tiny_sweep

MGKD = Path(sys.executable).parent / "mgkd"
STUDY = "resnet8__resnet8__kd__mas"


def write_sweep(tmp_path: Path, name: str) -> Path:
    # Long enough trials (and a late first ASHA rung) that trials are running when Ctrl-C comes.
    data = tiny_sweep(tmp_path, name=name, modes=["mas"], num_samples=2,
                      scheduler={"grace_period": 6, "reduction_factor": 2},
                      base={"epochs": 8}).to_dict()
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start(*args, cwd: Path) -> subprocess.Popen:
    # Its own process group, as a terminal's foreground job: Ctrl-C reaches the whole group.
    return subprocess.Popen([str(MGKD), *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_a_running_trial(run_dir: Path, proc: subprocess.Popen, limit: float = 400) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for result in run_dir.glob(f"{STUDY}_*/result.json"):
            lines = [json.loads(l) for l in result.read_text().splitlines() if l.strip()]
            if lines and lines[-1]["epoch"] < 8:
                return
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no trial started within {limit} s: {proc.communicate()}")


def study_trials(run_dir: Path) -> list:
    return optuna.load_study(study_name=STUDY,
                             storage=open_read_only(run_dir / "optuna.db")).get_trials()


def test_ctrl_c_stops_cleanly_and_names_the_resume_command(tmp_path, local_ray):
    run_dir = tmp_path / "stopped"
    proc = start("tune", write_sweep(tmp_path, "stopped"), cwd=tmp_path)
    wait_for_a_running_trial(run_dir, proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert f"mgkd tune --resume {run_dir}" in err
    assert "Tuner.restore" not in err + out and "sweep finished" not in err
    table = err.split("sweep interrupted", 1)[1].splitlines()
    header, row = table[1].split(), table[2].split()
    assert header[-1] == "interrupted" and row[0] == STUDY
    assert int(row[-1]) >= 1 and row[header.index("pruned")] == "0"
    trials = study_trials(run_dir)
    assert not any(t.state == TrialState.PRUNED for t in trials)  # interrupted is not pruned
    assert any(t.state == TrialState.RUNNING for t in trials)

    resumed = mgkd("tune", "--resume", run_dir, cwd=tmp_path)  # in this process, on the shared Ray
    assert resumed.returncode == 0, resumed.stderr
    trials = study_trials(run_dir)
    assert len(trials) == 2 and all(t.state.is_finished() for t in trials)


def test_a_second_ctrl_c_stops_at_once_and_leaves_optuna_db_whole(tmp_path):
    run_dir = tmp_path / "twice"
    proc = start("tune", write_sweep(tmp_path, "twice"), cwd=tmp_path)
    wait_for_a_running_trial(run_dir, proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert f"mgkd tune --resume {run_dir}" in err
    with sqlite3.connect(run_dir / "optuna.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    trials = study_trials(run_dir)
    assert trials and trials[0].user_attrs.get("paper_default")


TEACHER_EPOCHS = 150


def test_a_sweep_stopped_while_its_teacher_trains_resumes_inside_teacher_training(tmp_path,
                                                                                  local_ray):
    import torch

    from mgkd.config import ExperimentConfig
    from mgkd.data import load_config_splits
    from mgkd.knowledge.teacher import ensure_teacher, load_teacher

    path = write_sweep(tmp_path, "early")
    data = yaml.safe_load(path.read_text())
    # Long enough that the stop always lands inside teacher training: Ctrl-C reaches the
    # teacher's Ray task some 30 epochs after the first one on a 2-core machine.
    data["base"]["teacher_epochs"] = TEACHER_EPOCHS
    path.write_text(yaml.safe_dump(data))
    run_dir = tmp_path / "early"
    proc = start("tune", path, cwd=tmp_path)
    deadline = time.monotonic() + 400
    while not list(run_dir.glob("cache/teachers/.*.progress")):  # a teacher epoch is done
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert f"mgkd tune --resume {run_dir}" in err
    assert not list(run_dir.glob("cache/teachers/*.pt"))  # no half-trained teacher in the cache
    (progress,) = run_dir.glob("cache/teachers/.*.progress")
    stopped_at = torch.load(progress, weights_only=False)["run"]["epoch"]
    assert 1 <= stopped_at < TEACHER_EPOCHS

    resumed = mgkd("tune", "--resume", run_dir, cwd=tmp_path)  # in this process, on the shared Ray
    assert resumed.returncode == 0, resumed.stderr
    (teacher,) = run_dir.glob("cache/teachers/*.pt")
    assert not list(run_dir.glob("cache/teachers/.*.progress"))
    # the same weights as a teacher trained without interruption (one thread, as the Ray task)
    config = ExperimentConfig.from_dict({**data["base"], "teacher": "resnet8", "student": "resnet8",
                                         "cache_dir": str(tmp_path / "reference")})
    torch.set_num_threads(1)
    reference = ensure_teacher(config, load_config_splits(config))
    ours, theirs = (load_teacher(p, "resnet8", 4).state_dict() for p in (teacher, reference))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert len(study_trials(run_dir)) == 2
