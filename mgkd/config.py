"""The experiment config: one flat schema for a trial, an exported best config and a final run.

Saved and loaded as YAML. ``None`` in a defaultable field (ce_weight, logit_weight, feature_weight,
lr) means "the method's / architecture's default"; ``resolve`` fills those in, so a saved
``config.yaml`` always holds the numbers that ran.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mgkd.errors import ConfigError
from mgkd.io import atomic_write_text, read_yaml_file

MODES = ("plain", "mag", "mas")
DEVICES = ("auto", "cpu", "cuda")
MAX_GRANULARITIES = 8
# Students RepDistiller trains with lr 0.01 instead of 0.05.
LOW_LR_ARCHS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")


@dataclass(frozen=True)
class Granularity:
    """One granularity level: a head squeezing the embedding to ``dim`` at temperature T."""

    dim: int
    temperature: float
    weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"dim": self.dim, "temperature": self.temperature, "weight": self.weight}


def paper_granularities() -> list[Granularity]:
    """The paper's two heads: 64 wide at T=2 and 256 wide at T=8, weight 1 each."""
    return [Granularity(64, 2.0, 1.0), Granularity(256, 8.0, 1.0)]


@dataclass
class ExperimentConfig:
    # the pair
    teacher: str = "resnet32x4"
    teacher_checkpoint: str | None = None  # None: train one (cached under cache_dir)
    teacher_epochs: int = 240
    teacher_seed: int = 0  # seed of the teacher's knowledge: teacher training and head training
    student: str = "resnet8x4"
    # data
    dataset: str = "cifar100"
    data_dir: str = "./data"
    data_options: dict[str, Any] = field(default_factory=dict)  # synthetic only
    val_fraction: float = 0.1
    split_seed: int = 0  # the train/val split; fixed across training seeds so val stays comparable
    train_subset: int | None = None
    # the loss
    method: str = "kd"
    mode: str = "mas"
    ce_weight: float | None = None
    logit_weight: float | None = None
    temperature: float = 4.0
    feature_weight: float | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    granularities: list[Granularity] = field(default_factory=paper_granularities)
    head_epochs: int = 30
    # optimisation
    epochs: int = 240
    batch_size: int = 64
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: list[float] = field(default_factory=lambda: [0.625, 0.75, 0.875])
    lr_decay: float = 0.1
    seed: int = 0
    # execution
    device: str = "auto"
    amp: bool = False  # bf16 autocast on CUDA
    channels_last: bool = False
    cache_dir: str = "~/.cache/mgkd"
    # selection (mgkd.objectives): None = the data set's default (val_acc; val_map for re-ID)
    objective: str | None = None

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "granularities":
                value = [g.to_dict() for g in value]
            elif isinstance(value, (list, dict)):
                value = _plain_copy(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        """Build and validate a config; unknown keys and bad values raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping of keys to values, got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; allowed keys: {', '.join(sorted(known))}.")
        values = {name: _coerce(name, value) for name, value in data.items()}
        config = cls(**values)
        validate(config)
        return config

    def replace(self, **changes: Any) -> "ExperimentConfig":
        return ExperimentConfig.from_dict({**self.to_dict(), **changes})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_copy(v) for v in value]
    return value


# ---- type coercion -----------------------------------------------------------------------------
_INT_KEYS = {"teacher_epochs", "teacher_seed", "split_seed", "head_epochs", "epochs", "batch_size",
             "seed"}
_FLOAT_KEYS = {"val_fraction", "temperature", "momentum", "weight_decay", "lr_decay"}
_OPTIONAL_FLOAT_KEYS = {"ce_weight", "logit_weight", "feature_weight", "lr"}
_STR_KEYS = {"teacher", "student", "dataset", "data_dir", "method", "mode", "device", "cache_dir"}
_BOOL_KEYS = {"amp", "channels_last"}


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ConfigError(f"{key}: expected an integer, got {value!r}.")
    return int(value)


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}.")
    if not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}.")
    return float(value)


def _coerce(key: str, value: Any) -> Any:
    if key in _INT_KEYS:
        return _as_int(key, value)
    if key in _FLOAT_KEYS:
        return _as_float(key, value)
    if key in _OPTIONAL_FLOAT_KEYS:
        return None if value is None else _as_float(key, value)
    if key in _STR_KEYS:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}.")
        return value
    if key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}.")
        return value
    if key == "teacher_checkpoint":
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"teacher_checkpoint: expected a file path or null, got {value!r}.")
        return value
    if key == "objective":
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"objective: expected a metric name or null, got {value!r}.")
        return value
    if key == "train_subset":
        return None if value is None else _as_int(key, value)
    if key in ("data_options", "method_options"):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of option names to values, got {value!r}.")
        return dict(value)
    if key == "lr_milestones":
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"lr_milestones: expected a list of fractions of epochs, got {value!r}.")
        return [_as_float("lr_milestones", v) for v in value]
    if key == "granularities":
        return _coerce_granularities(value)
    raise AssertionError(f"no coercion rule for config key {key}")  # a new field without a rule


def _coerce_granularities(value: Any) -> list[Granularity]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ConfigError("granularities: expected a list of {dim, temperature, weight} mappings, "
                          f"got {value!r}.")
    levels = []
    for i, item in enumerate(value):
        if isinstance(item, Granularity):
            levels.append(item)
            continue
        if not isinstance(item, dict):
            raise ConfigError(f"granularities[{i}]: expected a mapping with dim, temperature, weight; "
                              f"got {item!r}.")
        unknown = sorted(set(item) - {"dim", "temperature", "weight"})
        missing = sorted({"dim", "temperature"} - set(item))
        if unknown or missing:
            raise ConfigError(f"granularities[{i}]: unknown keys {unknown} / missing keys {missing}; "
                              "allowed: dim, temperature, weight (default 1).")
        levels.append(Granularity(dim=_as_int(f"granularities[{i}].dim", item["dim"]),
                                  temperature=_as_float(f"granularities[{i}].temperature",
                                                        item["temperature"]),
                                  weight=_as_float(f"granularities[{i}].weight",
                                                   item.get("weight", 1.0))))
    return levels


# ---- validation --------------------------------------------------------------------------------
def _check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: unknown value '{value}'; allowed: {', '.join(allowed)}.")


def _check_range(key: str, value: float | None, low: float, high: float, *,
                 low_open: bool = False) -> None:
    if value is None:
        return
    bad = value < low or value > high or (low_open and value == low)
    if bad:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{key}: {value} is out of range; allowed: {bracket}{low}, {high}].")


def validate(config: ExperimentConfig) -> None:
    """Reject unknown names and out-of-range values, naming the key and what is allowed."""
    from mgkd.data import DATASET_NAMES, validate_data_options
    from mgkd.methods import METHOD_NAMES, get_method
    from mgkd.models import MODEL_NAMES

    _check_choice("teacher", config.teacher, MODEL_NAMES)
    _check_choice("student", config.student, MODEL_NAMES)
    _check_choice("dataset", config.dataset, DATASET_NAMES)
    _check_choice("method", config.method, METHOD_NAMES)
    _check_choice("mode", config.mode, MODES)
    if config.device not in DEVICES and not config.device.startswith("cuda:"):
        raise ConfigError(f"device: unknown value '{config.device}'; allowed: auto, cpu, cuda, cuda:N.")
    validate_data_options(config.dataset, config.data_options)
    _check_objective(config)
    get_method(config.method).resolve_options(config.method_options, config.teacher, config.student)

    _check_range("val_fraction", config.val_fraction, 0.0, 0.5)
    if config.train_subset is not None:
        _check_range("train_subset", config.train_subset, 2, 10**9)
    for key in ("teacher_epochs", "head_epochs", "epochs"):
        _check_range(key, getattr(config, key), 1, 100_000)
    _check_range("batch_size", config.batch_size, 1, 65_536)
    for key in ("teacher_seed", "split_seed", "seed"):
        _check_range(key, getattr(config, key), 0, 2**31 - 1)
    for key in ("ce_weight", "logit_weight", "feature_weight"):
        _check_range(key, getattr(config, key), 0.0, 1e7)
    _check_range("temperature", config.temperature, 0.0, 100.0, low_open=True)
    _check_range("lr", config.lr, 0.0, 10.0, low_open=True)
    _check_range("momentum", config.momentum, 0.0, 0.999)
    _check_range("weight_decay", config.weight_decay, 0.0, 1.0)
    _check_range("lr_decay", config.lr_decay, 0.0, 1.0, low_open=True)
    milestones = config.lr_milestones
    if any(not 0.0 < m <= 1.0 for m in milestones) or milestones != sorted(set(milestones)):
        raise ConfigError(f"lr_milestones: {milestones} must be increasing fractions of epochs in (0, 1], "
                          "e.g. [0.625, 0.75, 0.875].")

    if len(config.granularities) > MAX_GRANULARITIES:
        raise ConfigError(f"granularities: {len(config.granularities)} levels; allowed: 0 to "
                          f"{MAX_GRANULARITIES}.")
    for i, level in enumerate(config.granularities):
        _check_range(f"granularities[{i}].dim", level.dim, 1, 4096)
        _check_range(f"granularities[{i}].temperature", level.temperature, 0.0, 100.0, low_open=True)
        _check_range(f"granularities[{i}].weight", level.weight, 0.0, 1e4)
    if config.mode == "mas" and config.logit_weight == 0.0:
        raise ConfigError("logit_weight: 0 with mode mas; the stable target enters through the logit "
                          "term, so mas would equal mag. Set logit_weight > 0 or use mode mag.")


def _check_objective(config: ExperimentConfig) -> None:
    """The objective must be one the data set's task can select on (None: its default)."""
    from mgkd.objectives import check_objective

    check_objective(config.objective, config.dataset, config.data_options)


# ---- defaults ----------------------------------------------------------------------------------
def default_lr(student: str) -> float:
    return 0.01 if student in LOW_LR_ARCHS else 0.05


def paper_logit_weight(method: str, mode: str) -> float:
    """The paper's logit-KD weight for ``method`` in ``mode``.

    plain is RepDistiller's baseline (``-a 0`` for feature methods): the method's own default. In
    mag and mas the paper's published runs (its ``scripts/cifar100_*.sh``) pass ``--div_weight 1.0``
    to every feature method, so a method whose own default is 0 gets a logit term of weight 1 (T 4)
    there; in mas a zero weight would also silently erase the stable target. kd keeps 0.2 / 0.8.
    """
    from mgkd.methods import get_method

    default = get_method(method).default_logit_weight
    if mode in ("mag", "mas") and default == 0.0:
        return 1.0
    return default


def resolve(config: ExperimentConfig) -> ExperimentConfig:
    """Fill every defaultable field with its value for this method, mode and pair."""
    from mgkd.methods import get_method

    method = get_method(config.method)
    options = method.resolve_options(config.method_options, config.teacher, config.student)
    changes = {
        "ce_weight": method.default_ce_weight if config.ce_weight is None else config.ce_weight,
        "logit_weight": (paper_logit_weight(config.method, config.mode) if config.logit_weight is None
                         else config.logit_weight),
        "feature_weight": (method.feature_weight_default(options) if config.feature_weight is None
                           else config.feature_weight),
        "lr": default_lr(config.student) if config.lr is None else config.lr,
        "method_options": options,
        "granularities": [] if config.mode == "plain" else config.granularities,
    }
    return config.replace(**changes)


def validation_size(config: ExperimentConfig) -> int:
    """Validation images a run of ``config`` selects on (0 with ``val_fraction: 0``); loads nothing."""
    from mgkd.data import validation_size as split_validation_size

    return split_validation_size(config.dataset, config.data_options, config.val_fraction,
                                 config.train_subset)


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
