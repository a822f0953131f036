"""Model zoo behind a name -> factory registry: RepDistiller's CIFAR architectures and the person
re-ID backbones (OSNet x1.0/x0.75/x0.5/x0.25 and ``resnet50_reid``, with torchreid's names).

Every model keeps one contract: ``model(x)`` returns logits and ``model(x, features=True)``
returns ``(features, logits)``: the stem output, each stage's output map (B, C, H, W) and last
the pooled embedding (B, ``model.embedding_dim``) that feeds the linear classifier; it also has
``model.num_classes``. Global pooling covers the whole last map, so the CIFAR models run on 32x32
and on smaller inputs such as 16x16. Their parameter and buffer names follow RepDistiller's
model files, so its and mdistiller's checkpoints load strictly (``mgkd.models.loading``); this
project's older ``stem.*``/``stages.*`` checkpoints convert on load (``mgkd.models.legacy``).

The re-ID models (:data:`REID_MODEL_NAMES`) keep the same contract, also have ``model.embed(x)``
(the retrieval embedding, the same tensor as the last feature) and take person crops: H and W
multiples of 32, at least 64x32 (256x128 as usual); their names follow torchreid's model files.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from mgkd.errors import ConfigError
from mgkd.models.mobilenetv2 import MobileNetV2
from mgkd.models.osnet import osnet
from mgkd.models.resnet import cifar_resnet, resnet50
from mgkd.models.resnet_reid import resnet50_reid
from mgkd.models.shufflenetv1 import ShuffleNetV1
from mgkd.models.shufflenetv2 import ShuffleNetV2
from mgkd.models.vgg import VGG
from mgkd.models.wrn import WideResNet

__all__ = [
    "MODELS",
    "MODEL_NAMES",
    "REID_MODEL_NAMES",
    "create_model",
    "probe_feature_shapes",
]

_X4 = {"widths": (32, 64, 128, 256)}

# name -> factory(num_classes); the order of this table is the order of MODEL_NAMES.
MODELS: dict[str, Callable[[int], nn.Module]] = {
    "resnet8": partial(cifar_resnet, depth=8),
    "resnet14": partial(cifar_resnet, depth=14),
    "resnet20": partial(cifar_resnet, depth=20),
    "resnet32": partial(cifar_resnet, depth=32),
    "resnet44": partial(cifar_resnet, depth=44),
    "resnet56": partial(cifar_resnet, depth=56),
    "resnet110": partial(cifar_resnet, depth=110),
    "resnet8x4": partial(cifar_resnet, depth=8, **_X4),
    "resnet32x4": partial(cifar_resnet, depth=32, **_X4),
    "ResNet50": resnet50,
    "wrn_16_1": partial(WideResNet, depth=16, widen=1),
    "wrn_16_2": partial(WideResNet, depth=16, widen=2),
    "wrn_40_1": partial(WideResNet, depth=40, widen=1),
    "wrn_40_2": partial(WideResNet, depth=40, widen=2),
    "vgg8": partial(VGG, convs=(1, 1, 1, 1, 1)),
    "vgg11": partial(VGG, convs=(1, 1, 2, 2, 2)),
    "vgg13": partial(VGG, convs=(2, 2, 2, 2, 2)),
    "vgg16": partial(VGG, convs=(2, 2, 3, 3, 3)),
    "vgg19": partial(VGG, convs=(2, 2, 4, 4, 4)),
    "MobileNetV2": partial(MobileNetV2, width_mult=0.5, expansion=6),
    "ShuffleV1": partial(ShuffleNetV1, widths=(240, 480, 960), depths=(4, 8, 4), groups=3),
    "ShuffleV2": partial(ShuffleNetV2, widths=(116, 232, 464), depths=(4, 8, 4), head_width=1024),
    "osnet_x1_0": partial(osnet, name="osnet_x1_0"),
    "osnet_x0_75": partial(osnet, name="osnet_x0_75"),
    "osnet_x0_5": partial(osnet, name="osnet_x0_5"),
    "osnet_x0_25": partial(osnet, name="osnet_x0_25"),
    "resnet50_reid": resnet50_reid,
}

MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
# Person re-ID backbones: inputs of H x W with both multiples of 32, at least 64 x 32.
REID_MODEL_NAMES: tuple[str, ...] = (
    "osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "resnet50_reid")


def create_model(name: str, num_classes: int, *, key: str = "architecture") -> nn.Module:
    """Build the zoo model ``name`` with a ``num_classes``-way classifier.

    ``key`` starts the error message (e.g. ``"teacher"``) so the user sees which setting is wrong.
    Raises ConfigError for an unknown name or a class count below 1.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(
            f"{key}: unknown architecture {name!r}; allowed: {', '.join(MODEL_NAMES)}"
        )
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
