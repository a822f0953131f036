"""`mgkd tune` front door: bad sweeps fail before Ray starts; the progress table counts right."""
from types import SimpleNamespace

import yaml

from search.progress import count_trials, format_counts

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


def trial(study, status, epoch=None, val_acc=None):
    last = {} if epoch is None else {"epoch": epoch, "val_acc": val_acc}
    return SimpleNamespace(config={"study": study}, status=status, last_result=last,
                           error_file="err.txt" if status == "ERROR" else None)


def test_progress_counts_per_study():
    trials = [trial("a", "TERMINATED", 4, 80.0), trial("a", "TERMINATED", 2, 90.0),
              trial("a", "RUNNING", 1, 10.0), trial("a", "ERROR"), trial("b", "PENDING"),
              trial("b", "TERMINATED", 4, 70.0)]
    counts = count_trials(trials, {"a": 4, "b": 4})
    a, b = counts["a"], counts["b"]
    assert (a.running, a.done, a.pruned, a.errored, a.best_value) == (1, 1, 1, 1, 90.0)
    assert (b.pending, b.done, b.best_value) == (1, 1, 70.0)
    table = format_counts(counts, {"a": 5, "b": 2})
    assert table.splitlines()[1].split() == ["a", "5", "1", "1", "1", "1", "90.00"]


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
