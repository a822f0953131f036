"""``mgkd board``: TensorBoard on the top trials of every study, each run named readably.

TensorBoard names a run by its directory under the logdir, so a link tree is built with one
directory per shown trial, ``<teacher>__<student>/<method>-<mode>/#<rank> val <value> trial <n>``
(``val`` for val_acc; the objective's label otherwise, e.g. ``val mAP``),
holding symbolic links to that trial's event files (a copy where links are not possible). The tree
lives outside the run dir (which is never written): under the system's temp dir by default, or
where the user says.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from analysis.best import ranked, study_objective
from analysis.formats import fmt_number
from analysis.records import COMPLETE, FAIL, Run, TrialRecord
from mgkd.catalog.objectives import Objective
from mgkd.catalog.tasks import CLASSIFICATION
from mgkd.errors import MgkdError
from mgkd.paths import writable_dir

log = logging.getLogger(__name__)
EVENTS_GLOB = "events.out.tfevents.*"
DEFAULT_TOP = 3
DEFAULT_PORT = 6006
MARKER = ".mgkd-board"  # marks a link tree this module built, so only those are ever rebuilt


@dataclass
class BoardRun:
    """One trial shown in TensorBoard."""

    name: str  # the run name TensorBoard shows (its dir under the logdir)
    study: str
    rank: int
    trial: TrialRecord
    path: Path
    events: list[Path]


@dataclass
class Board:
    logdir: Path
    runs: list[BoardRun]
    command: list[str]


def board_order(trials: list[TrialRecord]) -> list[TrialRecord]:
    """Complete trials by their objective (ties: earlier), then unfinished ones (running,
    pruned, unknown) by their latest value of it, so a running sweep shows its leaders too."""
    complete = ranked(trials)
    rest = [t for t in trials if t.state not in (COMPLETE, FAIL) and t.objective_value is not None]
    rest.sort(key=lambda t: (-t.objective_value, t.trial_number or 0))
    return complete + rest


def value_tag(objective: Objective) -> str:
    """How a run name calls the objective: ``val`` for accuracy, else e.g. ``val mAP``."""
    return "val" if objective.task == CLASSIFICATION else f"val {objective.label}"


def run_name(run: Run, trial: TrialRecord, rank: int, width: int) -> str:
    study = run.studies[trial.study]
    marker = "" if trial.state == COMPLETE else f" {trial.state.lower()}"
    return (f"{study.pair}/{study.method}-{study.mode}/#{rank:0{width}d} "
            f"{value_tag(study_objective(study))} {fmt_number(trial.objective_value)} trial "
            f"{trial.trial_number}{marker}")


def _link(target: Path, link: Path) -> None:
    try:
        link.symlink_to(target)
    except OSError:  # a file system without symbolic links
        shutil.copy2(target, link)


def tensorboard_command(logdir: Path, port: int) -> list[str]:
    """The TensorBoard of this Python environment (its console script, else its module)."""
    script = Path(sys.executable).parent / "tensorboard"
    program = [str(script)] if script.is_file() else [sys.executable, "-m", "tensorboard.main"]
    return [*program, "--logdir", str(logdir), "--port", str(port)]


def default_logdir(run: Run) -> Path:
    """``<temp dir>/mgkd-board/<run name>-<hash of its path>``: one per run dir, outside it."""
    digest = hashlib.sha256(str(run.path).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / "mgkd-board" / f"{run.path.name}-{digest}"


def _fresh_logdir(run: Run, logdir: Path) -> Path:
    """An empty ``logdir`` marked as ours: a tree built before is removed, anything else refused."""
    logdir = logdir.expanduser().absolute()
    if logdir == run.path or run.path in logdir.parents:
        raise MgkdError(f"board --logdir: {logdir} lies inside the run dir {run.path}, which `mgkd "
                        "board` never writes; give a directory outside it (or leave --logdir out).")
    if logdir.is_dir() and any(logdir.iterdir()):
        if not (logdir / MARKER).is_file():
            raise MgkdError(f"board --logdir: {logdir} holds files `mgkd board` did not make; give "
                            "a new or empty directory (it is rebuilt on every call).")
        shutil.rmtree(logdir)  # a tree built by an earlier call: rebuilt
    writable_dir(logdir, "board --logdir", "give a directory you can write.")
    (logdir / MARKER).write_text(f"links to the TensorBoard events of {run.path}\n")
    return logdir


def build_board(run: Run, top: int = DEFAULT_TOP, port: int = DEFAULT_PORT,
                logdir: Path | None = None) -> Board:
    """(Re)build the link tree in ``logdir`` (default: :func:`default_logdir`) for the top
    ``top`` trials of every study. The run dir itself is only read."""
    logdir = _fresh_logdir(run, logdir or default_logdir(run))
    runs = []
    width = len(str(top))
    for key in run.studies:
        shown = [t for t in board_order(run.trials_of(key))
                 if t.trial_dir is not None and any(t.trial_dir.glob(EVENTS_GLOB))][:top]
        if not shown:
            run.notes.append(f"study {key}: no trial with TensorBoard event files to show yet.")
        for rank, trial in enumerate(shown, 1):
            name = run_name(run, trial, rank, width)
            folder = logdir / name
            folder.mkdir(parents=True)
            events = sorted(trial.trial_dir.glob(EVENTS_GLOB))
            for event in events:
                _link(event.absolute(), folder / event.name)
            runs.append(BoardRun(name, key, rank, trial, folder, events))
    log.debug("board %s: %d runs", logdir, len(runs))
    return Board(logdir, runs, tensorboard_command(logdir, port))


def start(board: Board) -> NoReturn:
    """Replace this process with TensorBoard (so Ctrl-C and signals reach it directly)."""
    sys.stdout.flush()
    os.execv(board.command[0], board.command)
