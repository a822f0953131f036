"""The model zoo's names and how each is built, as a plain table that loads without torch.

The one list of architectures: the command line and config validation read it, and
:mod:`mgkd.models` builds each model from its entry (the factory named here, called with the
entry's options). Adding a model is its module under ``mgkd/models`` plus one line here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from mgkd.errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    """``factory``: ``"<module>:<callable>"`` under ``mgkd.models``, called as
    ``callable(num_classes, **options)``. ``reid``: a person re-ID backbone, which takes person
    crops (H and W multiples of 32, at least 64 x 32; 256 x 128 as usual)."""

    factory: str
    options: Mapping[str, Any] = field(default_factory=dict)
    reid: bool = False


_X4 = {"widths": (32, 64, 128, 256)}

# RepDistiller's CIFAR zoo, then the person re-ID backbones (torchreid's names).
MODELS: Mapping[str, ModelEntry] = MappingProxyType({
    "resnet8": ModelEntry("resnet:cifar_resnet", {"depth": 8}),
    "resnet14": ModelEntry("resnet:cifar_resnet", {"depth": 14}),
    "resnet20": ModelEntry("resnet:cifar_resnet", {"depth": 20}),
    "resnet32": ModelEntry("resnet:cifar_resnet", {"depth": 32}),
    "resnet44": ModelEntry("resnet:cifar_resnet", {"depth": 44}),
    "resnet56": ModelEntry("resnet:cifar_resnet", {"depth": 56}),
    "resnet110": ModelEntry("resnet:cifar_resnet", {"depth": 110}),
    "resnet8x4": ModelEntry("resnet:cifar_resnet", {"depth": 8, **_X4}),
    "resnet32x4": ModelEntry("resnet:cifar_resnet", {"depth": 32, **_X4}),
    "ResNet50": ModelEntry("resnet:resnet50"),
    "wrn_16_1": ModelEntry("wrn:WideResNet", {"depth": 16, "widen": 1}),
    "wrn_16_2": ModelEntry("wrn:WideResNet", {"depth": 16, "widen": 2}),
    "wrn_40_1": ModelEntry("wrn:WideResNet", {"depth": 40, "widen": 1}),
    "wrn_40_2": ModelEntry("wrn:WideResNet", {"depth": 40, "widen": 2}),
    "vgg8": ModelEntry("vgg:VGG", {"convs": (1, 1, 1, 1, 1)}),
    "vgg11": ModelEntry("vgg:VGG", {"convs": (1, 1, 2, 2, 2)}),
    "vgg13": ModelEntry("vgg:VGG", {"convs": (2, 2, 2, 2, 2)}),
    "vgg16": ModelEntry("vgg:VGG", {"convs": (2, 2, 3, 3, 3)}),
    "vgg19": ModelEntry("vgg:VGG", {"convs": (2, 2, 4, 4, 4)}),
    "MobileNetV2": ModelEntry("mobilenetv2:MobileNetV2", {"width_mult": 0.5, "expansion": 6}),
    "ShuffleV1": ModelEntry("shufflenetv1:ShuffleNetV1",
                            {"widths": (240, 480, 960), "depths": (4, 8, 4), "groups": 3}),
    "ShuffleV2": ModelEntry("shufflenetv2:ShuffleNetV2",
                            {"widths": (116, 232, 464), "depths": (4, 8, 4), "head_width": 1024}),
    "osnet_x1_0": ModelEntry("osnet:osnet", {"name": "osnet_x1_0"}, reid=True),
    "osnet_x0_75": ModelEntry("osnet:osnet", {"name": "osnet_x0_75"}, reid=True),
    "osnet_x0_5": ModelEntry("osnet:osnet", {"name": "osnet_x0_5"}, reid=True),
    "osnet_x0_25": ModelEntry("osnet:osnet", {"name": "osnet_x0_25"}, reid=True),
    "resnet50_reid": ModelEntry("resnet_reid:resnet50_reid", reid=True),
})
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
REID_MODEL_NAMES: tuple[str, ...] = tuple(name for name, entry in MODELS.items() if entry.reid)
# Students RepDistiller trains with lr 0.01 instead of 0.05.
LOW_LR_ARCHS: tuple[str, ...] = ("MobileNetV2", "ShuffleV1", "ShuffleV2")


def model_entry(name: str, key: str = "architecture") -> ModelEntry:
    """The entry of model ``name``; ConfigError naming ``key`` and the known names otherwise."""
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(f"{key}: unknown architecture {name!r}; allowed: "
                          f"{', '.join(MODEL_NAMES)}")
    return MODELS[name]


def default_lr(student: str) -> float:
    """RepDistiller's learning rate for ``student``: 0.01 for MobileNetV2 and ShuffleNets, else
    0.05."""
    return 0.01 if student in LOW_LR_ARCHS else 0.05
