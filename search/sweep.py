"""Sweep files: what to tune (pairs x methods x modes), how (TPE + ASHA) and on what (resources).

A sweep is YAML holding the keys of :class:`SweepSpec`; ``name`` and ``pairs`` are required, every
other key has its default there. :meth:`SweepSpec.from_dict` checks the file's shape, types and
ranges (pydantic, through :mod:`mgkd.validation`); :func:`validate_sweep` adds the checks that need the model / method
registries, the base experiment config, the file system, the Ray cluster and the search space, so
every mistake is reported before Ray starts. :func:`plan` turns a sweep into its studies, one Optuna
study per (pair, method, mode).

Paths in a study's base config (``data_dir``, ``cache_dir``, ``teacher_checkpoint``) are made
absolute against the current directory, because Ray runs each trial in a directory of its own. When
``base`` sets no ``cache_dir``, teachers and the head bank go to ``<run_dir>/cache``, so a run dir
holds everything the sweep made.
"""
from __future__ import annotations

import copy
import re
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, NoReturn

import yaml
from pydantic import AfterValidator, ConfigDict, Field, model_validator, with_config

from mgkd.config import MODES, ExperimentConfig
from mgkd.errors import ConfigError, DataError
from mgkd.io import read_yaml_file
from mgkd.objectives import OBJECTIVES, check_objective
from mgkd.validation import (EMPTY_MAPPING_IF_NONE, Bool, Float, Int, Name, Options, Schema, Str,
                             fail)

_MAX_SEED = 2**31 - 1
# mgkd.data names some config keys by their role; map them back to the config key users write.
_MESSAGE_KEYS: tuple[tuple[str, str], ...] = (("data.options", "data_options"), ("data.name", "dataset"))
_LEADING_KEY = re.compile(r"([A-Za-z_][\w.\[\]]*): (.*)", re.S)

Count = Annotated[Int, Field(ge=1)]
Arch = Annotated[Name, Field(description="an architecture name")]
Amount = Annotated[Float, Field(ge=0, description="fractions such as 0.5 share one device")]


def _whole_gpus_above_one(gpu: float) -> float:
    if gpu > 1 and gpu != int(gpu):
        fail(f"{gpu:g}: Ray accepts a fraction of a GPU only below 1; give a fraction below 1 or a "
             "whole number.")
    return gpu


def _not_a_uri(path: str) -> str:
    if "://" in path:
        fail(f"{path!r} is a URI; the run dir holds optuna.db, teachers and the head bank, so it "
             "must be a file-system path: on a cluster mount shared storage (e.g. NFS) at the same "
             "path on every node and give that path.")
    return path


def _preset_or_mapping(space: Any) -> str | dict:
    if isinstance(space, dict) or (isinstance(space, str) and space.strip()):
        return copy.deepcopy(space)
    fail("expected a preset name (granularity, weights, full) or a mapping {preset: NAME, <param>: "
         f"{{type, low, high, log, choices}}}}; got {space!r}.")


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class Pair:
    """A teacher -> student pair; ``teacher_checkpoint`` None trains (and caches) the teacher."""

    KEY_HINT: ClassVar[str] = ("a pair is {teacher: ARCH, student: ARCH, teacher_checkpoint: FILE "
                               "or left out to train one}")
    teacher: Arch
    student: Arch
    teacher_checkpoint: Annotated[Name | None, Field(description="a file path or null")] = None
    # weights that initialise the student's backbone (e.g. ImageNet-pretrained); null: random
    student_init: Annotated[Name | None, Field(description="a file path or null")] = None

    @property
    def label(self) -> str:
        """``<teacher>__<student>``, used in study keys and file names."""
        return f"{self.teacher}__{self.student}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class SchedulerSpec:
    """ASHA: the first rung after ``grace_period`` epochs, 1/``reduction_factor`` goes on per rung."""

    grace_period: Annotated[Int, Field(ge=1, description="ASHA's first rung needs at least 1 epoch: "
                                                         "allowed 1 to base.epochs")] = 1
    reduction_factor: Annotated[Float, Field(gt=1, description="1/reduction_factor of the trials "
                                                                 "go on at each rung; 2 to 4 are "
                                                                 "usual")] = 3.0


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class SearcherSpec:
    """Optuna's TPE sampler: its seed and whether it models parameters jointly."""

    seed: Annotated[Int, Field(ge=0, le=_MAX_SEED)] = 0
    multivariate: Bool = True


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class Resources:
    """What one trial reserves in Ray; fractions share a CPU / GPU (logically: memory is not split)."""

    cpu: Amount = 1.0
    gpu: Annotated[Amount, AfterValidator(_whole_gpus_above_one)] = 0.0


