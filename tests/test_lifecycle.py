"""A run's lifecycle: repeatable --set, teachers and heads that continue after an interruption,
bad output paths refused before any training, and a command line that explains itself."""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import mgkd.runner as runner_module
from mgkd.config import ExperimentConfig, parse_overrides
from mgkd.data import load_config_splits
from mgkd.errors import ConfigError
from mgkd.io import file_sha256
from mgkd.knowledge.prepare import head_bank, head_keys
from mgkd.knowledge.teacher import cached_teacher_path, ensure_teacher, load_teacher, progress_path
from mgkd.models import create_model
from mgkd.runner import run_training
from mgkd.training.callbacks import ProgressLog

from conftest import assert_clean_error, mgkd, mgkd_process, tiny_config_dict



class StopAfter:
    """An epoch callback that interrupts (as Ctrl-C does) once ``epochs`` epochs are done."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def __call__(self, report) -> None:
        if report.epoch >= self.epochs:
            raise KeyboardInterrupt


# ---- --set ------------------------------------------------------------------------------------
def test_set_is_repeatable_takes_several_pairs_and_refuses_a_key_twice(tmp_path):
    result = mgkd("config", "--teacher", "resnet20", "--student", "resnet8", "--dataset", "digits",
                  "--set", "epochs=3", "lr=0.1", "--set", "seed=4")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert (config["epochs"], config["lr"], config["seed"]) == (3, 0.1, 4)

    result = mgkd("config", "--teacher", "resnet20", "--student", "resnet8", "--dataset", "digits",
                  "--set", "epochs=3", "--set", "lr=0.1", "epochs=5")
    assert_clean_error(result, "epochs", "twice", "epochs=3", "epochs=5")
    assert parse_overrides(["a=1", "b=[1, 2]"]) == {"a": 1, "b": [1, 2]}
    with pytest.raises(ConfigError, match=r"--set lr: the key is given twice"):
        parse_overrides(["lr=0.1", " lr =0.2"])


# ---- teachers and heads continue after an interruption ------------------------------------------
def _weights(path: Path, arch: str) -> dict[str, torch.Tensor]:
    return load_teacher(path, arch, 4).state_dict()


def test_an_interrupted_teacher_continues_to_the_weights_of_an_uninterrupted_one(tmp_path):
    config = ExperimentConfig.from_dict(tiny_config_dict(tmp_path / "cache", teacher="resnet8",
                                                         teacher_epochs=3))
    splits = load_config_splits(config)
    whole = ensure_teacher(config.replace(cache_dir=str(tmp_path / "whole")), splits)

    with pytest.raises(KeyboardInterrupt):
        ensure_teacher(config, splits, callbacks=[StopAfter(2)])
    cached = cached_teacher_path(config)
    assert not cached.exists()  # the cache never holds a half-trained teacher
    assert not list((tmp_path / "cache").rglob("*.pt")) and progress_path(cached).is_file()

    epochs = []
    path = ensure_teacher(config, splits, callbacks=[lambda report: epochs.append(report.epoch)])
    assert epochs == [3]  # continued after epoch 2, not from epoch 1
    assert path == cached and not progress_path(cached).exists()
    resumed, reference = _weights(path, "resnet8"), _weights(whole, "resnet8")
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    history = lambda p: torch.load(p, weights_only=False)["metrics"]["history"]
    assert history(path) == history(whole)


def test_interrupted_head_training_continues_to_the_same_heads(tmp_path):
    config = ExperimentConfig.from_dict(tiny_config_dict(tmp_path / "cache", teacher="resnet8",
                                                         head_epochs=3))
    splits = load_config_splits(config)
    teacher_file = ensure_teacher(config, splits)
    teacher = load_teacher(teacher_file, "resnet8", 4)
    keys = head_keys(config, file_sha256(teacher_file))
    reference = head_bank(config.replace(cache_dir=str(tmp_path / "whole")))
    reference.ensure(teacher, keys, splits)

    bank = head_bank(config)
    with pytest.raises(KeyboardInterrupt):
        bank.ensure(teacher, keys, splits, callbacks_for=lambda todo: [StopAfter(1)])
    assert not any(bank.has(k) for k in keys) and bank.progress_path(keys).is_file()
    epochs = []
    bank.ensure(teacher, keys, splits,
                callbacks_for=lambda todo: [lambda report: epochs.append(report.epoch)])
    assert epochs == [2, 3] and not bank.progress_path(keys).exists()
    for key in keys:
        width = teacher.embedding_dim
        mine = bank.load(key, width, 4).state_dict()
        theirs = reference.load(key, width, 4).state_dict()
        assert all(torch.equal(mine[name], theirs[name]) for name in theirs)


def test_train_interrupted_in_teacher_training_resumes_to_the_uninterrupted_result(
        tmp_path, monkeypatch):
    config = ExperimentConfig.from_dict(tiny_config_dict(tmp_path / "cache", teacher="resnet8",
                                                         teacher_epochs=3))
    whole = run_training(config.replace(cache_dir=str(tmp_path / "whole-cache")),
                         tmp_path / "whole")

    def teacher_stops(label, total, task="classification"):  # Ctrl-C after the teacher's 2nd epoch
        return StopAfter(2) if label == "teacher" else ProgressLog(label, total)

    with monkeypatch.context() as patch:
        patch.setattr(runner_module, "ProgressLog", teacher_stops)
        with pytest.raises(KeyboardInterrupt):
            run_training(config, tmp_path / "run")
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    resumed = run_training(config, tmp_path / "run", resume=True)
    assert resumed.state.history == whole.state.history


def test_a_run_that_failed_before_its_first_epoch_is_retried_by_the_same_command(tmp_path,
                                                                                  caplog):
    """A damaged teacher file fails the run after its config.yaml is written; the user fixes the
    config and runs the same command again: it starts over (nothing of the run existed). A run
    that finished an epoch is still never overwritten."""
    damaged = tmp_path / "teacher.pt"
    damaged.write_bytes(b"not a checkpoint" * 64)
    config = ExperimentConfig.from_dict(tiny_config_dict(tmp_path / "cache", teacher="resnet8",
                                                         teacher_epochs=1))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="damaged or was not written by torch.save"):
        run_training(config.replace(teacher_checkpoint=str(damaged)), out)
    assert (out / "config.yaml").is_file() and not (out / "checkpoint.pt").exists()
    with caplog.at_level("WARNING", logger="mgkd.runner"):
        result = run_training(config, out)  # the same command, the config fixed: no --resume
    assert "this run first trains the teacher (1 epochs) and 2 granularity head(s) (1 epochs), " \
           "about " in caplog.text and "on this machine (measured from a few steps)" in caplog.text
    assert result.state.epoch == config.epochs
    assert yaml.safe_load((out / "config.yaml").read_text())["teacher_checkpoint"] is None
    with pytest.raises(ConfigError, match="already holds a run"):
        run_training(config, out)


def test_mgkd_teacher_resumes_after_its_last_epoch(tmp_path):
    data = json.dumps(tiny_config_dict(tmp_path)["data_options"])
    args = ["teacher", "--arch", "resnet8", "--dataset", "synthetic", "--epochs", "2", "--out",
            tmp_path / "t", "--device", "cpu", "--set", f"data_options={data}", "val_fraction=0.25"]
    assert mgkd(*args).returncode == 0
    assert (tmp_path / "t" / "checkpoint.pt").is_file()
    assert_clean_error(mgkd(*args), "--resume")  # an existing teacher run is not overwritten
    again = mgkd(*args, "--resume")
    assert again.returncode == 0, again.stderr
    assert "epoch 1/2" not in again.stderr and "epoch 2/2" not in again.stderr  # nothing left
    changed = mgkd(*[a if a != "2" else "3" for a in args], "--resume")
    assert_clean_error(changed, "other settings")


# ---- bad paths: one paragraph, exit 2, before any training --------------------------------------
@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "cache")))
    return path


def _no_training(result):
    assert "epoch 1/" not in result.stderr


def test_train_refuses_bad_output_and_cache_paths(tmp_path, config_file):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    result = mgkd("train", "--config", config_file, "--out", a_file)
    assert_clean_error(result, "--out", str(a_file), "existing file")
    _no_training(result)

    unwritable = Path("/proc/mgkd-cannot-exist/out")  # not creatable, even for root
    result = mgkd("train", "--config", config_file, "--out", unwritable)
    assert_clean_error(result, "--out", str(unwritable), "cannot be created or written")
    _no_training(result)

    for cache in (a_file / "cache", Path("/proc/mgkd-cannot-exist/cache")):
        result = mgkd("train", "--config", config_file, "--out", tmp_path / "o",
                      "--set", f"cache_dir={cache}")
        assert_clean_error(result, "cache_dir", str(cache), "--set cache_dir=")
        _no_training(result)

    sweep = tmp_path / "sweep-run"
    sweep.mkdir()
    (sweep / "sweep.yaml").write_text("name: x\n")
    (sweep / "optuna.db").write_text("")
    result = mgkd("train", "--config", config_file, "--out", sweep / "final")
    assert_clean_error(result, "inside the sweep run dir", str(sweep))
    assert not (sweep / "final").exists()
    result = mgkd("train", "--config", config_file, "--out", tmp_path / "nothing", "--resume")
    assert_clean_error(result, "--resume", "no checkpoint")


def test_teacher_heads_and_export_refuse_bad_paths(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    result = mgkd("teacher", "--arch", "resnet8", "--dataset", "digits", "--epochs", "1",
                  "--out", a_file)
    assert_clean_error(result, "--out", "existing file")
    _no_training(result)
    result = mgkd("heads", "--teacher", a_file, "--arch", "resnet8", "--dims", "8",
                  "--temperatures", "2", "--epochs", "1", "--dataset", "digits")
    assert_clean_error(result, "--teacher", "could not be read as a torch checkpoint")
    # A RepDistiller-style file: weights only, nothing about its data set.
    foreign = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": create_model("resnet8", 10).state_dict(), "epoch": 240}, foreign)
    result = mgkd("heads", "--teacher", foreign, "--arch", "resnet8", "--dims", "8",
                  "--temperatures", "2", "--epochs", "1", "--dataset", "digits",
                  "--cache-dir", "/proc/mgkd-cannot-exist")
    assert_clean_error(result, "--cache-dir", "cannot be created or written")
    result = mgkd("heads", "--teacher", foreign, "--arch", "resnet8", "--dims", "8",
                  "--temperatures", "2", "--epochs", "1")
    assert_clean_error(result, "--dataset")  # not our checkpoint: it cannot say its data set
    result = mgkd("export", tmp_path / "no-run", "--out", tmp_path / "o")
    assert_clean_error(result, str(tmp_path / "no-run"), "does not exist")


# ---- a command line that explains itself ----------------------------------------------------------
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_option_is_described_with_its_default_and_allowed_values():
    from search.cli import build_parser
    commands = _subparsers(build_parser())
    assert {"config", "download", "teacher", "heads", "train", "tune", "best", "export", "board",
            "report"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description, name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name} {action.option_strings or action.dest}"
            assert action.help, label
            if action.default not in (None, False, [], argparse.SUPPRESS) and \
                    not isinstance(action, argparse._StoreTrueAction):
                assert f"default {action.default}" in action.help, label
            for choice in action.choices or []:
                assert str(choice) in action.help, label


def test_version_and_a_light_start():
    result = mgkd_process("--version")  # the console script itself
    assert result.returncode == 0 and result.stdout.strip() == "mgkd 0.1.0"
    probe = ("import sys; from search.cli import build_parser; build_parser(); "
             "print(sorted(m for m in ('torch', 'ray', 'optuna', 'pandas', 'matplotlib') "
             "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stderr
    help_text = mgkd_process("train", "--help").stdout
    assert "--out DIR" in help_text and "sweep's run dir" in help_text


def test_the_preparation_estimate_adds_teacher_and_head_epochs():
    from mgkd.knowledge.estimate import StepTimes, preparation_seconds
    times = StepTimes(train=0.3, inference=0.064)  # 1 ms per image inferred, batches of 64
    # teacher: 2 epochs x (ceil(100/64) = 2 steps x 0.3 + 50 eval images x 1 ms) = 2 x 0.65
    teacher = preparation_seconds(times, batch_size=64, train_images=100, eval_images=50,
                                  teacher_epochs=2, head_epochs=0)
    assert teacher == pytest.approx(1.3)
    # heads: 3 epochs x ((128 trained + 50 evaluated) images x 1 ms) = 0.534
    both = preparation_seconds(times, batch_size=64, train_images=100, eval_images=50,
                               teacher_epochs=2, head_epochs=3)
    assert both == pytest.approx(1.3 + 0.534)


def test_timing_a_model_leaves_its_weights_as_they_were():
    from mgkd.knowledge.estimate import time_model_steps
    from mgkd.models import create_model
    model = create_model("resnet8", 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    times = time_model_steps(model, torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,)))
    assert times.train > 0 and times.inference > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
