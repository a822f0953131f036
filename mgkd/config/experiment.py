"""The experiment config: one flat schema for a trial, an exported best config and a final run.

Saved and loaded as YAML. ``None`` in a defaultable field (ce_weight, logit_weight, feature_weight,
lr, task, objective) means "the method's / architecture's / data set's default". :func:`resolve`
is the one place those are filled in (and plain mode's levels dropped); runs, sweeps and the
search spaces work on the resolved form, so a saved ``config.yaml`` always holds the numbers
that ran. A config is validated once, when it is built from data
(:meth:`ExperimentConfig.from_dict`, :meth:`~ExperimentConfig.replace`); resolving it validates
nothing again.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import AfterValidator, ConfigDict, Field, model_validator, with_config

from mgkd.catalog.bank import DEFAULT_BANK_BUDGET_GB, TEACHER_BANK_SETTINGS
from mgkd.catalog.datasets import DATASET_NAMES, dataset_task, validate_data_options
from mgkd.catalog.methods import (MAX_PEERS, METHOD_NAMES, MIN_PEERS, MODE_NAMES,
                                  method_defaults, mode_has_levels, paper_logit_weight)
from mgkd.catalog.models import MODEL_NAMES, default_lr
from mgkd.catalog.objectives import check_objective
from mgkd.catalog.tasks import REID, REID_DISTANCES, TASK_NAMES
from mgkd.catalog.teacher_recipes import TEACHER_RECIPE_NAMES, TEACHER_RECIPES
from mgkd.config.execution import graphs_refusal
from mgkd.config.validation import (EMPTY_LIST_IF_NONE, AutoBool, AutoCount, Bool, Float, Int,
                                    Options, Schema, Str, fail, one_of)
from mgkd.errors import ConfigError
from mgkd.io import atomic_write_text, read_yaml_file

MAX_GRANULARITIES = 8

Epochs = Annotated[Int, Field(ge=1, le=100_000)]
Seed = Annotated[Int, Field(ge=0, le=2**31 - 1)]
Temperature = Annotated[Float, Field(gt=0.0, le=100.0)]
Weight = Annotated[Float | None, Field(ge=0.0, le=1e7)]


def _check_milestones(milestones: list[float]) -> list[float]:
    if any(not 0.0 < m <= 1.0 for m in milestones) or milestones != sorted(set(milestones)):
        fail(f"{milestones} must be increasing fractions of epochs in (0, 1], e.g. "
             "[0.625, 0.75, 0.875].")
    return milestones


def peer_count_problem(peers: list[str]) -> str:
    """What is wrong with a peer group of this many architectures ('' when nothing)."""
    if MIN_PEERS <= len(peers) <= MAX_PEERS:
        return ""
    return (f"{len(peers)} peer(s); a peer group has {MIN_PEERS} to {MAX_PEERS} architectures, "
            "e.g. peers: [resnet32, resnet32].")


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class Granularity:
    """One granularity level: a head squeezing the embedding to ``dim`` at temperature T."""

    KEY_HINT: ClassVar[str] = "a level is {dim, temperature, weight (default 1)}"
    dim: Annotated[Int, Field(ge=1, le=4096)]
    temperature: Temperature
    weight: Annotated[Float, Field(ge=0.0, le=1e4)] = 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def paper_granularities() -> list[Granularity]:
    """The paper's two heads: 64 wide at T=2 and 256 wide at T=8, weight 1 each."""
    return [Granularity(64, 2.0, 1.0), Granularity(256, 8.0, 1.0)]


