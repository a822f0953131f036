"""``mgkd export``: each study's selected config as an ExperimentConfig YAML for ``mgkd train``,
with the sweep's full epoch budget, the full training set (``val_fraction: 0``) and the sweep's
``objective`` (so a re-ID config says it was chosen on, e.g., val_map)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from analysis.best import StudyBest, best_of_run
from analysis.formats import fmt_number, fmt_params
from analysis.records import Run
from analysis.run import read_run
from mgkd.config import ExperimentConfig
from mgkd.errors import ConfigError, MgkdError
from mgkd.io import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class Exported:
    """One written config file and the trial it came from."""

    study: str
    path: Path
    trial_number: int | None
    value: float | None  # the selected config's objective (``config.objective``)
    config: ExperimentConfig


def threads_of(run: Run) -> int:
    """The torch threads each trial ran with (one per CPU Ray gave it, at least one)."""
    return max(1, int(math.floor(run.cpus_per_trial or 1)))


def _portable_checkpoint(run: Run, best: StudyBest, path: str | None) -> tuple[str | None, str]:
    """The export's teacher_checkpoint for a trial's ``path``, and a header line saying why."""
    if path is None:
        return None, ""
    if Path(path).expanduser().resolve().is_relative_to(run.path.resolve()):
        return None, ("teacher_checkpoint is null: the sweep trained this teacher itself (into its "
                      "run dir); final training trains it again or finds it under cache_dir.")
    written = best.study.teacher_checkpoint
    if written is not None:
        return written, (f"teacher_checkpoint {written} is as the sweep file gave it (a relative path "
                         "is relative to where `mgkd tune` ran); change it with --set "
                         "teacher_checkpoint=PATH.")
    return path, (f"teacher_checkpoint {path} is the sweep machine's path (sweep.yaml does not "
                  "record the pair's own); point it at your copy with --set teacher_checkpoint=PATH.")


def _header(run: Run, best: StudyBest, trial_config: ExperimentConfig,
            final: ExperimentConfig, checkpoint_note: str) -> list[str]:
    trial = best.selected
    assert trial is not None
    spread = (f" ± {best.confirmed.std_value:.2f} over {len(best.confirmed.values)} seeds"
              if best.confirmed else "")
    epochs = trial.epochs or trial_config.epochs
    objective = best.objective
    group = trial_config.peers is not None  # a peer group: no teacher, no heads
    lines = [
        f"Best config of study {best.study.key} in sweep {run.name} ({run.path}), written by "
        "`mgkd export`.",
        f"Selected by validation {objective.label} ({best.selected_by}): trial "
        f"{trial.trial_number} (Ray trial {trial.ray_trial_id or '?'}), {objective.name} "
        f"{fmt_number(best.value)}{spread} after {epochs} epochs; its {objective.test_metric} "
        f"{fmt_number(best.test_value)} is reported, never used to select.",
        f"Hyperparameters: {fmt_params(best.params)}.",
        f"Changed from the trial: epochs {trial_config.epochs} -> {final.epochs} (the sweep's "
        f"budget), val_fraction {trial_config.val_fraction:g} -> 0 (the full training set; "
        + ("with no validation split the run's student.pt is the peer with the lowest training "
           "cross-entropy)." if group else "the teacher and heads are cached per training "
           "split, so this trains them afresh on it)."),
    ]
    lines += [
        f"Paths are not the sweep machine's: cache_dir {final.cache_dir} and data_dir "
        f"{final.data_dir} are the defaults; point them elsewhere with `mgkd train --config "
        "THIS_FILE --out DIR --set data_dir=PATH cache_dir=PATH`.",
        *([checkpoint_note] if checkpoint_note else []),
        f"Reproduce the trial (the same {objective.name}, exactly on CPU with the trial's thread "
        "count):",
        f"  mgkd train --config THIS_FILE --out DIR --threads {threads_of(run)} --set "
        f"epochs={epochs} val_fraction={trial_config.val_fraction:g}",
        *([] if group else [
            f"  (add cache_dir={run.path / 'cache'} to load the sweep's teacher and heads instead "
            "of training them again; nothing is written there)"])]
    return [f"# {line}" for line in lines]


def study_export(run: Run, best: StudyBest) -> tuple[ExperimentConfig, str]:
    """The final-training config of one study and its YAML text (header comment included).
    Raises ConfigError when the study has no usable winner."""
    trial = best.selected
    if trial is None:
        raise ConfigError(f"study {best.study.key} has no finished trial to export yet.")
    if trial.experiment is None:
        raise ConfigError(f"study {best.study.key}: the config of trial {trial.trial_number} is "
                          "unknown (no experiment in its params.json and no base config to rebuild "
                          "it from).")
    try:
        trial_config = ExperimentConfig.from_dict(trial.experiment)
    except ConfigError as err:
        raise ConfigError(f"study {best.study.key}: trial {trial.trial_number}'s config does not "
                          f"load with this version ({err}).") from None
    # Portable: the sweep's absolute cache_dir (<run dir>/cache) and data_dir would make the final
    # training write into the run dir, or fail on another machine; the defaults are the user's,
    # and a teacher the sweep trained itself is trained (or found in the cache) again.
    defaults = ExperimentConfig()
    checkpoint, checkpoint_note = _portable_checkpoint(run, best, trial_config.teacher_checkpoint)
    changes: dict = {"epochs": best.study.budget or trial_config.epochs, "val_fraction": 0.0,
                     "cache_dir": defaults.cache_dir, "data_dir": defaults.data_dir,
                     "objective": best.objective.name, "teacher_checkpoint": checkpoint}
    final = trial_config.replace(**changes)
    header = _header(run, best, trial_config, final, checkpoint_note)
    return final, "\n".join(header) + "\n" + final.to_yaml()


def export_run(run: Run, out_dir: str | Path) -> list[Exported]:
    """Write ``<out_dir>/<study key>.yaml`` (atomically) for every study with a winner; studies
    without one are described in ``run.notes``. MgkdError when no study has one."""
    out = Path(out_dir).expanduser()
    written = []
    for best in best_of_run(run):
        try:
            config, text = study_export(run, best)
        except ConfigError as err:
            run.notes.append(f"not exported: {err}")
            continue
        path = out / f"{best.study.key}.yaml"
        atomic_write_text(path, text)
        log.debug("exported %s", path)
        written.append(Exported(best.study.key, path, best.trial_number, best.value, config))
    if not written:
        raise MgkdError(f"nothing to export from {run.path}: no study has a trial that finished its "
                        "epoch budget yet; wait for the sweep (or resume it with `mgkd tune "
                        f"--resume {run.path}`) and export again.")
    return written


def export_configs(run_dir: str | Path | Run, out_dir: str | Path) -> list[Exported]:
    """``mgkd export`` as a function: one YAML per study with a winner, in ``out_dir``."""
    run = run_dir if isinstance(run_dir, Run) else read_run(run_dir)
    return export_run(run, out_dir)
