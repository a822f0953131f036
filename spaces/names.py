"""The flat parameter names a search space may declare, and what each maps to.

Three kinds of names:

* ``num_granularities`` — how many granularity levels a trial uses;
* ``g{k}_dim`` / ``g{k}_temperature`` / ``g{k}_weight`` for ``k < MAX_LEVELS`` — one field of level k
  (``g*_dim`` etc. in a declaration stands for that field of every level);
* the searchable numeric keys of ``ExperimentConfig`` (``ce_weight``, ``lr``, ``momentum`` ...).
"""
from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType
from typing import Mapping

from mgkd.config import MAX_GRANULARITIES, ExperimentConfig
from mgkd.config.validation import value_type

# Discrete, so the head bank (one trained head per teacher, width and temperature) stays finite.
WIDTH_CHOICES: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
TEMPERATURE_CHOICES: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
MAX_LEVELS = 4  # the most levels a search space samples (the config itself allows MAX_GRANULARITIES)
assert MAX_LEVELS <= MAX_GRANULARITIES

NUM_LEVELS = "num_granularities"
LEVEL_FIELDS: tuple[str, ...] = ("dim", "temperature", "weight")
# Level fields that pick a head of the bank: they must be categorical.
HEAD_FIELDS: frozenset[str] = frozenset({"dim", "temperature"})
LEVEL_WILDCARD = "g*"

_LEVEL_NAME = re.compile(r"^g(\d+)_(dim|temperature|weight)$")

# Numeric config keys a study keeps fixed, and why: they change what trials share or are compared on.
STUDY_FIXED_KEYS: Mapping[str, str] = MappingProxyType({
    "teacher_epochs": "it changes the teacher every trial distils from (set it in the base config)",
    "teacher_seed": "it changes the teacher and its head bank (set it in the base config)",
    "head_epochs": "it changes the shared head bank (set it in the base config)",
    "split_seed": "it changes the validation split trials are compared on",
    "val_fraction": "it changes the validation split trials are compared on",
    "train_subset": "it changes the training data trials are compared on",
    "epochs": "it is the study's budget, which the early stopper's rungs are built on",
})



def _numeric_keys(kind: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(ExperimentConfig)
                     if value_type(ExperimentConfig, f.name) is kind and f.name not in STUDY_FIXED_KEYS)


INT_CONFIG_KEYS: frozenset[str] = _numeric_keys(int)
FLOAT_CONFIG_KEYS: frozenset[str] = _numeric_keys(float)
CONFIG_KEYS: frozenset[str] = INT_CONFIG_KEYS | FLOAT_CONFIG_KEYS


def level_name(level: int, field: str) -> str:
    """``level_name(1, "dim") == "g1_dim"``."""
    return f"g{level}_{field}"


def split_level_name(name: str) -> tuple[int, str] | None:
    """``"g1_dim"`` -> ``(1, "dim")`` for a level of any index (a flattened config's column may
    name any of its levels); None for any other name."""
    match = _LEVEL_NAME.match(name)
    if match is None or match.group(1) != str(int(match.group(1))):
        return None
    return int(match.group(1)), match.group(2)


def parse_level_name(name: str) -> tuple[int, str] | None:
    """``"g1_dim"`` -> ``(1, "dim")``; None for any other name (also for levels >= MAX_LEVELS,
    which no search space samples)."""
    parsed = split_level_name(name)
    return parsed if parsed is not None and parsed[0] < MAX_LEVELS else None


def wildcard_field(name: str) -> str | None:
    """``"g*_dim"`` -> ``"dim"``; None for any other name."""
    prefix = LEVEL_WILDCARD + "_"
    if name.startswith(prefix) and name[len(prefix):] in LEVEL_FIELDS:
        return name[len(prefix):]
    return None


def is_granularity_name(name: str) -> bool:
    return name == NUM_LEVELS or parse_level_name(name) is not None or wildcard_field(name) is not None


def allowed_names() -> str:
    """Every declarable name, for error messages."""
    levels = f"g0..g{MAX_LEVELS - 1}_{{{', '.join(LEVEL_FIELDS)}}}"
    wildcards = ", ".join(f"{LEVEL_WILDCARD}_{f}" for f in LEVEL_FIELDS)
    return f"{NUM_LEVELS}, {levels}, {wildcards}, {', '.join(sorted(CONFIG_KEYS))}"


def canonical_order(names: list[str]) -> list[str]:
    """num_granularities first, then levels in order (dim, temperature, weight), then the rest as given.

    ``sample`` suggests in this order, so the level count is known before any level is sampled;
    plots and reports show parameters in it.
    """
    def key(item: tuple[int, str]) -> tuple[int, int, int, int]:
        position, name = item
        if name == NUM_LEVELS:
            return (0, 0, 0, position)
        parsed = split_level_name(name)
        if parsed is not None:
            return (1, parsed[0], LEVEL_FIELDS.index(parsed[1]), position)
        return (2, 0, 0, position)
    return [name for _, name in sorted(enumerate(names), key=key)]
