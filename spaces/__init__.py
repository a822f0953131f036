"""Search spaces for Optuna: presets, spaces declared in YAML, and the flat <-> nested config mapping.

``build_space(spec, base)`` gives the ``SearchSpace`` of one study; its ``sample`` is the define-by-run
function, ``to_config`` turns a trial's flat params into the validated, resolved trial config, and
``head_levels`` lists every (width, temperature) head the head bank must hold for it.
"""
from spaces.build import build_space
from spaces.names import (MAX_LEVELS, NUM_LEVELS, TEMPERATURE_CHOICES, WIDTH_CHOICES, level_name,
                          parse_level_name)
from spaces.params import PARAM_TYPES, ParamSpec, parse_param
from spaces.presets import DEFAULT_PRESET, PRESETS, preset_params
from spaces.space import SearchSpace
from spaces.transfer import Fitted, fit_params

__all__ = ["DEFAULT_PRESET", "Fitted", "MAX_LEVELS", "NUM_LEVELS", "PARAM_TYPES", "PRESETS", "ParamSpec",
           "SearchSpace", "TEMPERATURE_CHOICES", "WIDTH_CHOICES", "build_space", "fit_params", "level_name",
           "parse_level_name", "parse_param", "preset_params"]