def _known_objective(value: str | None) -> str | None:
    """A registered objective name (checked against the data set's task when studies are
    planned), or null for the data set's default."""
    if value is not None and value not in OBJECTIVES:
        fail(f"unknown objective {value!r}; allowed: {', '.join(OBJECTIVES)} (val_acc for "
             "classification data sets; val_map or val_rank1 for re-ID), or leave it out for the "
             "data set's default.")
    return value


@with_config(ConfigDict(extra="forbid"))
@dataclass(kw_only=True)
class SweepSpec:
    """One sweep file: its studies (pairs x methods x modes), search space, budget and resources.

    ``name`` and ``pairs`` are required; every other key has its default here.
    """

    KEY_HINT: ClassVar[str] = ("a sweep needs a name (its run dir is <storage_path>/<name>) and "
                               "pairs, e.g. pairs: [{teacher: resnet32x4, student: resnet8x4}]; "
                               "experiment settings such as epochs or dataset go under base")
    name: Annotated[Str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                               description="a safe directory name: letters, digits, '.', '_' and "
                                           "'-', starting with a letter or digit")]
    storage_path: Annotated[Name, AfterValidator(_not_a_uri),
                            Field(description="a directory path")] = "./runs"
    pairs: Annotated[list[Pair], Field(min_length=1, description="a non-empty list of pairs, e.g. "
                                       "[{teacher: resnet32x4, student: resnet8x4}]")]
    methods: Annotated[list[Name], Field(min_length=1, description="a non-empty list, e.g. "
                                         "[kd, crd]")] = field(default_factory=lambda: ["kd"])
    modes: Annotated[list[Name], Field(min_length=1, description="a non-empty list, e.g. "
                                       "[plain, mag, mas]")] = field(default_factory=lambda: ["mas"])
    space: Annotated[Any, AfterValidator(_preset_or_mapping)] = "full"
    num_samples: Count = 20
    max_concurrent_trials: Count | None = None
    resources_per_trial: Annotated[Resources, EMPTY_MAPPING_IF_NONE,
                                   Field(description="e.g. {cpu: 1, gpu: 0.5}")] = field(
        default_factory=Resources)
    scheduler: Annotated[SchedulerSpec, EMPTY_MAPPING_IF_NONE,
                         Field(description="e.g. {grace_period: 2, reduction_factor: 3}")] = field(
        default_factory=SchedulerSpec)
    searcher: Annotated[SearcherSpec, EMPTY_MAPPING_IF_NONE,
                        Field(description="e.g. {seed: 0, multivariate: true}")] = field(
        default_factory=SearcherSpec)
    base: Annotated[Options, AfterValidator(copy.deepcopy),
                    Field(description="e.g. {dataset: cifar100, epochs: 240}")] = field(
        default_factory=dict)
    ray_address: Annotated[Name | None, Field(description="a Ray address such as auto or "
                                              "ray://HOST:10001, or null for a local Ray")] = None
    checkpoint_every: Count = 2
    # what TPE, ASHA, `mgkd best`, export and the report select on; null: the data set's default
    objective: Annotated[Str | None, AfterValidator(_known_objective)] = None

    @model_validator(mode="after")
    def _check_together(self) -> "SweepSpec":
        for i, pair in enumerate(self.pairs):
            first = next(j for j, other in enumerate(self.pairs) if other.label == pair.label)
            if first < i:
                fail(f"pairs[{i}]: {pair.teacher} -> {pair.student} repeats pairs[{first}]; a "
                     "pair's studies are keyed by its architectures, so list it once.")
        for key in ("methods", "modes"):
            names = getattr(self, key)
            for i, name in enumerate(names):
                if name in names[:i]:
                    fail(f"{key}[{i}]: '{name}' is listed twice; each entry makes its own studies, "
                         "so list it once.")
        if "objective" in self.base:
            fail(f"base.objective: the objective is set for the whole sweep: move it to the top "
                 f"level of the sweep file (objective: {self.base['objective']}).")
        inside = [k for k in STUDY_KEYS if k in self.base]
        if inside:
            fail(f"base.{inside[0]}: {', '.join(inside)} cannot be set in base: each study takes its "
                 "teacher, student and teacher_checkpoint from pairs, its method from methods and "
                 "its mode from modes. Move them there.")
        resources = self.resources_per_trial
        if resources.cpu == 0 and resources.gpu == 0 and self.max_concurrent_trials is None:
            fail("resources_per_trial: cpu and gpu are both 0 and max_concurrent_trials is null, "
                 "so Ray would start every trial at once; reserve cpu: 1 (or a GPU share) per "
                 "trial, or set max_concurrent_trials.")
        return self

    @property
    def run_dir(self) -> Path:
        """``<storage_path>/<name>`` as an absolute path."""
        return Path(self.storage_path).expanduser().absolute() / self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML-able); ``SweepSpec.from_dict(spec.to_dict()) == spec``."""
        return {**dataclasses.asdict(self), "pairs": [pair.to_dict() for pair in self.pairs]}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        """Parse a sweep mapping, checking its keys, types and ranges (ConfigError names the key)."""
        return _SCHEMA.parse(data)


_SCHEMA: Schema[SweepSpec] = Schema(SweepSpec, prefix="sweep")
PAIR_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Pair))
# Set per study by pairs / methods / modes, so never in ``base``.
STUDY_KEYS: tuple[str, ...] = PAIR_KEYS + ("method", "mode")


@dataclass(frozen=True)
class Study:
    """One Optuna study: a pair distilled with one method in one mode."""

    pair: Pair
    method: str
    mode: str
    base: ExperimentConfig

    @property
    def key(self) -> str:
        """``<teacher>__<student>__<method>__<mode>``: the Optuna study name and a safe file name."""
        return f"{self.pair.label}__{self.method}__{self.mode}"


def _fail(key: str, problem: str) -> NoReturn:
    raise ConfigError(f"sweep {key}: {problem}")


# ---- files and the built-in demo ---------------------------------------------------------------
def load_sweep(path: str | Path) -> SweepSpec:
    """Read and parse a sweep YAML file; errors name the file and the key."""
    path = Path(path)
    data = read_yaml_file(path, "sweep", "start from sweeps/demo.yaml or sweeps/paper-cifar100.yaml, "
                          "or run `mgkd tune` with no file for the demo.")
    try:
        return SweepSpec.from_dict(data if data is not None else {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


# Keep identical to sweeps/demo.yaml (tests/test_sweep.py checks that both give the same sweep).
DEMO_SWEEP_YAML = """\
# The built-in demo sweep (`mgkd tune` with no file): a few minutes on 2 CPU cores, no download.
# Sized for a laptop; raise num_samples / epochs for a real search.
name: demo
storage_path: ./runs              # run dir: ./runs/demo (Ray results, optuna.db, teachers, head bank)
pairs:                            # small CIFAR-style nets that train fast on CPU
  - {teacher: resnet20, student: resnet8}
  - {teacher: wrn_16_2, student: wrn_16_1}