@with_config(ConfigDict(extra="forbid"))
@dataclass
class ExperimentConfig:
    # the pair
    teacher: Annotated[Str, one_of(MODEL_NAMES)] = "resnet32x4"
    # None: train one (cached under cache_dir)
    teacher_checkpoint: Annotated[Str | None, Field(description="a file path or null")] = None
    teacher_epochs: Epochs = 240
    teacher_seed: Seed = 0  # seed of the teacher's knowledge: teacher training and head training
    student: Annotated[Str, one_of(MODEL_NAMES)] = "resnet8x4"
    # or, for an online study (method dml), a peer group trained together from scratch with no
    # teacher: 2 to 4 architectures (teacher and student are then left out)
    peers: Annotated[list[Annotated[Str, one_of(MODEL_NAMES)]] | None,
                     Field(description="a list of 2 to 4 architectures or null")] = None
    # data
    dataset: Annotated[Str, one_of(DATASET_NAMES)] = "cifar100"
    data_dir: Str = "./data"
    data_options: Options = field(default_factory=dict)  # synthetic only
    val_fraction: Annotated[Float, Field(ge=0.0, le=0.5)] = 0.1
    split_seed: Seed = 0  # the train/val split; fixed across training seeds so val stays comparable
    train_subset: Annotated[Int, Field(ge=2, le=10**9)] | None = None
    # the loss
    method: Annotated[Str, one_of(METHOD_NAMES)] = "kd"
    mode: Annotated[Str, one_of(MODE_NAMES)] = "mas"
    ce_weight: Weight = None
    logit_weight: Weight = None
    temperature: Temperature = 4.0
    feature_weight: Weight = None
    method_options: Options = field(default_factory=dict)
    granularities: Annotated[list[Granularity], EMPTY_LIST_IF_NONE,
                             Field(max_length=MAX_GRANULARITIES)] = field(
        default_factory=paper_granularities)
    head_epochs: Epochs = 30
    # optimisation
    epochs: Epochs = 240
    batch_size: Annotated[Int, Field(ge=1, le=65_536)] = 64
    lr: Annotated[Float | None, Field(gt=0.0, le=10.0)] = None
    momentum: Annotated[Float, Field(ge=0.0, le=0.999)] = 0.9
    weight_decay: Annotated[Float, Field(ge=0.0, le=1.0)] = 5e-4
    lr_milestones: Annotated[list[Float], AfterValidator(_check_milestones)] = field(
        default_factory=lambda: [0.625, 0.75, 0.875])
    lr_decay: Annotated[Float, Field(gt=0.0, le=1.0)] = 0.1
    seed: Seed = 0
    # execution
    device: Annotated[Str, Field(pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
                                 description="auto, cpu, cuda or cuda:N")] = "auto"
    # how steps execute (mgkd.config.execution): auto = on for CUDA, off on the CPU
    amp: AutoBool = "auto"  # bf16 autocast (CUDA only)
    channels_last: AutoBool = "auto"
    # record each training step as one CUDA graph; auto: on GPUs for capturable methods
    cuda_graphs: AutoBool = False
    # auto: 1024 CIFAR-sized images per batch on a GPU, the training batch size on the CPU
    eval_batch_size: AutoCount = "auto"
    # let cuDNN time its algorithms for the run's fixed shapes (CUDA only); auto: on for CUDA
    cudnn_benchmark: AutoBool = False
    cache_dir: Str = "~/.cache/mgkd"
    # the teacher view bank (mgkd.catalog.bank): the teacher's outputs for every training image
    # and view, computed once; auto = float16 where it applies, pays and fits the budget
    teacher_bank: Annotated[Str, one_of(TEACHER_BANK_SETTINGS)] = "auto"
    teacher_bank_budget_gb: Annotated[Float, Field(ge=0.0, le=1e6)] = DEFAULT_BANK_BUDGET_GB
    # the task: null = the data set's (classification; reid for market1501, dukemtmcreid, msmt17)
    task: Annotated[Str, one_of(TASK_NAMES)] | None = None
    # what selects the best epoch / trial (mgkd.catalog.objectives): null = the task's
    # (val_acc; val_map)
    objective: Annotated[Str | None, Field(description="val_acc, val_map, val_rank1 or null")] = None
    # a weights file that initialises the student's backbone (e.g. ImageNet weights); null: random
    student_init: Annotated[Str | None, Field(description="a file path or null")] = None
    # the same for a teacher this run trains (not with teacher_checkpoint); null: random
    teacher_init: Annotated[Str | None, Field(description="a file path or null")] = None
    # how a teacher this run trains is trained (mgkd.catalog.teacher_recipes)
    teacher_recipe: Annotated[Str, one_of(TEACHER_RECIPE_NAMES)] = "default"
    # re-ID evaluation (defaults: torchreid's): average each image's embedding with its mirror's,
    # L2-normalise embeddings, the distance, k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)
    eval_flip: Bool = False
    eval_normalize: Bool = False
    eval_distance: Annotated[Str, one_of(REID_DISTANCES)] = "euclidean"
    rerank: Bool = False

    @model_validator(mode="after")
    def _mas_needs_a_logit_term(self) -> "ExperimentConfig":
        if self.mode == "mas" and self.logit_weight == 0.0:
            fail("logit_weight: 0 with mode mas; the stable target enters through the logit term, "
                 "so mas would equal mag. Set logit_weight > 0 or use mode mag.")
        return self

    @model_validator(mode="after")
    def _peers_go_with_an_online_method(self) -> "ExperimentConfig":
        online = method_defaults(self.method).online
        if self.peers is None:
            if online:
                fail(f"method: {self.method} trains a peer group, not a teacher -> student pair; "
                     "give peers: [ARCH, ARCH, ...] (2 to 4 architectures) and leave teacher and "
                     "student out.")
            return self
        if peer_count_problem(self.peers):
            fail(f"peers: {peer_count_problem(self.peers)}")
        if not online:
            fail(f"peers: a peer group trains with an online method (dml), and method is "
                 f"{self.method}; set method: dml, or give teacher and student instead of peers.")
        defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
        for key in TEACHER_KEYS:
            if getattr(self, key) != defaults[key]:
                fail(f"{key}: a peer group has no teacher (its peers train together from "
                     f"scratch), so {key} does not apply; leave it out.")
        return self

    @model_validator(mode="after")
    def _teacher_init_needs_a_trained_teacher(self) -> "ExperimentConfig":
        if self.teacher_init and self.teacher_checkpoint:
            fail("teacher_init: it initialises a teacher the run trains, but teacher_checkpoint "
                 "names a finished one, so no teacher is trained. Remove teacher_init, or set "
                 "teacher_checkpoint: null to train a teacher from the teacher_init weights.")
        return self

    @model_validator(mode="after")
    def _cuda_graphs_can_be_honoured(self) -> "ExperimentConfig":
        # Before the run knows its device only device: cpu rules a GPU out; the run checks again.
        refusal = graphs_refusal(self.cuda_graphs, on_gpu=self.device != "cpu",
                                 cpu_because="device is cpu",
                                 capture_blocker=method_defaults(self.method).capture_blocker,
                                 what=f"method {self.method}")
        if refusal:
            fail(refusal)
        return self

    # ---- the pair or peer group --------------------------------------------------------------
    @property
    def label(self) -> str:
        """``resnet32x4->resnet8x4`` for a pair, ``dml: resnet32+resnet32`` for a peer group."""
        if self.peers is not None:
            return f"{self.method}: {'+'.join(self.peers)}"
        return f"{self.teacher}->{self.student}"

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data; a pair's config has no ``peers``, a peer group's no teacher, no student
        and no teacher settings (they are at their defaults, which nothing reads)."""
        data = dataclasses.asdict(self)
        if self.peers is None:
            del data["peers"]
        else:
            for key in ("teacher", "student", *TEACHER_KEYS):
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        """Build and validate a config; unknown keys and bad values raise ConfigError."""
        if isinstance(data, dict) and data.get("peers") is not None:
            given = [key for key in ("teacher", "student") if key in data]
            if given:
                raise ConfigError(f"{given[0]}: a config gives either a teacher -> student pair or "
                                  f"peers (an online peer group), not both; remove "
                                  f"{' and '.join(given)}, or remove peers.")
        config = _SCHEMA.parse(data)
        options = validate_data_options(config.dataset, config.data_options)
        method_defaults(config.method).resolve_options(config.method_options, config.teacher,
                                                       config.student)
        _check_task(config, options)
        return config

    @classmethod
    def from_validated(cls, data: dict[str, Any]) -> "ExperimentConfig":
        """Rebuild a config from ``to_dict()`` of one validated before (a sweep trial's config,
        validated when its searcher made it), without validating it again."""
        levels = [Granularity(**level) for level in data.get("granularities") or []]
        return cls(**{**data, "granularities": levels})

    def replace(self, **changes: Any) -> "ExperimentConfig":
        """This config with ``changes`` (plain data, as in a YAML file), validated."""
        return ExperimentConfig.from_dict({**self.to_dict(), **changes})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_SCHEMA: Schema[ExperimentConfig] = Schema(ExperimentConfig)
# What only a teacher -> student run reads: a peer group leaves each at its default.
TEACHER_KEYS: tuple[str, ...] = ("teacher_checkpoint", "teacher_epochs", "teacher_seed",
                                  "teacher_init", "teacher_recipe", "head_epochs", "student_init")
REID_EVAL_KEYS: tuple[str, ...] = ("eval_flip", "eval_normalize", "eval_distance", "rerank")


def _check_task(config: ExperimentConfig, options: dict[str, Any]) -> None:
    """The task and objective must fit the data set; a re-ID batch holds whole identities."""
    task = dataset_task(config.dataset)
    if config.task is not None and config.task != task:
        raise ConfigError(f"task: {config.task!r} does not fit data set {config.dataset}, a {task} "
                          f"data set; set task: {task} or leave it out (it follows the data set).")
    check_objective(config.objective, config.dataset)
    if config.peers is not None and task == REID:
        raise ConfigError(f"peers: online peer groups train on classification data sets, and "
                          f"{config.dataset} is a re-ID data set; distil a teacher -> student "
                          "pair there.")
    if task != REID:
        defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
        changed = [key for key in REID_EVAL_KEYS if getattr(config, key) != defaults[key]]
        if changed:
            raise ConfigError(f"{changed[0]}: re-ID evaluation options ({', '.join(REID_EVAL_KEYS)})"
                              f" apply to re-ID data sets only, and {config.dataset} is a {task} "
                              f"data set; leave {', '.join(changed)} out.")
    recipe = TEACHER_RECIPES[config.teacher_recipe]
    if task not in recipe.tasks:
        raise ConfigError(f"teacher_recipe: {config.teacher_recipe} is written for "
                          f"{', '.join(recipe.tasks)} data sets, and {config.dataset} is a {task} "
                          "data set; use teacher_recipe: default.")
    if config.teacher_recipe != "default" and config.teacher_checkpoint:
        raise ConfigError(f"teacher_recipe: {config.teacher_recipe} trains a teacher, but "
                          "teacher_checkpoint names a finished one; remove teacher_recipe or set "
                          "teacher_checkpoint: null.")
    instances = options.get("instances")
    if task == REID and instances and config.batch_size % instances:
        raise ConfigError(f"batch_size: {config.batch_size} is not a multiple of "
                          f"data_options.instances ({instances}); a re-ID batch holds P identities "
                          f"x {instances} images each. Use e.g. batch_size: "
                          f"{max(1, config.batch_size // instances) * instances}.")


# ---- defaults ----------------------------------------------------------------------------------
def resolve(config: ExperimentConfig) -> ExperimentConfig:
    """Fill every defaultable field with its value for this method, mode, pair and data set, and
    drop the levels of a mode without them. Validates nothing again (``config`` is valid, and so
    are the defaults); resolving a resolved config returns an equal one."""
    method = method_defaults(config.method)
    options = method.resolve_options(config.method_options, config.teacher, config.student)
    return dataclasses.replace(
        config,
        ce_weight=method.ce_weight if config.ce_weight is None else config.ce_weight,
        logit_weight=(paper_logit_weight(config.method, config.mode)
                      if config.logit_weight is None else config.logit_weight),
        feature_weight=(method.feature_weight_default(options) if config.feature_weight is None
                        else config.feature_weight),
        lr=(default_lr(config.peers[0] if config.peers else config.student) if config.lr is None
            else config.lr),
        method_options=options,
        granularities=list(config.granularities) if mode_has_levels(config.mode) else [],
        task=dataset_task(config.dataset),
        objective=check_objective(config.objective, config.dataset).name)


def default_config(teacher: str, student: str, dataset: str, **overrides: Any) -> ExperimentConfig:
    """A complete, resolved config for a pair with every default filled in."""
    base = {"teacher": teacher, "student": student, "dataset": dataset, **overrides}
    return resolve(ExperimentConfig.from_dict(base))


# ---- files and overrides -----------------------------------------------------------------------
def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    data = read_yaml_file(path, "config", "write one with "
                          "`mgkd config --teacher A --student B --dataset D > FILE`.")
    try:
        return ExperimentConfig.from_dict(data or {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    atomic_write_text(Path(path), config.to_yaml())


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["epochs=5", "granularities=[{dim: 32, temperature: 2}]"]`` -> a dict; values are YAML."""
    overrides: dict[str, Any] = {}
    given: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set epochs=10.")
        key = key.strip()
        if key in given:
            raise ConfigError(f"--set {key}: the key is given twice ({given[key]!r} and {pair!r}); "
                              "give each key once.")
        given[key] = pair
        try:
            overrides[key] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML ({err}).") from None
    return overrides


def apply_overrides(config: ExperimentConfig, pairs: list[str] | None) -> ExperimentConfig:
    overrides = parse_overrides(pairs)
    return config.replace(**overrides) if overrides else config
