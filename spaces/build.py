"""``build_space``: a search space from a preset name or a YAML mapping of declarations.

Spec forms::

    "weights"                                   # a preset
    {preset: weights, lr: {type: float, low: 0.01, high: 0.1, log: true}}
    {g*_dim: {type: categorical, choices: [32, 64]}, g0_weight: {type: float, low: 0.5, high: 2}}

A declaration overrides the preset's declaration of that name or adds a new one; ``g*_<field>``
declares that field for every level and yields to a per-level declaration. Preset levels that the
(possibly narrowed) level count can never reach are dropped; declared ones are an error.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from mgkd.catalog.methods import mode_has_levels
from mgkd.config import ExperimentConfig, resolve
from mgkd.errors import ConfigError
from spaces.names import (MAX_LEVELS, NUM_LEVELS, is_granularity_name, level_name, parse_level_name,
                          wildcard_field)
from spaces.params import ParamSpec, parse_param
from spaces.presets import DEFAULT_PRESET, PRESETS, preset_params
from spaces.space import SearchSpace
from spaces.validate import check_num_levels, max_levels

PRESET_KEY = "preset"


def _preset_name(value: Any) -> str:
    if value is None:
        return DEFAULT_PRESET
    if not isinstance(value, str) or value not in PRESETS:
        raise ConfigError(f"space.{PRESET_KEY}: unknown preset {value!r}; allowed: {', '.join(PRESETS)}.")
    return value


def _split_spec(spec: str | Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(preset name, declarations) of a spec."""
    if spec is None or isinstance(spec, str):
        return _preset_name(spec), {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"space: expected a preset name ({', '.join(PRESETS)}) or a mapping of "
                          f"parameter declarations, got {spec!r}.")
    bad_keys = [key for key in spec if not isinstance(key, str)]
    if bad_keys:
        raise ConfigError(f"space: parameter names must be strings, got {bad_keys}.")
    declarations = {key: value for key, value in spec.items() if key != PRESET_KEY}
    return _preset_name(spec.get(PRESET_KEY)), declarations


def _parse_declarations(declarations: Mapping[str, Any]) -> dict[str, ParamSpec]:
    """Parsed declarations, ``g*_<field>`` expanded to every level (per-level ones win)."""
    expanded: dict[str, ParamSpec] = {}
    specific: dict[str, ParamSpec] = {}
    for key, declaration in declarations.items():
        spec = parse_param(key, declaration)
        field = wildcard_field(key)
        if field is None:
            specific[key] = spec
            continue
        for level in range(MAX_LEVELS):
            expanded[level_name(level, field)] = dataclasses.replace(spec, name=level_name(level, field))
    return {**expanded, **specific}


def _drop_unreachable(base: ExperimentConfig, params: dict[str, ParamSpec],
                      keep: set[str]) -> dict[str, ParamSpec]:
    """Remove level params (other than those in ``keep``) that no trial can reach."""
    if NUM_LEVELS in params:
        check_num_levels(params[NUM_LEVELS])
    reach = max_levels(base, params)
    return {name: spec for name, spec in params.items()
            if name in keep or (parsed := parse_level_name(name)) is None or parsed[0] < reach}


def build_space(spec: str | Mapping[str, Any] | None, base: ExperimentConfig) -> SearchSpace:
    """The search space of one study: a preset (default "full") plus inline declarations.

    Raises ConfigError naming the key and the allowed values for any bad spec.
    """
    base = resolve(base)  # every part below reads the study's resolved defaults
    preset, declarations = _split_spec(spec)
    if not mode_has_levels(base.mode):
        # One sweep-wide space serves every mode: a plain study (no granularity terms) simply
        # leaves the granularity declarations to its mag/mas siblings.
        declarations = {k: v for k, v in declarations.items() if not is_granularity_name(k)}
    declared = _parse_declarations(declarations)
    params = {**preset_params(preset, base), **declared}
    explicit = {key for key in declarations if wildcard_field(key) is None}
    params = _drop_unreachable(base, params, keep=explicit)
    return SearchSpace(base, params, preset=preset)
