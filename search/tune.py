"""`mgkd tune`: validate a sweep, prepare teachers and head banks once, run every study under one
Tuner, resume an interrupted sweep, and summarise the best config per study."""
from __future__ import annotations

import json
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
from mgkd.objectives import DEFAULT_OBJECTIVE, OBJECTIVES, Objective, get_objective
from search.multistudy import (PAPER_DEFAULT_ATTR, MultiStudySearcher, PerStudyASHA,
                               StudyEntry)
from search.progress import ProgressTable
from search.resultlog import ProgressCsvLogger, ResultJsonLogger
from search.tblog import OutcomeTBXLogger
from search.sweep import Study, SweepSpec, load_sweep, validate_sweep
from spaces import build_space
from trainables.distill import distill_trainable, teacher_key
from trainables.prepare import prepare_teachers

log = logging.getLogger(__name__)
SWEEP_FILE = "sweep.yaml"
OPTUNA_DB = "optuna.db"


def storage_url(run_dir: Path) -> str:
    return f"sqlite:///{run_dir / OPTUNA_DB}"


@dataclass
class StudySummary:
    """One study's outcome on the sweep's objective (``objective.name``, e.g. val_acc)."""

    key: str
    trials: int
    complete: int
    pruned: int
    failed: int
    best_value: float | None  # the best trial's objective value
    best_params: dict[str, Any] = field(default_factory=dict)
    best_experiment: dict[str, Any] = field(default_factory=dict)
    paper_value: float | None = None
    val_size: int | None = None  # validation images / queries (the n of binomial errors)
    default_selected: bool = False  # the paper-default trial is the best one (ties go to it)
    objective: Objective = field(default_factory=lambda: OBJECTIVES[DEFAULT_OBJECTIVE])
    best_se: float | None = None  # reported standard errors (objectives that are not binomial)
    paper_se: float | None = None

    @property
    def gain(self) -> float | None:
        if self.best_value is None or self.paper_value is None:
            return None
        return self.best_value - self.paper_value

    @property
    def val_se(self) -> float | None:
        if not self.objective.binomial:
            return self.best_se
        return binomial_se(self.best_value, self.val_size)

    @property
    def verdict(self) -> Verdict:
        if not self.objective.binomial:
            return verdict(self.best_value, self.paper_value, val_size=None,
                           default_selected=self.default_selected, best_se=self.best_se,
                           paper_se=self.paper_se, se_basis=self.objective.se_metric)
        return verdict(self.best_value, self.paper_value, val_size=self.val_size,
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


def sweep_objective(studies: list[Study]) -> Objective:
    """The objective every study of a sweep selects on (written into each base config by
    ``search.sweep.plan``; the data set, and so the objective, is sweep-wide)."""
    return get_objective(studies[0].base.objective or DEFAULT_OBJECTIVE)


def _new_tuner(spec: SweepSpec, entries: list[StudyEntry], trainable,
               callbacks: list[tune.Callback], metric: str):
    run_dir = spec.run_dir
    searcher = MultiStudySearcher(entries, storage_url(run_dir), seed=spec.searcher.seed,
                                  multivariate=spec.searcher.multivariate, metric=metric)
    scheduler = PerStudyASHA({e.key: e.epochs for e in entries},
                             grace_period=spec.scheduler.grace_period,
                             reduction_factor=spec.scheduler.reduction_factor, metric=metric)
    progress = ProgressTable({e.key: e.epochs for e in entries},
                             {e.key: e.num_samples for e in entries}, metric=metric)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, metric=metric, mode="max",
            num_samples=sum(e.num_samples for e in entries),
            max_concurrent_trials=spec.max_concurrent_trials, reuse_actors=True,
            trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=str(run_dir.parent), verbose=0,
            callbacks=[progress, OutcomeTBXLogger(), ResultJsonLogger(), ProgressCsvLogger(),
                       *callbacks],
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
    objective = sweep_objective(studies)
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
        tuner = _new_tuner(spec, entries, trainable, list(callbacks or []), objective.name)
    # The first Ctrl-C makes Tune stop its trials, save its state and return (a second one
    # raises KeyboardInterrupt at once); an incomplete sweep after fit() means it was interrupted.
    tuner.fit()
    sizes = {e.key: validation_size(e.space.base) for e in entries}
    summaries = summarize(run_dir, [e.key for e in entries], sizes, objective)
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
def trial_final(run_dir: Path, key: str, number: int) -> dict[str, Any]:
    """The last line of a sweep trial's result.json (its final metrics), or {}."""
    for folder in run_dir.glob(f"{key}_{number:03d}_*"):
        path = folder / "result.json"
        lines = [line for line in path.read_text().splitlines() if line.strip()] \
            if path.is_file() else []
        if lines:
            return json.loads(lines[-1])
    return {}


def _reported_se(run_dir: Path, key: str, trial, objective: Objective) -> float | None:
    """The standard error a trial reported with its final objective value (None for binomial
    objectives, whose error follows from the validation size)."""
    if trial is None or objective.se_metric is None:
        return None
    value = trial_final(run_dir, key, trial.number).get(objective.se_metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def summarize(run_dir: Path, keys: list[str], val_sizes: dict[str, int] | None = None,
              objective: Objective | None = None) -> list[StudySummary]:
    """Per study, from ``optuna.db`` (and, for a reported standard error, the trial's last
    result): counts, the best trial (ties: the earlier one) and the paper default's value;
    ``val_sizes`` (validation images / queries per study) gives binomial verdicts their n."""
    summaries = []
    val_sizes = val_sizes or {}
    objective = objective or OBJECTIVES[DEFAULT_OBJECTIVE]
    for key in keys:
        try:
            study = optuna.load_study(study_name=key, storage=storage_url(run_dir))
        except KeyError:
            summaries.append(StudySummary(key, 0, 0, 0, 0, None, objective=objective))
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
            best_value=best.value if best else None,
            best_params=dict(best.params) if best else {},
            paper_value=paper_value, val_size=val_sizes.get(key) or None,
            default_selected=best is not None and paper is not None and best.number == paper.number,
            objective=objective, best_se=_reported_se(run_dir, key, best, objective),
            paper_se=_reported_se(run_dir, key, paper if paper_value is not None else None,
                                  objective)))
    return summaries


