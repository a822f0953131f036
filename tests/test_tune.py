"""`mgkd tune` on real Ray (2 local CPUs), real Optuna and real TensorBoard files: one sweep of two
studies with diverging trials among them, a worker killed mid-trial, a driver killed and resumed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from ray import tune

from mgkd.errors import ConfigError
from search.multistudy import PAPER_DEFAULT_ATTR
from search.tune import load_run_spec, run_sweep

from sweep_helpers import epochs_reported, study_trials, tiny_sweep, trial_dirs

MGKD = Path(sys.executable).parent / "mgkd"


# The shared sweep (conftest's real_result, which the analysis tests read too): kd in mas and plain,
# 6 trials each, ASHA from epoch 2, and a ce_weight of 1e7 among the choices, which blows the
# weights up within an epoch: those trials diverge (NaN) while the others must still finish.
def errored(trial_dir) -> bool:
    return any(trial_dir.glob("error*.txt"))


def test_each_study_has_exactly_its_trials_paper_default_first(real_result):
    spec, result = real_result
    assert [s.study.key for s in result.studies] == ["resnet8__resnet8__kd__mas",
                                                     "resnet8__resnet8__kd__plain"]
    for summary in result.studies:
        trials = study_trials(result.run_dir, summary.study.key)
        assert len(trials) == spec.num_samples
        assert all(t.state.is_finished() for t in trials)
        assert trials[0].user_attrs[PAPER_DEFAULT_ATTR] is True
        assert summary.value == max(t.value for t in trials if t.value is not None)
        assert (result.run_dir / "optuna.db").is_file()


def test_stopped_trials_are_pruned_in_optuna_exactly_when_ray_stopped_them_early(real_result):
    spec, result = real_result
    by_ray_id = {}
    for summary in result.studies:
        for trial in study_trials(result.run_dir, summary.study.key):
            by_ray_id[trial.user_attrs["ray_trial_id"]] = trial
    assert len(trial_dirs(result.run_dir)) == 2 * spec.num_samples
    for trial_dir in trial_dirs(result.run_dir):
        optuna_trial = by_ray_id[trial_dir.name.rsplit("_", 1)[1]]
        if errored(trial_dir):
            assert optuna_trial.state == TrialState.FAIL
            continue
        epochs = epochs_reported(trial_dir)
        if epochs[-1] < spec.base["epochs"]:
            assert optuna_trial.state == TrialState.PRUNED
            assert sorted(optuna_trial.intermediate_values) == epochs  # its curve, for analysis
        else:
            assert optuna_trial.state == TrialState.COMPLETE


def test_a_diverging_trial_errors_and_the_sweep_goes_on(real_result):
    _, result = real_result
    states: dict[float, set] = {}
    for summary in result.studies:
        for t in study_trials(result.run_dir, summary.study.key):
            states.setdefault(t.params.get("ce_weight"), set()).add(t.state)
    assert states[1.0e7] == {TrialState.FAIL}
    assert all(TrialState.FAIL not in found for weight, found in states.items() if weight != 1.0e7)
    assert TrialState.COMPLETE in set().union(*states.values())
    errors = [p for d in trial_dirs(result.run_dir) for p in d.glob("error*.txt")]
    assert errors and all("NaN or infinite" in p.read_text() for p in errors)


def test_trials_write_the_same_tensorboard_tags(real_result):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, result = real_result
    tag_sets = []
    for trial_dir in trial_dirs(result.run_dir):
        if errored(trial_dir):
            continue
        events = EventAccumulator(str(trial_dir))
        events.Reload()
        tag_sets.append({t.rsplit("/", 1)[-1] for t in events.Tags()["scalars"]})
    assert tag_sets
    for name in ("val_acc", "test_acc", "train_loss", "loss_granularity", "lr", "best_val_acc"):
        assert all(name in tags for tags in tag_sets), name


def test_every_complete_trial_leaves_its_per_sample_outcomes_in_the_run_dir(real_result):
    from mgkd.training.outcomes import BEST, LAST, OUTCOMES_FILE, read_outcomes

    _, result = real_result
    checked = 0
    for key in (s.study.key for s in result.studies):
        for trial in study_trials(result.run_dir, key):
            if trial.state != TrialState.COMPLETE:
                continue
            (folder,) = result.run_dir.glob(f"{key}_{trial.number:03d}_*")
            records = read_outcomes(folder / OUTCOMES_FILE)
            # The last epoch's bits are the value the study holds: 4 epochs, 20 images.
            assert records[LAST].epoch == 4 and records[LAST].size == 20
            assert 100 * records[LAST].correct.mean() == pytest.approx(trial.value, rel=1e-9)
            assert 1 <= records[BEST].epoch <= 4
            checked += 1
    assert checked >= 2


def test_heads_were_banked_before_the_trials(real_result):
    _, result = real_result
    heads = list((result.run_dir / "cache" / "heads").glob("*.pt"))
    assert len(heads) == 3 * 2  # every width x temperature of the space, once, for the one teacher
    assert len(list((result.run_dir / "cache" / "teachers").glob("*.pt"))) == 1


def test_a_finished_sweep_is_not_overwritten(real_result):
    spec, _ = real_result
    with pytest.raises(ConfigError, match="already holds a sweep"):
        run_sweep(spec)


class KillWorkerOnce(tune.Callback):
    """SIGKILLs the trial's worker process after it reports ``epoch``."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        self.killed = False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not self.killed and result.get("epoch") == self.epoch:
            self.killed = True
            os.kill(result["pid"], signal.SIGKILL)


