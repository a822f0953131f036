"""Model zoo behind a name -> factory registry: RepDistiller's CIFAR architectures and the person
re-ID backbones (OSNet x1.0/x0.75/x0.5/x0.25 and ``resnet50_reid``, with torchreid's names).

Every model keeps one contract: ``model(x)`` returns logits and ``model(x, features=True)``
returns ``(features, logits)``: the stem output, each stage's output map (B, C, H, W) and last
the pooled embedding (B, ``model.embedding_dim``) that feeds the linear classifier; it also has
``model.num_classes``. Global pooling covers the whole last map, so the CIFAR models run on 32x32
and on smaller inputs such as 16x16. Their parameter and buffer names follow RepDistiller's
model files, so its and mdistiller's checkpoints load strictly (``mgkd.models.loading``); this
project's older ``stem.*``/``stages.*`` checkpoints convert on load (``mgkd.models.legacy``).

The zoo's names and factories are listed in :mod:`mgkd.catalog.models` (torch-free); this module
builds the registry from it. The re-ID models (:data:`REID_MODEL_NAMES`) keep the same contract,
also have ``model.embed(x)`` (the retrieval embedding, the same tensor as the last feature) and
take person crops: H and W multiples of 32, at least 64x32 (256x128 as usual); their names follow
torchreid's model files.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from types import MappingProxyType
from typing import Mapping

import torch
from torch import nn

from mgkd.catalog.models import MODEL_NAMES, MODELS as CATALOG, REID_MODEL_NAMES, model_entry
from mgkd.errors import ConfigError

__all__ = [
    "MODELS",
    "MODEL_NAMES",
    "REID_MODEL_NAMES",
    "create_model",
    "probe_feature_shapes",
]


def _factory(location: str, options: Mapping) -> Callable[[int], nn.Module]:
    module, name = location.split(":")
    return partial(getattr(importlib.import_module(f"mgkd.models.{module}"), name), **options)


# name -> factory(num_classes), in the catalog's order (mgkd.catalog.models holds the table).
MODELS: Mapping[str, Callable[[int], nn.Module]] = MappingProxyType(
    {name: _factory(entry.factory, entry.options) for name, entry in CATALOG.items()})


def create_model(name: str, num_classes: int, *, key: str = "architecture") -> nn.Module:
    """Build the zoo model ``name`` with a ``num_classes``-way classifier.

    ``key`` starts the error message (e.g. ``"teacher"``) so the user sees which setting is wrong.
    Raises ConfigError for an unknown name or a class count below 1.
    """
    model_entry(name, key)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"{key}: num_classes must be an integer >= 1, got {num_classes!r}")
    return MODELS[name](num_classes)


def probe_feature_shapes(
    model: nn.Module, image_size: int | tuple[int, int], channels: int = 3
) -> list[tuple[int, ...]]:
    """Shapes (without the batch dim) of ``model(x, features=True)``'s features.

    Runs a batch of two zero images of ``channels x height x width`` (``image_size`` is a side
    for square images or a ``(height, width)`` pair) in eval mode without gradients, on the
    model's device and dtype, then restores every submodule's train/eval flag.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(2, channels, height, width, device=device, dtype=dtype)
            features, _ = model(x, features=True)
    finally:
        for module, mode in modes:
            module.training = mode
    return [tuple(f.shape[1:]) for f in features]
