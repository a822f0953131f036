"""Ray tasks that prepare each teacher's knowledge once per sweep, before any trial starts:
train (or load) the teacher, fill the head bank with every head the search space can ask for and
build the teacher view bank where the sweep's studies can use it. Their progress lines (elapsed,
ETA) reach the driver's log through a Ray queue: the sweep's Ray does not forward worker output."""
from __future__ import annotations

import logging
import math
from typing import Any

import ray
from ray.util.queue import Empty, Queue

from mgkd.config import ExperimentConfig
from mgkd.data import DataSplits
from mgkd.knowledge.prepare import Knowledge, prepare_knowledge

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often the driver passes on the tasks' progress lines

# A teacher's job: a study's resolved base config, the head levels to train, and the configs of
# the runs it serves with the teacher passes over the training set each stands for.
TeacherJob = tuple[ExperimentConfig, list[tuple[int, float]], list[tuple[ExperimentConfig, int]]]


def _prepare(config: dict[str, Any], levels: list[tuple[int, float]],
             runs: list[tuple[dict[str, Any], int]], data: DataSplits, cpus: float,
             lines: Queue | None = None) -> Knowledge:
    import torch
    torch.set_num_threads(max(1, int(math.floor(cpus))))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    emit = None if lines is None else lines.put
    bank_runs = [(ExperimentConfig.from_validated(run), passes) for run, passes in runs]
    return prepare_knowledge(ExperimentConfig.from_validated(config), data, extra_levels=levels,
                             progress=emit, bank_runs=bank_runs)


def _pass_on(lines: Queue) -> None:
    while True:
        try:
            log.info("%s", lines.get_nowait())
        except Empty:
            return


def prepare_teachers(jobs: dict[str, TeacherJob], data: DataSplits, *, cpus: float = 1.0,
                     gpus: float = 0.0) -> dict[str, Knowledge]:
    """Run one Ray task per teacher (in parallel); returns knowledge by teacher key. Each job's
    configs are studies' resolved base configs (validated when the sweep was planned)."""
    if not jobs:  # peer groups only: nothing to prepare
        return {}
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=1)(_prepare)
    data_ref = ray.put(data)
    lines = Queue(actor_options={"num_cpus": 0})
    try:
        refs = {key: task.remote(config.to_dict(), levels,
                                 [(run.to_dict(), passes) for run, passes in runs], data_ref,
                                 cpus, lines)
                for key, (config, levels, runs) in jobs.items()}
        log.info("preparing %d teacher(s), their head banks and teacher view banks as Ray tasks "
                 "(a line per epoch of whatever must be trained)", len(refs))
        pending = list(refs.values())
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_SECONDS)
            _pass_on(lines)
        _pass_on(lines)
        return dict(zip(refs, ray.get(list(refs.values()))))
    finally:
        lines.shutdown()