def _fmt(value: float | None, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def format_summary(result: SweepResult) -> str:
    width = max([len("study")] + [len(s.key) for s in result.studies])
    name = result.studies[0].objective.name if result.studies else DEFAULT_OBJECTIVE
    best_head = f"best {name}"
    lines = [f"{'study':<{width}}  done  pruned  err  {best_head:>12}  val se  paper default  gain  "
             f"{'verdict':<13}  best hyperparameters"]
    verdicts = []
    for s in result.studies:
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(s.best_params.items()))
        judged = s.verdict
        lines.append(f"{s.key:<{width}}  {s.complete:>4}  {s.pruned:>6}  {s.failed:>3}  "
                     f"{_fmt(s.best_value):>{len(best_head)}}  {_fmt(s.val_se):>6}  "
                     f"{_fmt(s.paper_value):>13}  {_fmt(s.gain, True):>5}  {judged.verdict:<13}  "
                     f"{params}")
        verdicts.append(f"{s.key}: {_verdict_sentence(s, judged)}")
    lines += ["", *verdicts, "",
              f"run dir:      {result.run_dir}",
              f"optuna study: optuna-dashboard {storage_url(result.run_dir)}",
              f"tensorboard:  tensorboard --logdir {result.run_dir}"]
    return "\n".join(lines)


def _verdict_sentence(s: StudySummary, judged: Verdict) -> str:
    twice = "-" if judged.gain_se is None else f"{2 * judged.gain_se:.2f}"
    what = f"validation {s.objective.label}"
    if judged.verdict == BEATS_DEFAULT:
        return (f"beats default: the best config is {s.gain:.2f} points of {what} "
                f"above the paper default, more than twice the difference's standard error "
                f"({twice}; {judged.basis}).")
    if judged.verdict == WITHIN_NOISE:
        return (f"within noise: the best config is {s.gain:.2f} points above the paper default, "
                f"not more than twice the difference's standard error ({twice}; {judged.basis}); "
                "the search did NOT clearly beat the paper default.")
    if judged.verdict == DEFAULT_BEST:
        return (f"default best: the search did NOT beat the paper default on {what}; "
                "the paper default is the best config found.")
    return "no comparison (the paper-default trial did not complete)."


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
