"""Sweep files: what to tune (pairs x methods x modes), how (TPE + ASHA) and on what (resources).

A sweep is YAML holding the keys of :class:`SweepSpec`; ``name`` and ``pairs`` are required, every
other key has the default in :data:`SWEEP_DEFAULTS`. :meth:`SweepSpec.from_dict` checks the file's
shape, types and ranges; :func:`validate_sweep` adds the checks that need the model / method
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
import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from mgkd.config import MODES, ExperimentConfig
from mgkd.errors import ConfigError, DataError
from mgkd.io import read_yaml_file

PAIR_KEYS: tuple[str, ...] = ("teacher", "student", "teacher_checkpoint")
# Set per study by pairs / methods / modes, so never in ``base``.
STUDY_KEYS: tuple[str, ...] = PAIR_KEYS + ("method", "mode")
REQUIRED_KEYS: tuple[str, ...] = ("name", "pairs")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX_SEED = 2**31 - 1
# mgkd.data names some config keys by their role; map them back to the config key users write.
_MESSAGE_KEYS: tuple[tuple[str, str], ...] = (("data.options", "data_options"), ("data.name", "dataset"))
_LEADING_KEY = re.compile(r"([A-Za-z_][\w.\[\]]*): (.*)", re.S)


@dataclass(frozen=True)
class Pair:
    """A teacher -> student pair; ``teacher_checkpoint`` None trains (and caches) the teacher."""

    teacher: str
    student: str
    teacher_checkpoint: str | None = None

    @property
    def label(self) -> str:
        """``<teacher>__<student>``, used in study keys and file names."""
        return f"{self.teacher}__{self.student}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"teacher": self.teacher, "student": self.student}
        if self.teacher_checkpoint is not None:
            out["teacher_checkpoint"] = self.teacher_checkpoint
        return out


@dataclass(frozen=True)
class SchedulerSpec:
    """ASHA: the first rung after ``grace_period`` epochs, 1/``reduction_factor`` goes on per rung."""

    grace_period: int = 1
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class SearcherSpec:
    """Optuna's TPE sampler: its seed and whether it models parameters jointly."""

    seed: int = 0
    multivariate: bool = True


@dataclass(frozen=True)
class Resources:
    """What one trial reserves in Ray; fractions share a CPU / GPU (logically: memory is not split)."""

    cpu: float = 1.0
    gpu: float = 0.0


