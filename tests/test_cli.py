"""The `mgkd` command: complete default configs, teacher → heads → train, and bad input that
exits non-zero with one paragraph and no traceback."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mgkd.config import ExperimentConfig

from conftest import TINY_DATA, assert_clean_error, mgkd, tiny_config_dict



def test_config_prints_a_complete_loadable_default():
    result = mgkd("config", "--teacher", "resnet32x4", "--student", "resnet8x4", "--dataset",
                  "cifar100", "--method", "crd", "--mode", "mas")
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    config = ExperimentConfig.from_dict(data)
    assert config.method == "crd" and config.feature_weight == 0.8
    assert config.method_options["nce_k"] == 16384
    assert config.granularities[0].dim == 64 and config.lr == 0.05
    assert all(value is not None for key, value in data.items()
               if key not in ("teacher_checkpoint", "train_subset", "student_init", "teacher_init"))


def test_config_loads_no_torch():
    # `mgkd config` answers fast: the config schema, method defaults and names load without torch.
    code = ("import sys, io, contextlib; from search.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['config', '--teacher', 'resnet32x4', '--student', 'resnet8x4',"
            " '--dataset', 'cifar100', '--method', 'dkd', '--set', 'epochs=3']) == 0\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'numpy', 'ray', 'optuna', 'pandas')"
            " if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("change, words", [
    (("num_samples:", "num_sample:"), ["unknown key(s) ['num_sample']"]),
    (("methods: [kd]", "methods: [kdd]"), ["unknown method 'kdd'"]),
    (("preset: full", "preset: fulll"), ["fulll"]),
])
def test_a_mistake_in_a_sweep_file_is_reported_before_torch_and_ray_load(tmp_path, change, words):
    # `mgkd tune` checks the file itself first: its errors come in well under a second.
    demo = Path(__file__).resolve().parents[1] / "sweeps" / "demo.yaml"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(demo.read_text().replace(*change))
    code = ("import sys; from search.cli import main\n"
            f"status = main(['tune', {str(sweep)!r}])\n"
            "print(status, sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.stdout.strip() == "2 []", result.stderr
    assert all(word in result.stderr for word in words), result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, words", [
    (["config", "--teacher", "resnet9", "--student", "resnet8", "--dataset", "cifar100"],
     ["teacher", "resnet9", "allowed"]),
    (["train", "--config", "missing.yaml", "--out", "x"], ["missing.yaml", "does not exist"]),
    (["config", "--teacher", "resnet20", "--student", "resnet8", "--dataset", "cifar100",
      "--set", "epochs"], ["key=value"]),
])
def test_bad_input_is_one_clear_paragraph(tmp_path, args, words):
    assert_clean_error(mgkd(*args, cwd=tmp_path), *words)


def test_missing_cifar_names_the_path_and_the_fix(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": "cifar100", "data_dir": str(tmp_path / "data")}))
    result = mgkd("train", "--config", config, "--out", tmp_path / "out")
    assert_clean_error(result, str(tmp_path / "data"), "mgkd download")
    assert not (tmp_path / "out").exists()  # nothing started


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_graphs_on_a_machine_without_gpu_is_refused_before_anything_starts(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "cache", device="auto",
                                                      cuda_graphs=True)))
    result = mgkd("train", "--config", config, "--out", tmp_path / "out")
    assert_clean_error(result, "cuda_graphs: true needs a CUDA GPU", "cuda_graphs: auto")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_teacher_then_heads_then_train(tmp_path):
    data_options = json.dumps(TINY_DATA)
    result = mgkd("teacher", "--arch", "resnet8", "--dataset", "synthetic", "--epochs", "1",
                  "--out", tmp_path / "teacher", "--device", "cpu",
                  "--set", f"data_options={data_options}", "val_fraction=0.25")
    assert result.returncode == 0, result.stderr
    teacher = tmp_path / "teacher" / "teacher.pt"
    assert teacher.is_file() and "epoch 1/1" in result.stderr

    cache = tmp_path / "cache"
    # no --dataset, no data_options: the teacher checkpoint says what it was trained on
    result = mgkd("heads", "--teacher", teacher, "--dims", "8", "16", "--temperatures", "2", "--epochs",
                  "1", "--cache-dir", cache, "--device", "cpu", "--set", "val_fraction=0.25")
    assert result.returncode == 0, result.stderr
    heads = sorted((cache / "heads").glob("*.pt"))
    assert len(heads) == 2 and sorted(map(Path, result.stdout.split())) == heads
    stamps = [h.stat().st_mtime_ns for h in heads]

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(
        cache, teacher="resnet8", teacher_checkpoint=str(teacher), method="kd", mode="mas",
        granularities=[{"dim": 8, "temperature": 2}, {"dim": 16, "temperature": 2}])))
    result = mgkd("train", "--config", config, "--out", tmp_path / "run", "--set", "epochs=1")
    assert result.returncode == 0, result.stderr
    assert "training" not in result.stderr.replace("resnet8->resnet8", "")  # heads came from the bank
    assert [h.stat().st_mtime_ns for h in heads] == stamps
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["final"]["epochs"] == 1 and "test_acc" in result.stdout
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["epochs"] == 1
