"""Finding a run dir's parts: its sweep file, its studies, its trial dirs and anything unknown."""
from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from analysis.records import StudyInfo
from mgkd.catalog.trackers import TRACKER_DIRS, TRACKER_FILES
from mgkd.config.sweep import split_study_key
from mgkd.errors import ConfigError, MgkdError

log = logging.getLogger(__name__)
SWEEP_FILE = "sweep.yaml"
OPTUNA_DB = "optuna.db"
CONFIRM_DIR = "confirm"
BOARD_DIR = "board"
# Entries of a run dir that are not trial dirs: ours, the sweep's and Ray's experiment state.
# The trackers' (the sweep file's callbacks) stores are part of a run dir too.
KNOWN_DIRS: frozenset[str] = frozenset({"cache", CONFIRM_DIR, BOARD_DIR, *TRACKER_DIRS})
KNOWN_FILES: tuple[str, ...] = (SWEEP_FILE, f"{OPTUNA_DB}*", "tuner.pkl", "trainable.pkl",
                                "experiment_state-*.json", "search_gen_state-*.json",
                                "searcher-state-*.pkl", "basic-variant-state-*.json",
                                *TRACKER_FILES)
# <study key>_<trial number>_<Ray trial id>, as search.tune names trial dirs.
_TRIAL_DIR = re.compile(r"^(?P<study>[^_].*__.+__.+__[^_]+)_(?P<number>\d+)_(?P<ray_id>[A-Za-z0-9]+)$")


@dataclass
class SweepInfo:
    """What ``sweep.yaml`` says, as far as it could be read."""

    name: str
    studies: dict[str, StudyInfo] = field(default_factory=dict)
    cpus_per_trial: float | None = None


@dataclass
class RunDirLayout:
    trial_dirs: list[Path]
    unknown: list[str]


def locate(run_dir: str | Path) -> Path:
    """The run dir as an absolute path; MgkdError when it is not one."""
    path = Path(run_dir).expanduser().absolute()
    if not path.is_dir():
        raise MgkdError(f"run dir {path} does not exist; give the directory `mgkd tune` printed when "
                        "the sweep started (<storage_path>/<sweep name>, e.g. runs/demo).")
    has_trials = any(parse_trial_dir_name(p.name) for p in path.iterdir() if p.is_dir())
    if not ((path / SWEEP_FILE).is_file() or (path / OPTUNA_DB).is_file() or has_trials):
        raise MgkdError(f"{path} is not a sweep run dir: it holds no {SWEEP_FILE}, no {OPTUNA_DB} and "
                        "no trial dirs; give the directory `mgkd tune` printed when the sweep started "
                        "(<storage_path>/<sweep name>).")
    return path


def parse_trial_dir_name(name: str) -> tuple[str, int, str] | None:
    """``(study key, trial number, Ray trial id)`` from a trial dir's name, or None."""
    match = _TRIAL_DIR.match(name)
    if match is None or split_study_key(match["study"]) is None:
        return None
    return match["study"], int(match["number"]), match["ray_id"]


def scan(path: Path) -> RunDirLayout:
    """Sort a run dir's entries into trial dirs and unknown entries (hidden ones are skipped)."""
    trial_dirs, unknown = [], []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if entry.name in KNOWN_DIRS:
                continue
            if (entry / "params.json").is_file() or parse_trial_dir_name(entry.name):
                trial_dirs.append(entry)
            else:
                unknown.append(entry.name + "/")
        elif not any(fnmatch.fnmatch(entry.name, pattern) for pattern in KNOWN_FILES):
            unknown.append(entry.name)
    return RunDirLayout(trial_dirs, unknown)


def _moved(spec: Any, path: Path) -> Any:
    """The spec re-pointed at ``path`` when the run dir was moved or copied off a cluster."""
    if spec.run_dir == path:
        return spec
    return type(spec).from_dict({**spec.to_dict(), "storage_path": str(path.parent), "name": path.name})


