"""Zoo weights from a checkpoint: find the state dict in it, convert the old naming, load strictly,
and explain a file of another architecture or class count in one paragraph."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mgkd.errors import ConfigError
from mgkd.models import MODELS, create_model
from mgkd.models.identify import guess_architecture
from mgkd.models.legacy import upgrade_state


def _is_state_dict(value: Any) -> bool:
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def state_dict_of(raw: Any, source: str) -> Mapping[str, torch.Tensor]:
    """The model state dict in a loaded checkpoint: ``raw["model"]`` (RepDistiller, mdistiller and
    this project), ``raw["state_dict"]`` (this project's older files) or ``raw`` itself."""
    if isinstance(raw, Mapping):
        for key in ("model", "state_dict"):
            if _is_state_dict(raw.get(key)):
                return raw[key]
        if _is_state_dict(raw):
            return raw
        keys = ", ".join(map(str, list(raw)[:8])) or "none"
        raise ConfigError(f"{source} holds no model state dict (its top-level keys: {keys}); give "
                          "a state dict or a checkpoint that stores one under 'model'.")
    raise ConfigError(f"{source} holds a {type(raw).__name__}, not a model state dict; give a "
                      "state dict or a checkpoint that stores one under 'model'.")


DATA_PARALLEL_PREFIX = "module."


def strip_data_parallel(state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """``state`` without the ``module.`` prefix that ``nn.DataParallel`` /
    ``DistributedDataParallel`` put on every name (torchreid saves such files); unchanged when
    not every name carries it."""
    if state and all(name.startswith(DATA_PARALLEL_PREFIX) for name in state):
        return {name[len(DATA_PARALLEL_PREFIX):]: value for name, value in state.items()}
    return state


def mismatch_message(state: Mapping[str, torch.Tensor], arch: str, num_classes: int, source: str,
                     key: str) -> str:
    """One paragraph: the file does not fit ``arch`` at ``num_classes``, what it most likely
    holds (judged from its tensor shapes against every zoo model) and what to change."""
    head = f"{source} does not fit a {arch} with {num_classes} classes"
    guess = guess_architecture(state, MODELS)
    if guess is None:
        return (f"{head}: it holds no linear classifier, so it is not a zoo model's state dict; "
                f"give a {arch} checkpoint.")
    if guess.exact and guess.arch == arch:
        return (f"{head}: {guess.describe()}; use a data set with {guess.num_classes} classes or "
                f"a {arch} checkpoint trained on {num_classes} classes.")
    if guess.exact:
        return (f"{head}: {guess.describe()}; set {key}: {guess.arch}"
                + ("" if guess.num_classes == num_classes
                   else f" (on a data set with {guess.num_classes} classes)")
                + f", or give a {arch} checkpoint.")
    return (f"{head}: {guess.describe()}, so it is probably not one of the zoo models (whose "
            "names and shapes follow RepDistiller's and torchreid's model files); give a "
            f"{arch} checkpoint trained on {num_classes} classes.")


def load_zoo_model(arch: str, num_classes: int, state: Mapping[str, torch.Tensor], *,
                   source: str, key: str = "architecture") -> nn.Module:
    """``create_model(arch, num_classes)`` with ``state`` loaded strictly (every tensor used, none
    missing). A state dict in this project's old naming is converted on the way (one log line);
    a ``module.`` prefix (a model saved inside ``nn.DataParallel``) is dropped. Raises
    ConfigError naming what the file most likely holds when it does not fit."""
    model = create_model(arch, num_classes, key=key)
    state = strip_data_parallel(state)
    try:
        model.load_state_dict(upgrade_state(state, model, source=source), strict=True)
    except (ConfigError, RuntimeError, TypeError, AttributeError):
        raise ConfigError(mismatch_message(state, arch, num_classes, source, key)) from None
    return model
