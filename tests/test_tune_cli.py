"""`mgkd tune` front door: bad sweeps fail before Ray starts; the progress table counts right."""
import logging
from types import SimpleNamespace

import yaml

from mgkd.timing import format_duration
from search.progress import ProgressTable, count_trials, format_counts, format_pace

from conftest import mgkd
from sweep_helpers import tiny_sweep


def write_sweep(tmp_path, **changes):
    data = tiny_sweep(tmp_path).to_dict()
    data.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_grace_period_beyond_epochs_fails_before_ray_starts(tmp_path):
    path = write_sweep(tmp_path, scheduler={"grace_period": 9, "reduction_factor": 2})
    result = mgkd("tune", path, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "grace_period" in result.stderr and "beyond" in result.stderr
    assert "Ray" not in result.stderr  # no Ray banner: Ray never started
    assert not (tmp_path / "tiny").exists()


def test_unknown_architecture_and_missing_data_are_reported(tmp_path):
    path = write_sweep(tmp_path, pairs=[{"teacher": "resnet9", "student": "resnet8"}])
    result = mgkd("tune", path, cwd=tmp_path)
    assert result.returncode == 2 and "resnet9" in result.stderr and "allowed" in result.stderr
    data = tiny_sweep(tmp_path).to_dict()
    data["base"] = {"dataset": "cifar100", "data_dir": str(tmp_path / "nodata"), "epochs": 4}
    path.write_text(yaml.safe_dump(data))
    result = mgkd("tune", path, cwd=tmp_path)
    assert result.returncode == 2 and "mgkd download cifar100" in result.stderr


def test_resume_needs_a_sweep_run_dir(tmp_path):
    result = mgkd("tune", "--resume", tmp_path, cwd=tmp_path)
    assert result.returncode == 2 and "not a sweep run dir" in result.stderr


def trial(study, status, epoch=None, val_acc=None, trial_id="t"):
    last = {} if epoch is None else {"epoch": epoch, "val_acc": val_acc}
    return SimpleNamespace(config={"study": study}, status=status, last_result=last,
                           trial_id=trial_id,
                           error_file="err.txt" if status == "ERROR" else None)


def test_progress_counts_per_study():
    trials = [trial("a", "TERMINATED", 4, 80.0), trial("a", "TERMINATED", 2, 90.0),
              trial("a", "RUNNING", 1, 10.0), trial("a", "ERROR"), trial("b", "PENDING"),
              trial("b", "TERMINATED", 4, 70.0)]
    counts = count_trials(trials, {"a": 4, "b": 4})
    a, b = counts["a"], counts["b"]
    # best over complete trials only: the pruned trial's 90.0 is not what Optuna ranks by
    assert (a.running, a.done, a.pruned, a.errored, a.best_value) == (1, 1, 1, 1, 80.0)
    assert (b.pending, b.done, b.best_value) == (1, 1, 70.0)
    table = format_counts(counts, {"a": 5, "b": 2})
    assert table.splitlines()[1].split() == ["a", "5", "1", "1", "1", "1", "80.00"]
    only_pruned = count_trials([trial("a", "TERMINATED", 2, 90.0)], {"a": 4})
    assert only_pruned["a"].best_value is None


def test_pace_line_elapsed_rate_and_eta():
    counts = count_trials([trial("a", "TERMINATED", 4, 80.0), trial("a", "TERMINATED", 2, 90.0),
                           trial("a", "RUNNING", 1, 10.0)], {"a": 4})
    # 2 of 6 ended in 4 minutes: 0.5 a minute, 4 left -> 8 minutes
    assert format_pace(counts, {"a": 6}, 240.0) == (
        "elapsed 4m00s, 2/6 trials ended, 0.50 trials/min, ETA 8m00s")
    assert format_pace(count_trials([], {"a": 4}), {"a": 6}, 3.0).endswith(
        "ETA after the first trial ends")
    assert (format_duration(42.4), format_duration(7385)) == ("42s", "2h03m")


def test_the_table_is_printed_when_it_changes_and_a_trial_stopped_by_ctrl_c_is_interrupted(caplog):
    import pickle
    table = ProgressTable({"a": 4}, {"a": 3}, interval=0.0, heartbeat=3600.0)
    running = [trial("a", "RUNNING", 1, 50.0, "t1")]
    with caplog.at_level(logging.INFO, logger="mgkd.sweep"):
        table.on_step_end(0, running)
        table.on_step_end(1, running)  # unchanged: not printed again
        assert len(caplog.records) == 1
        # Tune stopped the trial (Ctrl-C): TERMINATED at epoch 1 without an on_trial_complete
        stopped = [trial("a", "TERMINATED", 1, 50.0, "t1")]
        table.on_step_end(2, stopped)
        table.on_experiment_end(stopped)
    last = caplog.records[-1].getMessage()
    assert last.startswith("sweep interrupted (elapsed")
    header, row = last.splitlines()[1].split(), last.splitlines()[2].split()
    assert row[header.index("pruned")] == "0" and row[-1] == "1"
    assert "interrupted" in caplog.records[-2].getMessage().splitlines()[1]
    # ASHA's stop does end the trial: pruned
    table.on_trial_complete(3, stopped, stopped[0])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mgkd.sweep"):
        table.on_experiment_end(stopped)
    assert caplog.records[-1].getMessage().startswith("sweep finished")
    restored = pickle.loads(pickle.dumps(table))  # a resumed driver: its own clock
    assert restored._started is None and restored._last_table == ""


def test_a_gpu_request_without_gpus_fails_before_ray_starts(tmp_path):
    import pytest
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the request is valid here")
    path = write_sweep(tmp_path, resources_per_trial={"cpu": 1, "gpu": 0.5})
    result = mgkd("tune", path, cwd=tmp_path)
    assert result.returncode == 2 and "no GPU" in result.stderr and "gpu: 0" in result.stderr
    assert "Ray" not in result.stderr.replace("Ray cluster", "")  # no Ray banner or logs
    assert not (tmp_path / "tiny").exists()
