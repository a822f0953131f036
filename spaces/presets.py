"""The named presets: which parameters a study searches and over what ranges.

A preset is a tuple of *parts*; each part builds its declarations from the study's base config, so
ranges are centred on the values that config resolves to for its method, mode and pair:

* granularity — ``num_granularities`` (int 1..MAX_LEVELS) and per level ``g{k}_dim`` (WIDTH_CHOICES),
  ``g{k}_temperature`` (TEMPERATURE_CHOICES), ``g{k}_weight`` (float 0.1..10, log); empty in mode plain.
* weights — ``ce_weight``, ``logit_weight``, ``feature_weight``: log-uniform over default/10 ..
  default*10 of the resolved default; ``temperature``: log-uniform 1..16. A weight whose resolved
  default is 0 (``logit_weight`` of a feature method in plain, ``feature_weight`` of kd) is left
  out: a log range cannot contain 0, and searching a term the method switches off would change the
  method. ``temperature`` is left out when nothing reads it (no logit term and no method option
  falling back to the config's T).
* optimiser — ``lr``: log-uniform over lr/5 .. lr*5 of the resolved lr; ``weight_decay``: log-uniform
  1e-5 .. 1e-3.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping

from mgkd.catalog.methods import method_defaults, mode_has_levels
from mgkd.config import ExperimentConfig
from spaces.names import (LEVEL_FIELDS, MAX_LEVELS, NUM_LEVELS, TEMPERATURE_CHOICES, WIDTH_CHOICES,
                          level_name)
from spaces.params import ParamSpec

Part = Callable[[ExperimentConfig], dict[str, ParamSpec]]

WEIGHT_FACTOR = 10.0  # loss weights span default/10 .. default*10
LR_FACTOR = 5.0  # lr spans lr/5 .. lr*5
LEVEL_WEIGHT_RANGE = (0.1, 10.0)
TEMPERATURE_RANGE = (1.0, 16.0)
WEIGHT_DECAY_RANGE = (1e-5, 1e-3)


def _log_float(name: str, low: float, high: float) -> ParamSpec:
    return ParamSpec(name, "float", low=low, high=high, log=True)


def _around(name: str, center: float, factor: float) -> dict[str, ParamSpec]:
    """A log range center/factor .. center*factor; nothing when the center is 0."""
    if center <= 0:
        return {}
    return {name: _log_float(name, center / factor, center * factor)}


def _level_specs(level: int) -> dict[str, ParamSpec]:
    specs = {
        "dim": ParamSpec(level_name(level, "dim"), "categorical", choices=WIDTH_CHOICES),
        "temperature": ParamSpec(level_name(level, "temperature"), "categorical",
                                 choices=TEMPERATURE_CHOICES),
        "weight": _log_float(level_name(level, "weight"), *LEVEL_WEIGHT_RANGE),
    }
    return {specs[field].name: specs[field] for field in LEVEL_FIELDS}


def granularity_part(base: ExperimentConfig) -> dict[str, ParamSpec]:
    """The granularity structure: level count and each level's width, temperature and weight."""
    if not mode_has_levels(base.mode):
        return {}
    params = {NUM_LEVELS: ParamSpec(NUM_LEVELS, "int", low=1, high=MAX_LEVELS)}
    for level in range(MAX_LEVELS):
        params.update(_level_specs(level))
    return params


def reads_temperature(base: ExperimentConfig) -> bool:
    """Whether the logit temperature ``T`` changes anything for this study's method and mode."""
    options = base.method_options
    falls_back_to_t = "temperature" in options and options["temperature"] is None
    return base.logit_weight > 0 or falls_back_to_t


def weights_part(base: ExperimentConfig) -> dict[str, ParamSpec]:
    """The loss weights and the logit temperature, centred on the study's resolved defaults."""
    params = _around("ce_weight", base.ce_weight, WEIGHT_FACTOR)
    params.update(_around("logit_weight", base.logit_weight, WEIGHT_FACTOR))
    if reads_temperature(base):
        params["temperature"] = _log_float("temperature", *TEMPERATURE_RANGE)
    if method_defaults(base.method).uses_feature_weight:
        params.update(_around("feature_weight", base.feature_weight, WEIGHT_FACTOR))
    return params


def optimiser_part(base: ExperimentConfig) -> dict[str, ParamSpec]:
    """SGD's learning rate (around the resolved lr) and weight decay."""
    params = _around("lr", base.lr, LR_FACTOR)
    params["weight_decay"] = _log_float("weight_decay", *WEIGHT_DECAY_RANGE)
    return params


PRESET_PARTS: Mapping[str, tuple[Part, ...]] = MappingProxyType({
    "granularity": (granularity_part,),
    "weights": (weights_part,),
    "full": (granularity_part, weights_part, optimiser_part),
})
PRESETS: tuple[str, ...] = tuple(PRESET_PARTS)
DEFAULT_PRESET = "full"


def preset_params(name: str, base: ExperimentConfig) -> dict[str, ParamSpec]:
    """The declarations of preset ``name`` for a study with this (resolved) base config."""
    params: dict[str, ParamSpec] = {}
    for part in PRESET_PARTS[name]:
        params.update(part(base))
    return params
