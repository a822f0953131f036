"""`mgkd tune`: validate a sweep, prepare teachers and head banks once, run every study under one
Tuner, resume an interrupted sweep, and summarise the best config per study."""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from optuna.trial import TrialState
from ray import tune

from analysis.verdict import (BEATS_DEFAULT, DEFAULT_BEST, WITHIN_NOISE, Verdict, binomial_se,
                              verdict)
from mgkd.config import validation_size
from mgkd.errors import ConfigError
from mgkd.io import atomic_write_text
from search.multistudy import (PAPER_DEFAULT_ATTR, MultiStudySearcher, PerStudyASHA,
                               StudyEntry)
from search.progress import ProgressTable
from search.tblog import OutcomeTBXLogger
from search.sweep import Study, SweepSpec, load_sweep, validate_sweep
from spaces import build_space
from trainables.distill import distill_trainable, teacher_key
from trainables.prepare import prepare_teachers

log = logging.getLogger(__name__)
SWEEP_FILE = "sweep.yaml"
OPTUNA_DB = "optuna.db"
METRIC = "val_acc"


def storage_url(run_dir: Path) -> str:
    return f"sqlite:///{run_dir / OPTUNA_DB}"


@dataclass
class StudySummary:
    key: str
    trials: int
    complete: int
    pruned: int
    failed: int
    best_val_acc: float | None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_experiment: dict[str, Any] = field(default_factory=dict)
    paper_val_acc: float | None = None
    val_size: int | None = None  # validation images (the n of the standard errors)
    default_selected: bool = False  # the paper-default trial is the best one (ties go to it)

    @property
    def gain(self) -> float | None:
        if self.best_val_acc is None or self.paper_val_acc is None:
            return None
        return self.best_val_acc - self.paper_val_acc

    @property
    def val_se(self) -> float | None:
        return binomial_se(self.best_val_acc, self.val_size)

    @property
    def verdict(self) -> Verdict:
        return verdict(self.best_val_acc, self.paper_val_acc, val_size=self.val_size,
                       default_selected=self.default_selected)


@dataclass
class SweepResult:
    run_dir: Path
    studies: list[StudySummary]
    interrupted: bool = False  # stopped (Ctrl-C) before every study had all its trials