def _from_spec(spec: Any, notes: list[str]) -> dict[str, StudyInfo]:
    from mgkd.config.sweep import plan

    try:
        studies = plan(spec)
    except ConfigError as err:
        notes.append(f"{SWEEP_FILE}: its studies could not be planned ({err}); studies are taken "
                     f"from {OPTUNA_DB} and the trial dirs, without their base configs.")
        return _from_raw(spec.to_dict())
    return {s.key: StudyInfo(s.key, *split_study_key(s.key),  # type: ignore[misc]
                             budget=s.base.epochs, base=s.base.to_dict(),
                             objective=s.base.objective,
                             teacher_checkpoint=getattr(s.pair, "teacher_checkpoint", None))
            for s in studies}


def _from_raw(data: dict[str, Any]) -> dict[str, StudyInfo]:
    """Studies from a sweep mapping this version cannot parse: pairs x methods x modes."""
    from mgkd.catalog.objectives import OBJECTIVES

    base = data.get("base") if isinstance(data.get("base"), dict) else {}
    budget = base.get("epochs") if isinstance(base.get("epochs"), int) else None
    named = data.get("objective")
    objective = named if isinstance(named, str) and named in OBJECTIVES else None
    studies: dict[str, StudyInfo] = {}
    pairs, methods, modes = (data.get(k) if isinstance(data.get(k), list) else default
                             for k, default in (("pairs", []), ("methods", ["kd"]),
                                                ("modes", ["mas"])))
    for pair in pairs:
        if not isinstance(pair, dict) or "teacher" not in pair or "student" not in pair:
            continue
        for method in methods:
            for mode in modes:
                key = f"{pair['teacher']}__{pair['student']}__{method}__{mode}"
                checkpoint = pair.get("teacher_checkpoint")
                studies[key] = StudyInfo(key, str(pair["teacher"]), str(pair["student"]),
                                         str(method), str(mode), budget=budget,
                                         objective=objective,
                                         teacher_checkpoint=(checkpoint if isinstance(checkpoint, str)
                                                             else None))
    groups = data.get("groups") if isinstance(data.get("groups"), list) else []
    for group in groups:  # peer groups, studied with the online method (dml)
        peers = group.get("peers") if isinstance(group, dict) else None
        if not isinstance(peers, list) or not peers:
            continue
        label = "+".join(map(str, peers))
        for method in (m for m in methods if m == "dml"):
            for mode in modes:
                key = f"{label}__{method}__{mode}"
                studies[key] = StudyInfo(key, "", label, str(method), str(mode), budget=budget,
                                         objective=objective)
    return studies


def read_sweep(path: Path, notes: list[str]) -> SweepInfo:
    """The run dir's sweep: its name, studies (in plan order) and CPUs per trial."""
    from mgkd.config.sweep import load_sweep

    sweep_file = path / SWEEP_FILE
    if not sweep_file.is_file():
        notes.append(f"no {SWEEP_FILE} in {path}: studies are taken from {OPTUNA_DB} and the trial "
                     "dirs, and their epoch budgets from the trials' configs.")
        return SweepInfo(path.name)
    try:
        spec = _moved(load_sweep(sweep_file), path)
    except ConfigError as err:
        try:
            raw = yaml.safe_load(sweep_file.read_text())
        except yaml.YAMLError:
            raw = None
        raw = raw if isinstance(raw, dict) else {}
        notes.append(f"{SWEEP_FILE} does not parse with this version ({err}); it may come from an "
                     "older sweep. Its pairs, methods, modes and base.epochs are read as far as "
                     "possible; the rest comes from the trial dirs.")
        resources = raw.get("resources_per_trial")
        cpus = resources.get("cpu") if isinstance(resources, dict) else None
        return SweepInfo(str(raw.get("name") or path.name), _from_raw(raw),
                         float(cpus) if isinstance(cpus, (int, float)) else None)
    return SweepInfo(spec.name, _from_spec(spec, notes), spec.resources_per_trial.cpu)
