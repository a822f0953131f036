"""Running a sweep file: the built-in demo sweep, and :func:`validate_sweep`, every check a sweep
needs before Ray starts.

The sweep file's schema and its plan of studies live in :mod:`mgkd.config.sweep` (torch-free,
shared with ``analysis``); the checks here add what needs the file system, the Ray cluster's
resources and the search spaces, so every mistake is reported before Ray starts.
"""
from __future__ import annotations

from pathlib import Path

from analysis.rundir import SWEEP_FILE
from mgkd.config.execution import graphs_refusal
from mgkd.config.experiment import ExperimentConfig
from mgkd.config.sweep import Study, SweepSpec, load_sweep, plan
from mgkd.config.sweep import fail_sweep as _fail
from mgkd.errors import ConfigError, DataError
from search.trackers import check_dashboard, check_trackers


# The built-in demo (`mgkd tune` without a file) is the repository's sweeps/demo.yaml: one file,
# read by the command and by people.
DEMO_SWEEP_FILE = Path(__file__).resolve().parents[1] / "sweeps" / "demo.yaml"


def default_sweep() -> SweepSpec:
    """The demo sweep: the repository's sweeps/demo.yaml."""
    if not DEMO_SWEEP_FILE.is_file():
        raise ConfigError(f"the built-in demo is the repository's sweeps/demo.yaml, and "
                          f"{DEMO_SWEEP_FILE} is missing; give a sweep file (`mgkd tune FILE`) or "
                          "run mgkd from a checkout of the repository.")
    return load_sweep(DEMO_SWEEP_FILE)


# ---- validation --------------------------------------------------------------------------------
def _check_schedule(spec: SweepSpec, epochs: int) -> None:
    grace = spec.scheduler.grace_period
    if grace > epochs:
        _fail("scheduler.grace_period", f"{grace} is beyond base.epochs {epochs}; with a grace period "
                                        "beyond epochs ASHA never stops a trial. Set grace_period "
                                        f"between 1 and {epochs}, or raise base.epochs.")


def _check_resources(spec: SweepSpec, base: ExperimentConfig, cluster: dict | None) -> None:
    wanted, device = spec.resources_per_trial, base.device
    if wanted.gpu == 0 and device.startswith("cuda"):
        _fail("base.device", f"'{device}' but resources_per_trial.gpu is 0, and Ray hides GPUs from "
                             "trials that reserve none; set resources_per_trial.gpu (e.g. 0.5 or 1) "
                             "or base.device: auto.")
    refusal = graphs_refusal(base.cuda_graphs, on_gpu=wanted.gpu > 0, capture_blocker=None,
                             cpu_because="resources_per_trial.gpu is 0, so trials run on CPUs "
                                         "(e.g. gpu: 0.25 shares a GPU among 4 trials)")
    if refusal:
        _fail("base.cuda_graphs", refusal.removeprefix("cuda_graphs: "))
    if cluster is None:
        return
    offered = ", ".join(f"{k} {v:g}" for k, v in sorted(cluster.items())
                        if k in ("CPU", "GPU") and isinstance(v, (int, float))) or "nothing"
    have_gpu = float(cluster.get("GPU", 0.0) or 0.0)
    if wanted.gpu > 0 and have_gpu == 0:
        _fail("resources_per_trial.gpu", f"each trial asks for {wanted.gpu:g} GPU but the Ray cluster "
                                         f"has no GPU (it offers {offered}); set "
                                         "resources_per_trial.gpu: 0 to train on CPUs, or point "
                                         "ray_address at a cluster with GPUs.")
    if wanted.gpu > have_gpu:
        _fail("resources_per_trial.gpu", f"each trial asks for {wanted.gpu:g} GPUs but the Ray "
                                         f"cluster has {have_gpu:g} (it offers {offered}); lower "
                                         f"resources_per_trial.gpu to at most {have_gpu:g} "
                                         "(fractions such as 0.5 share a GPU) or add GPU nodes.")
    have_cpu = float(cluster.get("CPU", 0.0) or 0.0)
    if wanted.cpu > have_cpu:
        _fail("resources_per_trial.cpu", f"each trial asks for {wanted.cpu:g} CPUs but the Ray "
                                         f"cluster has {have_cpu:g} (it offers {offered}); lower "
                                         f"resources_per_trial.cpu to at most {have_cpu:g} or add "
                                         "nodes.")


def _check_checkpoints(spec: SweepSpec) -> None:
    for i, pair in enumerate(spec.pairs):
        fixes = {"teacher_checkpoint": f"give an existing {pair.teacher} checkpoint (`mgkd teacher "
                                       f"--arch {pair.teacher} --dataset D --epochs N --out DIR` "
                                       "writes DIR/teacher.pt), or leave the key out to train and "
                                       "cache one.",
                 "student_init": f"give an existing weights file for {pair.student}'s backbone, "
                                 "or leave the key out to start from random weights."}
        for key, fix in fixes.items():
            given = getattr(pair, key)
            if given is not None and not Path(given).expanduser().absolute().is_file():
                _fail(f"pairs[{i}].{key}", f"{Path(given).expanduser().absolute()} does not exist; "
                                           f"{fix}")


def _check_data(config: ExperimentConfig) -> None:
    from mgkd.data import check_available

    try:
        check_available(config.dataset, config.data_dir)
    except DataError as err:
        raise ConfigError(f"sweep base.data_dir: {err}") from None


def _check_spaces(spec: SweepSpec, studies: list[Study]) -> None:
    from spaces import PRESETS, build_space

    if isinstance(spec.space, str) and spec.space not in PRESETS:
        _fail("space", f"unknown preset '{spec.space}'; allowed: {', '.join(PRESETS)}, or a mapping "
                       "{preset: NAME, <param>: {type, low, high, log, choices}}.")
    for study in studies:
        try:
            build_space(spec.space, study.base).paper_default()
        except ConfigError as err:
            raise ConfigError(f"sweep space (in study {study.key}): {err}") from None


def validate_sweep(spec: SweepSpec, *, cluster_resources: dict | None = None,
                   check_data: bool = True) -> list[Study]:
    """Check everything a sweep needs before Ray starts and return its studies.

    ``cluster_resources`` is ``ray.cluster_resources()`` when a cluster is known; ``check_data``
    checks that the data set is on disk. Raises ConfigError naming the key and the fix.
    """
    spec = SweepSpec.from_dict(spec.to_dict())  # shape, types and ranges, also for specs built in code
    studies = plan(spec)
    first = studies[0].base
    _check_schedule(spec, first.epochs)
    _check_resources(spec, first, cluster_resources)
    _check_checkpoints(spec)
    if check_data:
        _check_data(first)
    _check_spaces(spec, studies)
    check_trackers(spec.callbacks)
    check_dashboard(spec)
    return studies


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