@dataclass
class SweepSpec:
    """One sweep file: its studies (pairs x methods x modes), search space, budget and resources."""

    name: str
    storage_path: str
    pairs: list[Pair]
    methods: list[str]
    modes: list[str]
    space: str | dict
    num_samples: int
    max_concurrent_trials: int | None
    resources_per_trial: Resources
    scheduler: SchedulerSpec
    searcher: SearcherSpec
    base: dict
    ray_address: str | None = None
    checkpoint_every: int = 2
    objective: str | None = None  # None: the data set's default (see "the objective" below)

    @property
    def run_dir(self) -> Path:
        """``<storage_path>/<name>`` as an absolute path."""
        return Path(self.storage_path).expanduser().absolute() / self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML-able); ``SweepSpec.from_dict(spec.to_dict()) == spec``."""
        return {
            "name": self.name,
            "storage_path": self.storage_path,
            "pairs": [pair.to_dict() for pair in self.pairs],
            "methods": list(self.methods),
            "modes": list(self.modes),
            "space": copy.deepcopy(self.space),
            "num_samples": self.num_samples,
            "max_concurrent_trials": self.max_concurrent_trials,
            "resources_per_trial": dataclasses.asdict(self.resources_per_trial),
            "scheduler": dataclasses.asdict(self.scheduler),
            "searcher": dataclasses.asdict(self.searcher),
            "base": copy.deepcopy(self.base),
            "ray_address": self.ray_address,
            "checkpoint_every": self.checkpoint_every,
            "objective": self.objective,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        """Parse a sweep mapping, checking its keys, types and ranges (ConfigError names the key)."""
        return _parse_sweep(data)


# Defaults of the keys a sweep file may leave out (``name`` and ``pairs`` are required).
SWEEP_DEFAULTS: dict[str, Any] = {
    "storage_path": "./runs",
    "methods": ["kd"],
    "modes": ["mas"],
    "space": "full",
    "num_samples": 20,
    "max_concurrent_trials": None,
    "resources_per_trial": {},
    "scheduler": {},
    "searcher": {},
    "base": {},
    "ray_address": None,
    "checkpoint_every": 2,
    "objective": None,
}
SWEEP_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SweepSpec))


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


# ---- parsing: shape, types, ranges -------------------------------------------------------------
def _fail(key: str, problem: str) -> NoReturn:
    raise ConfigError(f"sweep {key}: {problem}")


def _as_int(key: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        _fail(key, f"expected an integer, got {value!r}.")
    if value < low or (high is not None and value > high):
        allowed = f"{low} to {high}" if high is not None else f"{low} or more"
        _fail(key, f"{int(value)} is out of range; allowed: {allowed}.")
    return int(value)


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(key, f"expected a finite number, got {value!r}.")
    return float(value)


def _as_str(key: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(key, f"expected {what}, got {value!r}.")
    return value


def _as_mapping(key: str, value: Any, allowed: tuple[str, ...] | None, example: str) -> dict:
    if not isinstance(value, dict):
        _fail(key, f"expected a mapping, e.g. {example}; got {value!r}.")
    unknown = sorted(str(k) for k in value if allowed is not None and k not in allowed)
    if unknown:
        _fail(key, f"unknown key(s) {unknown}; allowed keys: {', '.join(allowed or ())}.")
    return value


def _as_names(key: str, value: Any, example: str) -> list[str]:
    if not isinstance(value, list) or not value:
        _fail(key, f"expected a non-empty list, e.g. {example}; got {value!r}.")
    names = [_as_str(f"{key}[{i}]", v, "a name") for i, v in enumerate(value)]
    for i, name in enumerate(names):
        if name in names[:i]:
            _fail(f"{key}[{i}]", f"'{name}' is listed twice; each entry makes its own studies, "
                                 "so list it once.")
    return names


def _parse_section(cls: type, key: str, value: Any, example: str) -> Any:
    """A SchedulerSpec / SearcherSpec / Resources from a mapping, coerced to its fields' types."""
    names = tuple(f.name for f in dataclasses.fields(cls))
    data = _as_mapping(key, {} if value is None else value, names, example)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        raw, where = data[f.name], f"{key}.{f.name}"
        if isinstance(f.default, bool):
            if not isinstance(raw, bool):
                _fail(where, f"expected true or false, got {raw!r}.")
            values[f.name] = raw
        elif isinstance(f.default, int):
            values[f.name] = _as_int(where, raw, low=-(2**63))
        else:
            values[f.name] = _as_float(where, raw)
    return cls(**values)


def _parse_pair(i: int, item: Any) -> Pair:
    key = f"pairs[{i}]"
    data = _as_mapping(key, item, PAIR_KEYS, "{teacher: resnet32x4, student: resnet8x4}")
    missing = [k for k in ("teacher", "student") if k not in data]
    if missing:
        _fail(key, f"missing {' and '.join(missing)}; a pair is {{teacher: ARCH, student: ARCH, "
                   "teacher_checkpoint: FILE or left out to train one}.")
    checkpoint = data.get("teacher_checkpoint")
    if checkpoint is not None:
        checkpoint = _as_str(f"{key}.teacher_checkpoint", checkpoint, "a file path or null")
    return Pair(teacher=_as_str(f"{key}.teacher", data["teacher"], "an architecture name"),
                student=_as_str(f"{key}.student", data["student"], "an architecture name"),
                teacher_checkpoint=checkpoint)


