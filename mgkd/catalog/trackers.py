"""Experiment trackers a sweep can feed through Ray Tune's own logger callbacks (the sweep file's
``callbacks`` key): what each is called there, the Python module it needs and how to install it.

A registry; torch- and Ray-free, so the sweep file's schema can name the allowed values. The
callbacks themselves are built in :mod:`search.trackers`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tracker:
    """One tracker: ``module`` must be importable on the machine that runs ``mgkd tune`` (Ray's
    logger callbacks run in the driver); ``pip`` installs it."""

    name: str  # as the sweep file names it
    module: str  # what Ray's callback imports
    pip: str  # the requirement that provides ``module``
    callback: str  # Ray Tune's callback class, for messages and docs
    writes: str  # where its records go by default, for people


TRACKERS: dict[str, Tracker] = {t.name: t for t in (
    Tracker("mlflow", "mlflow", "mlflow-skinny", "ray.air.integrations.mlflow.MLflowLoggerCallback",
            "the MLflow store at $MLFLOW_TRACKING_URI, else sqlite:///<run dir>/mlflow.db; "
            "experiment = the sweep's name"),
    Tracker("wandb", "wandb", "wandb", "ray.air.integrations.wandb.WandbLoggerCallback",
            "W&B project = the sweep's name (files under <run dir>/wandb; WANDB_MODE=offline "
            "keeps them local)"),
    Tracker("aim", "aim", "aim", "ray.tune.logger.aim.AimLoggerCallback",
            "an Aim repository in the run dir (`aim up --repo <run dir>`)"),
)}
TRACKER_NAMES: tuple[str, ...] = tuple(TRACKERS)
# What the trackers write into a run dir by default: part of a sweep's run dir, not strays.
MLFLOW_DB = "mlflow.db"
TRACKER_FILES: tuple[str, ...] = (f"{MLFLOW_DB}*",)
TRACKER_DIRS: tuple[str, ...] = ("wandb", ".aim")
