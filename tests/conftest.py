"""Shared fixtures: tiny synthetic experiments that run in a second on two CPU cores, one local
Ray for every test that needs one, the ``mgkd`` command run in this process or as its own, and
the test tiers.

Tiers (markers set here, from what a test uses, never by hand):

* ``ray``  — the test runs on Ray (it uses the ``ray_runtime`` fixture, as ``local_ray`` does,
  directly or through another fixture);
* ``cli``  — it starts another process (the ``mgkd`` console script, Python, a benchmark);
* ``slow`` — marked in its module: a single test of several seconds that needs neither.

``make test-fast`` runs the rest; ``make test`` (what CI runs) runs everything.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from mgkd.catalog.objectives import get_objective
from mgkd.config import ExperimentConfig

VAL_ACC = get_objective("val_acc")  # what a classification Trainer selects its best epoch by
TINY_DATA = {"num_train": 80, "num_test": 24, "num_classes": 4, "image_size": 16, "seed": 0}
RAY_CPUS = 2


MGKD = Path(sys.executable).parent / "mgkd"  # the console script pyproject.toml declares


def mgkd_process(*args, cwd=None):
    """Run the ``mgkd`` console script in a process of its own; returns the completed process."""
    return subprocess.run([str(MGKD), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def mgkd(*args, cwd=None) -> subprocess.CompletedProcess:
    """``mgkd ARGS`` run in this process (``search.cli.main``: the console script's parser,
    handlers and exit status, with its log lines on stderr as ``main`` configures them), without
    a new interpreter's seconds of imports. Returns what ``mgkd_process`` would."""
    from search.cli import main

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING if "-q" in args or "--quiet" in args else logging.INFO)
    try:
        with contextlib.ExitStack() as stack:
            if cwd is not None:
                stack.enter_context(contextlib.chdir(cwd))
            stack.enter_context(contextlib.redirect_stdout(out))
            stack.enter_context(contextlib.redirect_stderr(err))
            try:
                code = main([str(a) for a in args])
            except SystemExit as done:  # argparse: --help, --version, usage errors
                code = done.code if isinstance(done.code, int) else 1
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return subprocess.CompletedProcess(["mgkd", *map(str, args)], code, out.getvalue(),
                                       err.getvalue())


def start_local_ray() -> None:
    """A local Ray on ``RAY_CPUS`` CPUs of this process's own, unless one is up."""
    import ray
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="session")
def ray_runtime():
    """Requested by every fixture that runs Ray (the shared local one, a test's own cluster):
    what puts a test in the ``ray`` tier."""


@pytest.fixture(scope="session")
def local_ray(ray_runtime):
    """One local Ray shared by every test that needs one (starting Ray takes seconds)."""
    start_local_ray()
    yield
    import ray
    ray.shutdown()


@pytest.fixture(scope="session")
def real_result(tmp_path_factory, local_ray):
    """One real sweep shared by the sweep and analysis tests (``analysis_fixtures.real_sweep``):
    its spec and ``run_sweep``'s result."""
    from analysis_fixtures import real_sweep
    from search.tune import run_sweep

    spec = real_sweep(tmp_path_factory.mktemp("analysis-sweep"))
    return spec, run_sweep(spec)


@pytest.fixture(scope="session")
def real_run(real_result) -> Path:
    """That sweep's pristine run dir (do not modify it: copy it with ``damaged``)."""
    return real_result[1].run_dir


_PROCESS_WORDS = ("subprocess.", "Popen", "mgkd_process(", ".Process(")


def _starts_processes(function: Any) -> bool:
    """Whether a test function, or a helper of its module it calls, starts another process."""
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    if any(word in source for word in _PROCESS_WORDS):
        return True
    module = inspect.getmodule(function)
    for name, helper in vars(module).items():
        if (inspect.isfunction(helper) and helper is not function
                and helper.__module__ == module.__name__ and f"{name}(" in source):
            try:
                if any(word in inspect.getsource(helper) for word in _PROCESS_WORDS):
                    return True
            except (OSError, TypeError):
                continue
    return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "ray_runtime" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)
        if _starts_processes(getattr(item, "function", None)):
            item.add_marker(pytest.mark.cli)


def assert_clean_error(result, *words):
    """Exit status 2, no traceback, one paragraph on stderr that holds every word."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.count("\n") == 0, message  # one paragraph
    for word in words:
        assert word in message, message


def tiny_config_dict(cache_dir: Path, **overrides: Any) -> dict[str, Any]:
    base = {
        "teacher": "resnet8x4", "student": "resnet8", "dataset": "synthetic",
        "data_options": dict(TINY_DATA), "val_fraction": 0.25, "teacher_epochs": 1,
        "head_epochs": 1, "epochs": 2, "batch_size": 16, "device": "cpu",
        "cache_dir": str(cache_dir), "method": "kd", "mode": "mas",
        "granularities": [{"dim": 8, "temperature": 2.0, "weight": 1.0},
                          {"dim": 16, "temperature": 8.0, "weight": 0.5}],
    }
    base.update(overrides)
    return base


@pytest.fixture
def tiny_config(tmp_path: Path):
    """A factory: ``tiny_config(method="at", mode="mag")`` -> ExperimentConfig."""
    def make(**overrides: Any) -> ExperimentConfig:
        return ExperimentConfig.from_dict(tiny_config_dict(tmp_path / "cache", **overrides))
    return make


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)