methods: [kd]
modes: [mas]
space:                            # the full preset, narrowed so 8 trials a study can explore it
  preset: full                    # level count, widths, temperatures, loss weights, lr
  "g*_dim": {type: categorical, choices: [16, 32, 64, 128, 256]}     # 256 and 8: the paper's
  "g*_temperature": {type: categorical, choices: [1, 2, 4, 8]}       # 64@T2 + 256@T8 stays in
num_samples: 16                   # trials per study (2 studies here)
max_concurrent_trials: 2
resources_per_trial: {cpu: 1, gpu: 0}
scheduler: {grace_period: 2, reduction_factor: 2}     # ASHA; its max_t is base.epochs
searcher: {seed: 0, multivariate: true}               # TPE
checkpoint_every: 2               # epochs between trial checkpoints (for resuming)
ray_address: null                 # null: a local Ray
base:                             # ExperimentConfig keys shared by every trial
  dataset: digits                 # scikit-learn's bundled digits: no download
  val_fraction: 0.5               # 719 validation images: a val_acc near 90% has a standard
                                  # error of ~1.1 points, so a few points of gain can be told from noise
  epochs: 6
  teacher_epochs: 15              # teachers are trained once per sweep and cached
  head_epochs: 4                  # every (width, temperature) head the space can ask for, once
  batch_size: 64
  device: cpu
  # cache_dir left out: teachers and heads go to <run dir>/cache
