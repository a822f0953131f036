"""Execution settings: ``auto`` resolved per device (the CPU path stays as it was), the evaluation
batch size, and every way ``cuda_graphs: true`` cannot be honoured refused before any work."""
import logging

import pytest
import torch

from mgkd.config import ExperimentConfig
from mgkd.config.execution import (Execution, ExecutionSettings, auto_eval_batch_size,
                                   resolve_execution)
from mgkd.data import load_splits
from mgkd.distill.learner import make_trainer
from mgkd.errors import ConfigError
from mgkd.knowledge.prepare import Knowledge
from search.sweep import validate_sweep

from conftest import TINY_DATA
from sweep_helpers import tiny_sweep

CIFAR = (32, 32)


def resolved(device_type, **settings):
    return resolve_execution(device_type=device_type, batch_size=64, image_shape=CIFAR, **settings)


def test_auto_turns_everything_on_for_cuda_and_nothing_on_the_cpu():
    auto = dict(cuda_graphs="auto", amp="auto", channels_last="auto", eval_batch_size="auto",
                cudnn_benchmark="auto")
    assert resolved("cuda", **auto) == Execution(cuda_graphs=True, amp=True, channels_last=True,
                                                 eval_batch_size=1024, cudnn_benchmark=True)
    assert resolved("cpu", **auto) == Execution(eval_batch_size=64)
    assert not resolved("cpu", cudnn_benchmark=True).cudnn_benchmark  # cuDNN is CUDA's
    # Explicit values: amp is CUDA-only, channels_last true is honoured on the CPU too.
    assert resolved("cpu", amp=True, channels_last=True).channels_last
    assert not resolved("cpu", amp=True).amp
    assert resolved("cuda", amp=False, channels_last=False) == Execution(eval_batch_size=1024)
    assert resolved("cuda", eval_batch_size=200).eval_batch_size == 200


def test_the_configs_defaults_keep_graphs_off_until_measured():
    config = ExperimentConfig()
    settings = ExecutionSettings.of(config)
    assert settings == ExecutionSettings()
    assert (config.cuda_graphs, config.amp, config.channels_last) == (False, "auto", "auto")
    on_gpu = settings.resolve(device_type="cuda", batch_size=64, image_shape=CIFAR)
    assert not on_gpu.cuda_graphs and not on_gpu.cudnn_benchmark
    assert ExecutionSettings.of(config.replace(cudnn_benchmark="auto")).resolve(
        device_type="cuda", batch_size=64, image_shape=CIFAR).cudnn_benchmark


@pytest.mark.parametrize("before", [False, True])
def test_cudnn_benchmark_is_on_while_a_run_trains_and_restored_after(before):
    from mgkd.training.engine import _cudnn_benchmark
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = before
        with _cudnn_benchmark(True):
            assert torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.benchmark == before
        with pytest.raises(KeyboardInterrupt), _cudnn_benchmark(True):
            raise KeyboardInterrupt
        assert torch.backends.cudnn.benchmark == before
        with _cudnn_benchmark(False):
            assert torch.backends.cudnn.benchmark == before
    finally:
        torch.backends.cudnn.benchmark = saved


def test_auto_eval_batch_size_keeps_to_a_pixel_budget():
    assert auto_eval_batch_size(True, 64, (32, 32)) == 1024
    assert auto_eval_batch_size(True, 64, (8, 8)) == 1024  # at most 1024
    assert auto_eval_batch_size(True, 64, (64, 64)) == 256
    assert auto_eval_batch_size(True, 64, (256, 128)) == 64  # never below a training batch
    assert auto_eval_batch_size(False, 64, (32, 32)) == 64  # CPU: as before


def test_true_that_cannot_be_honoured_is_a_config_error_auto_falls_back_with_a_log_line(caplog):
    with pytest.raises(ConfigError, match="cuda_graphs: true needs a CUDA GPU"):
        resolved("cpu", cuda_graphs=True)
    reason = "torch.linalg.svd reads its convergence flags"
    with pytest.raises(ConfigError, match=f"cannot be captured in a CUDA graph: {reason}"):
        resolved("cuda", cuda_graphs=True, capture_blocker=reason, what="kdsvd distillation")
    with caplog.at_level(logging.INFO, logger="mgkd.config.execution"):
        execution = resolved("cuda", cuda_graphs="auto", capture_blocker=reason,
                             what="kdsvd distillation")
    assert not execution.cuda_graphs and execution.amp
    assert [r.getMessage() for r in caplog.records] == [
        f"cuda_graphs: the kdsvd distillation runs eagerly: {reason}"]


@pytest.mark.parametrize("changes,message", [
    ({"cuda_graphs": True, "device": "cpu"},
     "cuda_graphs: true needs a CUDA GPU, but device is cpu"),
    ({"cuda_graphs": True, "method": "kdsvd", "device": "auto"},
     "method kdsvd's step cannot be captured in a CUDA graph: torch.linalg.svd"),
    ({"cuda_graphs": "yes"}, "cuda_graphs: expected auto, true or false, got 'yes'."),
    ({"eval_batch_size": 0}, "eval_batch_size: expected auto or an integer from 1 to 65536, got 0."),
])
def test_config_refuses_settings_it_cannot_honour(tiny_config, changes, message):
    with pytest.raises(ConfigError) as err:
        tiny_config(**changes)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_graphs_asked_for_on_a_machine_without_gpu_fail_before_any_work(tiny_config):
    config = tiny_config(device="auto", cuda_graphs=True)
    # A Knowledge that would fail to load: the error must come before anything is built.
    nothing = Knowledge(config.teacher, "", "", {}, {})
    with pytest.raises(ConfigError, match="cuda_graphs: true needs a CUDA GPU"):
        make_trainer(config, load_splits("synthetic", ".", options=TINY_DATA), nothing)


def test_sweeps_refuse_graphs_without_gpus_or_for_uncapturable_methods(tmp_path):
    with pytest.raises(ConfigError, match="base.cuda_graphs: true needs a CUDA GPU, but "
                                          "resources_per_trial.gpu is 0"):
        validate_sweep(tiny_sweep(tmp_path, base={"device": "auto", "cuda_graphs": True}),
                       check_data=False)
    spec = tiny_sweep(tmp_path, methods=["kd", "kdsvd"], resources_per_trial={"cpu": 1, "gpu": 0.25},
                      base={"device": "auto", "cuda_graphs": True})
    with pytest.raises(ConfigError, match="method kdsvd's step cannot be captured"):
        validate_sweep(spec, check_data=False)
    spec = tiny_sweep(tmp_path, methods=["kd", "kdsvd"], resources_per_trial={"cpu": 1, "gpu": 0.25},
                      base={"device": "auto", "cuda_graphs": "auto"})
    assert len(validate_sweep(spec, check_data=False)) == 4  # auto: kdsvd just runs eagerly