def _parse_sweep(data: Any) -> SweepSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"a sweep must be a mapping of keys to values, got {type(data).__name__}; "
                          "start from sweeps/demo.yaml.")
    unknown = sorted(str(k) for k in data if k not in SWEEP_KEYS)
    if unknown:
        raise ConfigError(f"sweep: unknown key(s) {unknown}; allowed keys: {', '.join(SWEEP_KEYS)} "
                          "(experiment settings such as epochs or dataset go under base).")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ConfigError(f"sweep: missing required key(s) {missing}; a sweep needs a name (its run "
                          "dir is <storage_path>/<name>) and pairs, e.g. "
                          "pairs: [{teacher: resnet32x4, student: resnet8x4}].")
    values = {**SWEEP_DEFAULTS, **data}

    name = _as_str("name", values["name"], "a name")
    if not _SAFE_NAME.fullmatch(name):
        _fail("name", f"{name!r} is not a safe directory name; use letters, digits, '.', '_' and "
                      "'-', starting with a letter or digit.")
    storage = _as_str("storage_path", values["storage_path"], "a directory path")
    if "://" in storage:
        _fail("storage_path", f"{storage!r} is a URI; the run dir holds optuna.db, teachers and the "
                              "head bank, so it must be a file-system path: on a cluster mount shared "
                              "storage (e.g. NFS) at the same path on every node and give that path.")

    pairs_raw = values["pairs"]
    if not isinstance(pairs_raw, list) or not pairs_raw:
        _fail("pairs", "expected a non-empty list of pairs, e.g. "
                       f"[{{teacher: resnet32x4, student: resnet8x4}}]; got {pairs_raw!r}.")
    pairs = [_parse_pair(i, item) for i, item in enumerate(pairs_raw)]
    for i, pair in enumerate(pairs):
        for j in range(i):
            if pairs[j].label == pair.label:
                _fail(f"pairs[{i}]", f"{pair.teacher} -> {pair.student} repeats pairs[{j}]; a pair's "
                                     "studies are keyed by its architectures, so list it once.")

    methods = _as_names("methods", values["methods"], "[kd, crd]")
    modes = _as_names("modes", values["modes"], "[plain, mag, mas]")
    space = values["space"]
    if isinstance(space, str):
        space = _as_str("space", space, "a preset name")
    elif isinstance(space, dict):
        space = copy.deepcopy(space)
    else:
        _fail("space", f"expected a preset name (granularity, weights, full) or a mapping "
                       f"{{preset: NAME, <param>: {{type, low, high, log, choices}}}}; got {space!r}.")

    num_samples = _as_int("num_samples", values["num_samples"], low=1)
    concurrent = values["max_concurrent_trials"]
    if concurrent is not None:
        concurrent = _as_int("max_concurrent_trials", concurrent, low=1)

    resources = _parse_section(Resources, "resources_per_trial", values["resources_per_trial"],
                               "{cpu: 1, gpu: 0.5}")
    for field_name in ("cpu", "gpu"):
        amount = getattr(resources, field_name)
        if amount < 0:
            _fail(f"resources_per_trial.{field_name}", f"{amount:g} is negative; give 0 or more "
                                                       "(fractions such as 0.5 share one device).")
    if resources.gpu > 1 and resources.gpu != int(resources.gpu):
        _fail("resources_per_trial.gpu", f"{resources.gpu:g}: Ray accepts a fraction of a GPU only "
                                         "below 1; give a fraction below 1 or a whole number.")

    scheduler = _parse_section(SchedulerSpec, "scheduler", values["scheduler"],
                               "{grace_period: 2, reduction_factor: 3}")
    if scheduler.grace_period < 1:
        _fail("scheduler.grace_period", f"{scheduler.grace_period} is out of range; ASHA's first "
                                        "rung needs at least 1 epoch: allowed 1 to base.epochs.")
    if scheduler.reduction_factor <= 1:
        _fail("scheduler.reduction_factor", f"{scheduler.reduction_factor:g} must be greater than 1 "
                                            "(1/reduction_factor of the trials go on at each rung); "
                                            "2 to 4 are usual.")
    searcher = _parse_section(SearcherSpec, "searcher", values["searcher"],
                              "{seed: 0, multivariate: true}")
    if not 0 <= searcher.seed <= _MAX_SEED:
        _fail("searcher.seed", f"{searcher.seed} is out of range; allowed: 0 to {_MAX_SEED}.")

    base = values["base"]
    base = copy.deepcopy(_as_mapping("base", {} if base is None else base, None,
                                     "{dataset: cifar100, epochs: 240}"))
    inside = [k for k in STUDY_KEYS if k in base]
    if inside:
        _fail(f"base.{inside[0]}", f"{', '.join(inside)} cannot be set in base: each study takes its "
                                   "teacher, student and teacher_checkpoint from pairs, its method "
                                   "from methods and its mode from modes. Move them there.")

    address = values["ray_address"]
    if address is not None:
        address = _as_str("ray_address", address, "a Ray address such as auto or ray://HOST:10001, "
                                                   "or null for a local Ray")
    every = _as_int("checkpoint_every", values["checkpoint_every"], low=1)
    if resources.cpu == 0 and resources.gpu == 0 and concurrent is None:
        _fail("resources_per_trial", "cpu and gpu are both 0 and max_concurrent_trials is null, so "
                                     "Ray would start every trial at once; reserve cpu: 1 (or a GPU "
                                     "share) per trial, or set max_concurrent_trials.")

    return SweepSpec(name=name, storage_path=storage, pairs=pairs, methods=methods, modes=modes,
                     space=space, num_samples=num_samples, max_concurrent_trials=concurrent,
                     resources_per_trial=resources, scheduler=scheduler, searcher=searcher,
                     base=base, ray_address=address, checkpoint_every=every,
                     objective=_parse_objective(values["objective"], base))


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
                                    else _absolute(pair.teacher_checkpoint)))
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


