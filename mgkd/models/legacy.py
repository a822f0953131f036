"""Checkpoints written before the zoo took RepDistiller's parameter names.

Earlier versions named every model ``stem.* / stages.* / head.* / classifier.*``. Both namings list
a model's tensors in the same order (module registration order: stem, the stage units in order —
within a residual unit the branch convs and BNs, then the shortcut — head, classifier), so an old
state dict converts by position: when the sequence of shapes is identical, the i-th old tensor
becomes the i-th new one. Conversion happens in memory on load; files are never rewritten (a
teacher file's bytes key its head-bank entries).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from mgkd.errors import ConfigError

log = logging.getLogger(__name__)

LEGACY_PREFIXES = ("stem.", "stages.", "head.", "classifier.")


def is_legacy_state(state: Mapping[str, object]) -> bool:
    """True when every key uses the old naming (and it has a stem and stages)."""
    keys = list(state)
    return (bool(keys) and all(isinstance(k, str) and k.startswith(LEGACY_PREFIXES) for k in keys)
            and any(k.startswith("stem.") for k in keys)
            and any(k.startswith("stages.") for k in keys))


def convert_legacy_state(state: Mapping[str, torch.Tensor], model: nn.Module, *,
                         source: str = "checkpoint") -> OrderedDict[str, torch.Tensor]:
    """``state`` (old naming) renamed positionally to ``model``'s names.

    Raises ConfigError when the number of tensors or any shape differs: then the file holds
    another architecture (or class count) than ``model``."""
    target = model.state_dict()
    old = list(state.items())
    new_names = list(target)
    if len(old) != len(new_names):
        raise ConfigError(
            f"{source}: its {len(old)} tensors in the old naming cannot become this model's "
            f"{len(new_names)} tensors; it holds another architecture.")
    converted: OrderedDict[str, torch.Tensor] = OrderedDict()
    for index, ((old_name, value), new_name) in enumerate(zip(old, new_names)):
        want = tuple(target[new_name].shape)
        have = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        if have != want:
            raise ConfigError(
                f"{source}: tensor {index} in the old naming ({old_name}, shape {have}) does not "
                f"fit {new_name} (shape {want}); it holds another architecture or class count.")
        converted[new_name] = value
    return converted


def upgrade_state(state: Mapping[str, torch.Tensor], model: nn.Module, *,
                  source: str = "checkpoint") -> Mapping[str, torch.Tensor]:
    """``state`` unchanged when it already uses ``model``'s names, else converted from the old
    naming with one log line. A state dict that is neither is returned as it is (the caller's
    strict load then reports the mismatch)."""
    if set(state) == set(model.state_dict()) or not is_legacy_state(state):
        return state
    converted = convert_legacy_state(state, model, source=source)
    log.info("%s: converted %d tensors from the old stem/stages naming to %s's RepDistiller names "
             "(in memory; the file is unchanged)", source, len(converted), type(model).__name__)
    return converted