def test_a_killed_worker_resumes_from_its_last_checkpoint(tmp_path, local_ray):
    spec = tiny_sweep(tmp_path, name="killed", modes=["plain"], num_samples=1,
                      scheduler={"grace_period": 6, "reduction_factor": 2},
                      base={"epochs": 6})
    killer = KillWorkerOnce(epoch=3)
    result = run_sweep(spec, callbacks=[killer])
    assert killer.killed
    (trial_dir,) = trial_dirs(result.run_dir)
    # Every epoch's record exactly once: 1-2 from before the kill (not erased by the restore),
    # 3 as the restarted worker ran it from the epoch-2 checkpoint, then 4-6.
    assert epochs_reported(trial_dir) == [1, 2, 3, 4, 5, 6]
    rows = (trial_dir / "progress.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [1, 2, 3, 4, 5, 6]
    assert result.studies[0].counts["COMPLETE"] == 1


def test_a_killed_driver_resumes_without_rerunning_finished_trials(tmp_path, local_ray):
    spec = tiny_sweep(tmp_path, name="resume", modes=["plain"], num_samples=4,
                      max_concurrent_trials=1, scheduler={"grace_period": 4, "reduction_factor": 2})
    sweep_file = tmp_path / "resume.yaml"
    sweep_file.write_text(yaml.safe_dump(spec.to_dict()))
    driver_log = tmp_path / "driver.log"
    with driver_log.open("wb") as log_file:
        driver = subprocess.Popen([str(MGKD), "tune", str(sweep_file)], stdout=log_file,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    run_dir = spec.run_dir
    deadline = time.monotonic() + 240
    finished = []
    while time.monotonic() < deadline and len(finished) < 2:
        time.sleep(1)
        if (run_dir / "optuna.db").exists():
            try:
                finished = [t for t in study_trials(run_dir, "resnet8__resnet8__kd__plain")
                            if t.state.is_finished()]
            except Exception:  # the study is being created
                finished = []
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, mid-sweep
    driver.wait()
    assert len(finished) >= 2, ("the sweep did not get going; driver output:\n"
                                + driver_log.read_text(errors="replace")[-3000:])
    time.sleep(2)  # let the experiment state written before the kill settle
    before = {d.name: epochs_reported(d) for d in trial_dirs(run_dir) if (d / "result.json").exists()}
    done_before = {t.user_attrs["ray_trial_id"] for t in finished}

    result = run_sweep(load_run_spec(run_dir, "--resume"), resume=True)
    trials = study_trials(run_dir, result.studies[0].study.key)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    for name, epochs in before.items():
        if name.rsplit("_", 1)[1] in done_before:
            assert epochs_reported(run_dir / name) == epochs  # not re-run


def test_teacher_and_head_preparation_report_each_epoch_to_the_driver(tmp_path, local_ray, caplog):
    """The sweep's Ray does not forward worker output: the preparation tasks' per-epoch lines
    (elapsed, ETA) reach the driver's log through a queue."""
    import logging

    from mgkd.data import load_config_splits
    from search.sweep import validate_sweep
    from search.tune import study_entries, teacher_jobs
    from trainables.prepare import prepare_teachers

    spec = tiny_sweep(tmp_path, modes=["mas"], base={"teacher_epochs": 2, "cache_dir": str(tmp_path)})
    studies = validate_sweep(spec)
    data = load_config_splits(studies[0].base)
    with caplog.at_level(logging.INFO, logger="trainables.prepare"):
        knowledge = prepare_teachers(teacher_jobs(studies, study_entries(spec, studies)), data)
    lines = [r.getMessage() for r in caplog.records if r.name == "trainables.prepare"]
    teacher = [l for l in lines if l.startswith("teacher resnet8 epoch ")]
    assert [l.split()[3] for l in teacher] == ["1/2", "2/2"]
    assert "elapsed" in teacher[0] and "ETA" in teacher[0] and teacher[-1].endswith("ETA 0s")
    heads = [l for l in lines if l.startswith("resnet8 heads (6) epoch 1/1")]
    assert len(heads) == 1 and len(next(iter(knowledge.values())).heads) == 6