# ---- the objective (issue 10): what TPE, ASHA, `mgkd best`, export and the report select on ------
def _parse_objective(value: Any, base: dict) -> str | None:
    """The sweep's ``objective`` key: a registered name or null (checked against the data set
    when the studies are planned). ``base`` may not set it: it is the sweep's, for every study."""
    from mgkd.objectives import OBJECTIVES

    if "objective" in base:
        _fail("base.objective", "the objective is set for the whole sweep: move it to the top "
                                f"level of the sweep file (objective: {base['objective']}).")
    if value is None:
        return None
    if not isinstance(value, str) or value not in OBJECTIVES:
        _fail("objective", f"unknown objective {value!r}; allowed: {', '.join(OBJECTIVES)} "
                           "(val_acc for classification data sets; val_map or val_rank1 for "
                           "re-ID), or leave it out for the data set's default.")
    return value


def study_objective(spec: SweepSpec, config: ExperimentConfig) -> str:
    """The objective written into a study's base config: the sweep's, checked against the data
    set's task, else that task's default."""
    from mgkd.objectives import check_objective

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


def _check_resources(spec: SweepSpec, device: str, cluster: dict | None) -> None:
    wanted = spec.resources_per_trial
    if wanted.gpu == 0 and device.startswith("cuda"):
        _fail("base.device", f"'{device}' but resources_per_trial.gpu is 0, and Ray hides GPUs from "
                             "trials that reserve none; set resources_per_trial.gpu (e.g. 0.5 or 1) "
                             "or base.device: auto.")
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
        if pair.teacher_checkpoint is None:
            continue
        path = Path(pair.teacher_checkpoint).expanduser().absolute()
        if not path.is_file():
            _fail(f"pairs[{i}].teacher_checkpoint", f"{path} does not exist; give an existing "
                                                    f"{pair.teacher} checkpoint (`mgkd teacher --arch "
                                                    f"{pair.teacher} --dataset D --epochs N --out "
                                                    "DIR` writes DIR/teacher.pt), or leave the key "
                                                    "out to train and cache one.")


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
    _check_resources(spec, first.device, cluster_resources)
    _check_checkpoints(spec)
    if check_data:
        _check_data(first)
    _check_spaces(spec, studies)
    return studies