# ---- set-up -------------------------------------------------------------------------------------
def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` or start a local one (unless already connected)."""
    if ray.is_initialized():
        return
    # "local": a fresh Ray of our own, never a cluster some other process left running here.
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)


def study_entries(spec: SweepSpec, studies: list[Study]) -> list[StudyEntry]:
    return [StudyEntry(key=s.key, space=build_space(spec.space, s.base),
                       num_samples=spec.num_samples, epochs=s.base.epochs) for s in studies]


def teacher_jobs(studies: list[Study], entries: list[StudyEntry]):
    """One preparation job per teacher, with every head level any of its studies can ask for."""
    jobs: dict[str, tuple[Any, list[tuple[int, float]]]] = {}
    for study, entry in zip(studies, entries):
        key = teacher_key(study.base.teacher, study.base.teacher_checkpoint)
        config, levels = jobs.get(key, (study.base, []))
        jobs[key] = (config, list(dict.fromkeys(levels + entry.space.head_levels())))
    return jobs


def build_trainable(spec: SweepSpec, studies: list[Study], entries: list[StudyEntry], *,
                    checkpoint_every: int | None = None):
    """The trial function with the sweep's data and every teacher's knowledge bound to it (put in
    Ray's object store once), and the per-trial resources. Prepares the teachers first."""
    from mgkd.distill import load_config_splits

    data = load_config_splits(studies[0].base)  # the data set is sweep-wide (base)
    knowledge = prepare_teachers(teacher_jobs(studies, entries), data,
                                 cpus=spec.resources_per_trial.cpu,
                                 gpus=spec.resources_per_trial.gpu)
    every = spec.checkpoint_every if checkpoint_every is None else checkpoint_every
    trainable = tune.with_parameters(distill_trainable, data=data, knowledge=knowledge,
                                     checkpoint_every=every)
    return tune.with_resources(trainable, {"cpu": spec.resources_per_trial.cpu,
                                           "gpu": spec.resources_per_trial.gpu})


def _trial_dirname(trial) -> str:
    # Readable and unique, without Ray's default of every parameter in the name.
    return f"{trial.config.get('study', 'trial')}_{trial.config.get('trial_number', 0):03d}_{trial.trial_id}"


class _NoRestoreHint(logging.Filter):
    """Drops Ray's "Resume experiment with: Tuner.restore(...)": `mgkd tune` names its own
    command (`mgkd tune --resume RUN_DIR`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore" not in record.getMessage()


def quiet_ray() -> None:
    """The sweep prints its own progress table: keep Ray's and Optuna's chatter out of the way."""
    tune_log = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _NoRestoreHint) for f in tune_log.filters):
        tune_log.addFilter(_NoRestoreHint())
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _new_tuner(spec: SweepSpec, entries: list[StudyEntry], trainable,
               callbacks: list[tune.Callback]):
    run_dir = spec.run_dir
    searcher = MultiStudySearcher(entries, storage_url(run_dir), seed=spec.searcher.seed,
                                  multivariate=spec.searcher.multivariate, metric=METRIC)
    scheduler = PerStudyASHA({e.key: e.epochs for e in entries},
                             grace_period=spec.scheduler.grace_period,
                             reduction_factor=spec.scheduler.reduction_factor, metric=METRIC)
    progress = ProgressTable({e.key: e.epochs for e in entries},
                             {e.key: e.num_samples for e in entries})
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, metric=METRIC, mode="max",
            num_samples=sum(e.num_samples for e in entries),
            max_concurrent_trials=spec.max_concurrent_trials, reuse_actors=True,
            trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=str(run_dir.parent), verbose=0,
            callbacks=[progress, OutcomeTBXLogger(), *callbacks],
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))


# ---- running ------------------------------------------------------------------------------------
def run_sweep(spec: SweepSpec, *, resume: bool = False,
              callbacks: list[tune.Callback] | None = None) -> SweepResult:
    """Run (or with ``resume`` continue) a sweep; returns the per-study summary. ``callbacks``
    are extra Tune callbacks for a new sweep (a resumed one keeps those it started with)."""
    # Every error before Ray starts; for a local Ray, this machine's CPUs and GPUs are the cluster.
    local = None if spec.ray_address else {"CPU": float(os.cpu_count() or 1),
                                            "GPU": float(torch.cuda.device_count())}
    studies = validate_sweep(spec, cluster_resources=local, check_data=True)
    run_dir = spec.run_dir
    # A sweep stopped while its teachers were prepared has its sweep.yaml but no Tuner state yet:
    # it starts its Tuner afresh (the teachers continue from their per-epoch checkpoints).
    restore = resume and tune.Tuner.can_restore(str(run_dir))
    if resume and not restore and not (run_dir / SWEEP_FILE).is_file():
        raise ConfigError(f"--resume: {run_dir} holds no sweep state to resume; run the sweep "
                          "without --resume.")
    if not resume and (run_dir / SWEEP_FILE).exists():
        raise ConfigError(f"{run_dir} already holds a sweep; continue it with `mgkd tune --resume "
                          f"{run_dir}` or give the sweep another name.")
    entries = study_entries(spec, studies)
    quiet_ray()
    connect(spec.ray_address)
    validate_sweep(spec, cluster_resources=ray.cluster_resources(), check_data=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        import yaml
        atomic_write_text(run_dir / SWEEP_FILE, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    log.info("sweep %s: %d studies x %d samples -> %s", spec.name, len(studies),
             spec.num_samples, run_dir)
    trainable = build_trainable(spec, studies, entries)
    if restore:
        tuner = tune.Tuner.restore(str(run_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False)
    else:
        tuner = _new_tuner(spec, entries, trainable, list(callbacks or []))
    # The first Ctrl-C makes Tune stop its trials, save its state and return (a second one
    # raises KeyboardInterrupt at once); an incomplete sweep after fit() means it was interrupted.
    tuner.fit()
    sizes = {e.key: validation_size(e.space.base) for e in entries}
    summaries = summarize(run_dir, [e.key for e in entries], sizes)
    unfinished = [s.key for s in summaries if s.complete + s.pruned + s.failed < spec.num_samples]
    return SweepResult(run_dir, summaries, interrupted=bool(unfinished))


def load_run_spec(run_dir: str | Path, action: str) -> SweepSpec:
    """The sweep a run dir holds, pointed at where the run dir is now (it may have been moved)."""
    run_dir = Path(run_dir).expanduser().resolve()
    sweep_file = run_dir / SWEEP_FILE
    if not sweep_file.is_file():
        raise ConfigError(f"{action}: {run_dir} is not a sweep run dir (no {SWEEP_FILE}); give the "
                          "directory `mgkd tune` printed when it started.")
    spec = load_sweep(sweep_file)
    if spec.run_dir != run_dir:
        spec = SweepSpec.from_dict({**spec.to_dict(), "storage_path": str(run_dir.parent),
                                    "name": run_dir.name})
    return spec


def resume_sweep(run_dir: str | Path) -> SweepResult:
    return run_sweep(load_run_spec(run_dir, "--resume"), resume=True)


# ---- summary ------------------------------------------------------------------------------------
def summarize(run_dir: Path, keys: list[str],
              val_sizes: dict[str, int] | None = None) -> list[StudySummary]:
    """Per study, from ``optuna.db`` alone: counts, the best trial (ties: the earlier one) and the
    paper default's value; ``val_sizes`` (validation images per study) gives the verdicts their n."""
    summaries = []
    val_sizes = val_sizes or {}
    for key in keys:
        try:
            study = optuna.load_study(study_name=key, storage=storage_url(run_dir))
        except KeyError:
            summaries.append(StudySummary(key, 0, 0, 0, 0, None))
            continue
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max(complete, key=lambda t: t.value) if complete else None
        paper = next((t for t in trials if t.user_attrs.get(PAPER_DEFAULT_ATTR)), None)
        paper_value = paper.value if paper is not None and paper.state == TrialState.COMPLETE else None
        summaries.append(StudySummary(
            key=key, trials=len(trials), complete=len(complete),
            pruned=sum(t.state == TrialState.PRUNED for t in trials),
            failed=sum(t.state == TrialState.FAIL for t in trials),
            best_val_acc=best.value if best else None,
            best_params=dict(best.params) if best else {},
            paper_val_acc=paper_value, val_size=val_sizes.get(key) or None,
            default_selected=best is not None and paper is not None and best.number == paper.number))
    return summaries


def _fmt(value: float | None, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def format_summary(result: SweepResult) -> str:
    width = max([len("study")] + [len(s.key) for s in result.studies])
    lines = [f"{'study':<{width}}  done  pruned  err  best val_acc  val se  paper default  gain  "
             f"{'verdict':<13}  best hyperparameters"]
    verdicts = []
    for s in result.studies:
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(s.best_params.items()))
        judged = s.verdict
        lines.append(f"{s.key:<{width}}  {s.complete:>4}  {s.pruned:>6}  {s.failed:>3}  "
                     f"{_fmt(s.best_val_acc):>12}  {_fmt(s.val_se):>6}  {_fmt(s.paper_val_acc):>13}  "
                     f"{_fmt(s.gain, True):>5}  {judged.verdict:<13}  {params}")
        verdicts.append(f"{s.key}: {_verdict_sentence(s, judged)}")
    lines += ["", *verdicts, "",
              f"run dir:      {result.run_dir}",
              f"optuna study: optuna-dashboard {storage_url(result.run_dir)}",
              f"tensorboard:  tensorboard --logdir {result.run_dir}"]
    return "\n".join(lines)


def _verdict_sentence(s: StudySummary, judged: Verdict) -> str:
    twice = "-" if judged.gain_se is None else f"{2 * judged.gain_se:.2f}"
    if judged.verdict == BEATS_DEFAULT:
        return (f"beats default: the best config is {s.gain:.2f} points of validation accuracy "
                f"above the paper default, more than twice the difference's standard error "
                f"({twice}; {judged.basis}).")
    if judged.verdict == WITHIN_NOISE:
        return (f"within noise: the best config is {s.gain:.2f} points above the paper default, "
                f"not more than twice the difference's standard error ({twice}; {judged.basis}); "
                "the search did NOT clearly beat the paper default.")
    if judged.verdict == DEFAULT_BEST:
        return ("default best: the search did NOT beat the paper default on validation accuracy; "
                "the paper default is the best config found.")
    return "no comparison (the paper-default trial did not complete)."


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