"""


def default_sweep() -> SweepSpec:
    """The demo sweep, the same as sweeps/demo.yaml."""
    return SweepSpec.from_dict(yaml.safe_load(DEMO_SWEEP_YAML))


# ---- planning ----------------------------------------------------------------------------------
def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


def _base_error(err: ConfigError, study_key: str | None) -> ConfigError:
    """Re-word an ExperimentConfig error as one about ``sweep base.<key>``."""
    message = str(err)
    for inner, outer in _MESSAGE_KEYS:
        if message.startswith(inner):
            message = outer + message[len(inner):]
    match = _LEADING_KEY.fullmatch(message)
    key, problem = (f"base.{match[1]}", match[2]) if match else ("base", message)
    if study_key is not None:
        key += f" (in study {study_key}; base applies to every study)"
    return ConfigError(f"sweep {key}: {problem}")


def _check_names(spec: SweepSpec) -> None:
    from mgkd.methods import METHOD_NAMES
    from mgkd.models import MODEL_NAMES

    for i, pair in enumerate(spec.pairs):
        for role in ("teacher", "student"):
            arch = getattr(pair, role)
            if arch not in MODEL_NAMES:
                _fail(f"pairs[{i}].{role}", f"unknown architecture '{arch}'; allowed: "
                                            f"{', '.join(MODEL_NAMES)}.")
    for i, method in enumerate(spec.methods):
        if method not in METHOD_NAMES:
            _fail(f"methods[{i}]", f"unknown method '{method}'; allowed: {', '.join(METHOD_NAMES)}.")
    for i, mode in enumerate(spec.modes):
        if mode not in MODES:
            _fail(f"modes[{i}]", f"unknown mode '{mode}'; allowed: {', '.join(MODES)}.")


def _study_config(spec: SweepSpec, pair: Pair, method: str, mode: str) -> ExperimentConfig:
    data = copy.deepcopy(spec.base)
    data.update(teacher=pair.teacher, student=pair.student, method=method, mode=mode,
                teacher_checkpoint=(None if pair.teacher_checkpoint is None
                                    else _absolute(pair.teacher_checkpoint)),
                student_init=None if pair.student_init is None else _absolute(pair.student_init))
    data_dir = data.get("data_dir", ExperimentConfig().data_dir)
    if isinstance(data_dir, str):  # trials run in their own directories: no relative paths
        data["data_dir"] = _absolute(data_dir)
    if "cache_dir" not in data:
        data["cache_dir"] = str(spec.run_dir / "cache")
    elif isinstance(data["cache_dir"], str):
        data["cache_dir"] = _absolute(data["cache_dir"])
    return ExperimentConfig.from_dict(data)


def plan(spec: SweepSpec) -> list[Study]:
    """The sweep's studies: pairs x methods x modes, in that order (pairs outermost)."""
    _check_names(spec)
    studies = []
    for pair in spec.pairs:
        for method in spec.methods:
            for mode in spec.modes:
                key = f"{pair.label}__{method}__{mode}"
                try:
                    config = _study_config(spec, pair, method, mode)
                except ConfigError as err:
                    raise _base_error(err, key) from None
                config = config.replace(objective=study_objective(spec, config))
                studies.append(Study(pair=pair, method=method, mode=mode, base=config))
    return studies


def study_objective(spec: SweepSpec, config: ExperimentConfig) -> str:
    """The objective written into a study's base config: the sweep's, checked against the data
    set's task, else that task's default."""
    return check_objective(spec.objective, config.dataset, config.data_options,
                           key="sweep objective").name


# ---- validation --------------------------------------------------------------------------------
def _check_base_keys(spec: SweepSpec) -> None:
    allowed = tuple(f.name for f in dataclasses.fields(ExperimentConfig) if f.name not in STUDY_KEYS)
    unknown = sorted(str(k) for k in spec.base if k not in allowed)
    if unknown:
        _fail("base", f"unknown key(s) {unknown}; allowed keys: {', '.join(allowed)}.")
    first = spec.pairs[0]
    try:
        _study_config(spec, first, spec.methods[0], spec.modes[0])
    except ConfigError as err:
        raise _base_error(err, None) from None


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
    if wanted.gpu == 0 and base.cuda_graphs is True:
        _fail("base.cuda_graphs", "true but resources_per_trial.gpu is 0, so trials run on CPUs "
                                  "where CUDA graphs do not exist; set resources_per_trial.gpu "
                                  "(e.g. 0.25 shares a GPU among 4 trials) or cuda_graphs: auto.")
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
    _check_names(spec)
    _check_base_keys(spec)
    studies = plan(spec)
    first = studies[0].base
    _check_schedule(spec, first.epochs)
    _check_resources(spec, first, cluster_resources)
    _check_checkpoints(spec)
    if check_data:
        _check_data(first)
    _check_spaces(spec, studies)
    return studies
