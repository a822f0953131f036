"""The sweep file's ``callbacks`` (Ray Tune's own logger callbacks for MLflow, W&B and Aim) and
``ray_dashboard``: checked before Ray starts, the callbacks built for the sweep's run dir.

Checking imports nothing of Ray or the trackers. Each tracker's Python package is optional (see
:mod:`mgkd.catalog.trackers`): a sweep that names one whose package is missing is refused up front
with the pip command, before any training.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from mgkd.catalog.trackers import MLFLOW_DB, TRACKERS
from mgkd.config.sweep import SweepSpec, fail_sweep

if TYPE_CHECKING:  # the checks run before Ray is imported (sweep-file errors stay fast)
    from ray import tune

# What Ray's dashboard imports (ray.dashboard.optional_deps) that ray[tune] does not install.
DASHBOARD_MODULES = ("aiohttp", "aiohttp_cors", "grpc", "opencensus", "prometheus_client")


def missing_package(module: str, find: Callable[[str], object] = importlib.util.find_spec
                    ) -> bool:
    """Whether ``module`` cannot be imported here (looked up, not imported)."""
    try:
        return find(module) is None
    except (ImportError, ValueError):
        return True


def check_trackers(names: list[str],
                   find: Callable[[str], object] = importlib.util.find_spec) -> None:
    """ConfigError naming the first tracker whose package is missing and the pip command."""
    for i, name in enumerate(names):
        tracker = TRACKERS[name]
        if missing_package(tracker.module, find):
            fail_sweep(f"callbacks[{i}]", f"'{name}' logs through Ray Tune's {tracker.callback}, "
                                          f"which needs the Python package '{tracker.module}', not "
                                          f"installed here; install it with `pip install "
                                          f"{tracker.pip}` (in this project: `.venv/bin/pip install "
                                          f"{tracker.pip}`), or remove '{name}' from callbacks.")


def check_dashboard(spec: SweepSpec,
                    find: Callable[[str], object] = importlib.util.find_spec) -> None:
    """ConfigError when ``ray_dashboard`` cannot work: on a cluster (its dashboard is the head's,
    started by ``ray start --head``) or without the packages of ``ray[default]``."""
    if not spec.ray_dashboard:
        return
    if spec.ray_address is not None:
        fail_sweep("ray_dashboard", f"applies to a local Ray only; the cluster at "
                                    f"{spec.ray_address} has the dashboard its head started "
                                    "(`ray start --head` serves it on port 8265). Remove "
                                    "ray_dashboard, or set ray_address: null.")
    missing = [name for name in DASHBOARD_MODULES
               if missing_package(name, find)]
    if missing:
        from importlib.metadata import PackageNotFoundError, version
        try:
            pin = f"=={version('ray')}"
        except PackageNotFoundError:
            pin = ""
        fail_sweep("ray_dashboard", f"Ray's dashboard needs the packages of ray[default] "
                                    f"({', '.join(missing)} missing here); install them with "
                                    f"`.venv/bin/pip install 'ray[default]{pin}'`, or set "
                                    "ray_dashboard: false.")


def mlflow_uri(run_dir: Path) -> str:
    """$MLFLOW_TRACKING_URI, else an sqlite store in the run dir (MLflow 3 refuses its plain
    ``./mlruns`` file store unless MLFLOW_ALLOW_FILE_STORE is set)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run_dir / MLFLOW_DB}"


def _mlflow(spec: SweepSpec) -> tune.Callback:
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    return MLflowLoggerCallback(tracking_uri=mlflow_uri(spec.run_dir), experiment_name=spec.name,
                                tags={"mgkd_sweep": spec.name})


def _wandb(spec: SweepSpec) -> tune.Callback:
    from ray.air.integrations.wandb import WandbLoggerCallback
    # Ray's logging actors get only WANDB_API_KEY from this process's environment: pass the
    # mode (offline, disabled) on, or a Ray started before it was set would log online.
    mode = {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}
    return WandbLoggerCallback(project=spec.name, group=spec.name, dir=str(spec.run_dir), **mode)


def _aim(spec: SweepSpec) -> tune.Callback:
    from ray.tune.logger.aim import AimLoggerCallback
    return AimLoggerCallback(repo=str(spec.run_dir), experiment_name=spec.name)


BUILDERS: dict[str, Callable[[SweepSpec], tune.Callback]] = {
    "mlflow": _mlflow, "wandb": _wandb, "aim": _aim}


def tracker_callbacks(spec: SweepSpec) -> list[tune.Callback]:
    """The Tune callbacks of the sweep's ``callbacks`` key, in its order."""
    check_trackers(spec.callbacks)
    return [BUILDERS[name](spec) for name in spec.callbacks]
