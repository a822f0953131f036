"""Sweep files: what to tune (pairs x methods x modes), how (TPE + ASHA) and on what (resources),
and the plan of studies a sweep makes — torch-free, below both ``search`` (which runs sweeps) and
``analysis`` (which reads their run dirs).

A sweep is YAML holding the keys of :class:`SweepSpec`; ``name`` and ``pairs`` are required, every
other key has its default there. :meth:`SweepSpec.from_dict` checks the file's shape, types and
ranges (pydantic, through :mod:`mgkd.config.validation`); ``search.sweep.validate_sweep`` adds the
checks that need the file system, the Ray cluster and the search space. :func:`plan` turns a sweep
into its studies, one Optuna study per (pair, method, mode), each keyed by :func:`study_key`.

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

from mgkd.catalog.methods import METHOD_DEFAULTS, METHOD_NAMES, MODE_NAMES
from mgkd.catalog.models import MODEL_NAMES
from mgkd.catalog.objectives import OBJECTIVES, check_objective
from mgkd.catalog.trackers import TRACKER_NAMES
from mgkd.config.experiment import TEACHER_KEYS, ExperimentConfig, peer_count_problem, resolve
from mgkd.config.validation import (EMPTY_LIST_IF_NONE, EMPTY_MAPPING_IF_NONE, Bool, Float, Int,
                                    Name, Options, Schema, Str, fail, one_of)
from mgkd.errors import ConfigError
from mgkd.io import read_yaml_file

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
        """``<teacher>__<student>``, used in file names."""
        return f"{self.teacher}__{self.student}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _two_to_four(peers: list[str]) -> list[str]:
    if peer_count_problem(peers):
        fail(peer_count_problem(peers))
    return peers


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class PeerGroup:
    """A peer group trained together from scratch by an online method (dml): no teacher."""

    KEY_HINT: ClassVar[str] = "a group is {peers: [ARCH, ARCH, ...]} (2 to 4 architectures)"
    peers: Annotated[list[Arch], AfterValidator(_two_to_four)]

    @property
    def label(self) -> str:
        """``resnet32+resnet32``: the group in study keys and file names."""
        return "+".join(self.peers)

    def to_dict(self) -> dict[str, Any]:
        return {"peers": list(self.peers)}


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


def _absolute_dirs(dirs: list[str]) -> list[str]:
    """Run dirs as absolute paths: the sweep file stored in the run dir must find them again when
    the sweep is resumed from another directory."""
    return [str(Path(d).expanduser().absolute()) for d in dirs]


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class WarmStartSpec:
    """Start every study from the best configs of finished studies with the same method and
    mode in earlier run dirs: after its paper default, each study enqueues their ``top_k`` best
    COMPLETE configs, mapped into its own space (``search.warmstart``)."""

    KEY_HINT: ClassVar[str] = ("e.g. warm_start: {from: [runs/cifar-r56], top_k: 3}: run dirs of "
                               "finished sweeps, and how many of their best configs each study "
                               "enqueues")
    from_: Annotated[list[Name], Field(alias="from", min_length=1,
                                       description="a non-empty list of run dirs of earlier "
                                                   "sweeps, e.g. [runs/cifar-r56]"),
                     AfterValidator(_absolute_dirs)]
    top_k: Annotated[Int, Field(ge=1, description="how many of the earlier studies' best configs "
                                                  "each study enqueues after its paper default")] = 3

    def to_dict(self) -> dict[str, Any]:
        return {"from": list(self.from_), "top_k": self.top_k}


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
                               "pairs, e.g. pairs: [{teacher: resnet32x4, student: resnet8x4}], "
                               "or peer groups for dml, e.g. groups: [{peers: [resnet32, "
                               "resnet32]}]; experiment settings such as epochs or dataset go "
                               "under base")
    name: Annotated[Str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                               description="a safe directory name: letters, digits, '.', '_' and "
                                           "'-', starting with a letter or digit")]
    storage_path: Annotated[Name, AfterValidator(_not_a_uri),
                            Field(description="a directory path")] = "./runs"
    pairs: Annotated[list[Pair], Field(description="a list of pairs, e.g. "
                                       "[{teacher: resnet32x4, student: resnet8x4}]")] = field(
        default_factory=list)
    # peer groups, each studied with the online methods of ``methods`` (dml)
    groups: Annotated[list[PeerGroup], Field(description="a list of peer groups, e.g. "
                                             "[{peers: [resnet32, resnet32]}]")] = field(
        default_factory=list)
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
    # earlier run dirs whose best configs every study tries first (after its paper default)
    warm_start: Annotated[WarmStartSpec | None,
                          Field(description="e.g. {from: [runs/cifar-r56], top_k: 3}")] = None
    # experiment trackers fed by Ray Tune's own logger callbacks (mgkd.catalog.trackers), e.g.
    # [mlflow]; each needs its Python package on the machine that runs `mgkd tune`
    callbacks: Annotated[list[Annotated[Name, one_of(TRACKER_NAMES)]], EMPTY_LIST_IF_NONE,
                         Field(description=f"a list of trackers from {', '.join(TRACKER_NAMES)}, "
                                           "e.g. [mlflow]")] = field(default_factory=list)
    # Ray's dashboard (http://127.0.0.1:8265) for a local Ray; off: it costs memory and a port
    ray_dashboard: Bool = False

    @model_validator(mode="after")
    def _check_pairs_and_groups(self) -> "SweepSpec":
        if not self.pairs and not self.groups:
            fail("pairs: a sweep needs pairs (teacher -> student), e.g. pairs: [{teacher: "
                 "resnet32x4, student: resnet8x4}], or peer groups for dml, e.g. groups: "
                 "[{peers: [resnet32, resnet32]}].")
        for i, group in enumerate(self.groups):
            first = next(j for j, other in enumerate(self.groups) if other.label == group.label)
            if first < i:
                fail(f"groups[{i}]: {group.label} repeats groups[{first}]; a group's studies are "
                     "keyed by its architectures, so list it once.")
        online = [name for name in self.methods
                  if name in METHOD_DEFAULTS and METHOD_DEFAULTS[name].online]
        distilled = [name for name in self.methods if name not in online]
        if online and not self.groups:
            fail(f"methods: {online[0]} trains peer groups, and the sweep has none; add groups: "
                 "[{peers: [ARCH, ARCH]}] or remove it from methods.")
        if self.groups and not online:
            fail(f"groups: peer groups train with an online method, and methods lists none; add "
                 f"dml to methods ({', '.join(self.methods)} distil teacher -> student pairs).")
        if distilled and not self.pairs:
            fail(f"methods: {distilled[0]} distils a teacher -> student pair, and the sweep has "
                 "none; add pairs or list only dml.")
        if self.pairs and not distilled:
            fail("pairs: the sweep lists only online methods (dml), which train groups, not pairs; "
                 "add a distillation method such as kd to methods or remove pairs.")
        return self

    @model_validator(mode="after")
    def _check_together(self) -> "SweepSpec":
        for i, pair in enumerate(self.pairs):
            first = next(j for j, other in enumerate(self.pairs) if other.label == pair.label)
            if first < i:
                fail(f"pairs[{i}]: {pair.teacher} -> {pair.student} repeats pairs[{first}]; a "
                     "pair's studies are keyed by its architectures, so list it once.")
        for i, name in enumerate(self.callbacks):
            if name in self.callbacks[:i]:
                fail(f"callbacks[{i}]: '{name}' is listed twice; list each tracker once.")
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
        warm = self.warm_start
        if warm is not None and warm.top_k + 1 > self.num_samples:
            fail(f"warm_start.top_k: {warm.top_k} configs after the paper default need "
                 f"{warm.top_k + 1} trials a study, but num_samples {self.num_samples} gives "
                 f"{self.num_samples}; set top_k to at most {self.num_samples - 1} or raise "
                 "num_samples.")
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
        return {**dataclasses.asdict(self), "pairs": [pair.to_dict() for pair in self.pairs],
                "warm_start": self.warm_start.to_dict() if self.warm_start else None,
                "groups": [group.to_dict() for group in self.groups]}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        """Parse a sweep mapping, checking its keys, types and ranges (ConfigError names the key)."""
        return _SCHEMA.parse(data)


_SCHEMA: Schema[SweepSpec] = Schema(SweepSpec, prefix="sweep")
PAIR_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Pair))
# Set per study by pairs / groups / methods / modes, so never in ``base``.
STUDY_KEYS: tuple[str, ...] = PAIR_KEYS + ("peers", "method", "mode")


def study_key(teacher: str, student: str, method: str, mode: str) -> str:
    """``<teacher>__<student>__<method>__<mode>``: a study's Optuna study name, the prefix of its
    trial dirs' names and a safe file name. A peer group's (``teacher`` empty, ``student`` its
    label): ``<peer>+<peer>__<method>__<mode>``."""
    if not teacher:
        return f"{student}__{method}__{mode}"
    return f"{teacher}__{student}__{method}__{mode}"


def split_study_key(key: str) -> tuple[str, str, str, str] | None:
    """``(teacher, student, method, mode)`` of a study key — for a peer group's ``("",
    "<peer>+<peer>", method, mode)`` —; None when ``key`` is not one."""
    parts = key.split("__")
    if len(parts) == 3 and all(parts) and "+" in parts[0]:
        return "", parts[0], parts[1], parts[2]
    if len(parts) != 4 or not all(parts):
        return None
    return parts[0], parts[1], parts[2], parts[3]


def config_study_key(config: dict[str, Any]) -> str:
    """The study key of an experiment config given as a dict (a pair's or a peer group's)."""
    peers = config.get("peers")
    if isinstance(peers, list):
        return study_key("", "+".join(map(str, peers)), str(config.get("method")),
                         str(config.get("mode")))
    return study_key(*(str(config.get(k)) for k in ("teacher", "student", "method", "mode")))


@dataclass(frozen=True)
class Study:
    """One Optuna study: a pair distilled with one method in one mode, or a peer group trained
    with an online method in one mode. ``base`` is the study's resolved experiment config (a
    trial changes only what its search space samples)."""

    pair: Pair | PeerGroup
    method: str
    mode: str
    base: ExperimentConfig

    @property
    def key(self) -> str:
        if isinstance(self.pair, PeerGroup):
            return study_key("", self.pair.label, self.method, self.mode)
        return study_key(self.pair.teacher, self.pair.student, self.method, self.mode)


def fail_sweep(key: str, problem: str) -> NoReturn:
    """Raise the one-paragraph error about sweep key ``key``."""
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


# ---- planning ----------------------------------------------------------------------------------
def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


def _base_error(err: ConfigError, study: str | None) -> ConfigError:
    """Re-word an ExperimentConfig error as one about ``sweep base.<key>``."""
    message = str(err)
    for inner, outer in _MESSAGE_KEYS:
        if message.startswith(inner):
            message = outer + message[len(inner):]
    match = _LEADING_KEY.fullmatch(message)
    key, problem = (f"base.{match[1]}", match[2]) if match else ("base", message)
    if study is not None:
        key += f" (in study {study}; base applies to every study)"
    return ConfigError(f"sweep {key}: {problem}")


def _check_names(spec: SweepSpec) -> None:
    for i, pair in enumerate(spec.pairs):
        for role in ("teacher", "student"):
            arch = getattr(pair, role)
            if arch not in MODEL_NAMES:
                fail_sweep(f"pairs[{i}].{role}", f"unknown architecture '{arch}'; allowed: "
                                                 f"{', '.join(MODEL_NAMES)}.")
    for i, group in enumerate(spec.groups):
        for j, arch in enumerate(group.peers):
            if arch not in MODEL_NAMES:
                fail_sweep(f"groups[{i}].peers[{j}]", f"unknown architecture '{arch}'; allowed: "
                                                      f"{', '.join(MODEL_NAMES)}.")
    for i, method in enumerate(spec.methods):
        if method not in METHOD_NAMES:
            fail_sweep(f"methods[{i}]",
                       f"unknown method '{method}'; allowed: {', '.join(METHOD_NAMES)}.")
    for i, mode in enumerate(spec.modes):
        if mode not in MODE_NAMES:
            fail_sweep(f"modes[{i}]", f"unknown mode '{mode}'; allowed: {', '.join(MODE_NAMES)}.")


def _study_config(spec: SweepSpec, pair: Pair | PeerGroup, method: str,
                  mode: str) -> ExperimentConfig:
    data = copy.deepcopy(spec.base)
    if isinstance(pair, PeerGroup):
        # base's teacher settings are for the sweep's pairs: a peer group has no teacher
        data = {k: v for k, v in data.items() if k not in TEACHER_KEYS}
        data.update(peers=list(pair.peers), method=method, mode=mode)
    else:
        data.update(teacher=pair.teacher, student=pair.student, method=method, mode=mode,
                    teacher_checkpoint=(None if pair.teacher_checkpoint is None
                                        else _absolute(pair.teacher_checkpoint)),
                    student_init=(None if pair.student_init is None
                                  else _absolute(pair.student_init)))
    data_dir = data.get("data_dir", ExperimentConfig().data_dir)
    if isinstance(data_dir, str):  # trials run in their own directories: no relative paths
        data["data_dir"] = _absolute(data_dir)
    if "cache_dir" not in data:
        data["cache_dir"] = str(spec.run_dir / "cache")
    elif isinstance(data["cache_dir"], str):
        data["cache_dir"] = _absolute(data["cache_dir"])
    return ExperimentConfig.from_dict(data)


def _check_base_keys(spec: SweepSpec) -> None:
    allowed = tuple(f.name for f in dataclasses.fields(ExperimentConfig) if f.name not in STUDY_KEYS)
    unknown = sorted(str(k) for k in spec.base if k not in allowed)
    if unknown:
        fail_sweep("base", f"unknown key(s) {unknown}; allowed keys: {', '.join(allowed)}.")
    first, method = _combinations(spec)[0]
    try:
        _study_config(spec, first, method, spec.modes[0])
    except ConfigError as err:
        raise _base_error(err, None) from None


def _combinations(spec: SweepSpec) -> list[tuple[Pair | PeerGroup, str]]:
    """Every (pair, method) with a distillation method, then every (group, method) with an
    online one."""
    online = {name for name in spec.methods if METHOD_DEFAULTS[name].online}
    return ([(pair, m) for pair in spec.pairs for m in spec.methods if m not in online]
            + [(group, m) for group in spec.groups for m in spec.methods if m in online])


def plan(spec: SweepSpec) -> list[Study]:
    """The sweep's studies: pairs x (distillation) methods x modes, in that order (pairs
    outermost), then groups x online methods x modes, each with its resolved base config (the
    sweep's objective, checked against the data set's task)."""
    _check_names(spec)
    _check_base_keys(spec)
    studies = []
    for pair, method in _combinations(spec):
        for mode in spec.modes:
            study = Study(pair=pair, method=method, mode=mode, base=ExperimentConfig())
            try:
                config = _study_config(spec, pair, method, mode)
            except ConfigError as err:
                raise _base_error(err, study.key) from None
            objective = check_objective(spec.objective, config.dataset, key="sweep objective")
            config = resolve(dataclasses.replace(config, objective=objective.name))
            studies.append(dataclasses.replace(study, base=config))
    return studies
