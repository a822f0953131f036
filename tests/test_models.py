"""Model zoo: names, registry errors, output and feature shapes, parameter counts, probing.

The shape tests here run the CIFAR models at 32x32 and 16x16; the re-ID models take person
crops (H, W multiples of 32, at least 64x32) and have the same checks at their own input sizes in
``tests/test_models_reid.py``."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from torch import nn

from mgkd.errors import ConfigError
from mgkd.models import MODEL_NAMES, MODELS, REID_MODEL_NAMES, create_model, probe_feature_shapes

CIFAR_NAMES = (
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "ResNet50", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2",
)  # fmt: skip
REID_NAMES = ("osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "resnet50_reid")
EXPECTED_NAMES = CIFAR_NAMES + REID_NAMES

# Parameters at 100 classes, in millions (RepDistiller's published sizes; the x4 ones are exact).
REFERENCE_PARAMS_M = {
    "resnet8x4": 1.234,
    "resnet32x4": 7.434,
    "resnet20": 0.28,
    "resnet56": 0.86,
    "resnet110": 1.74,
    "wrn_16_2": 0.70,
    "wrn_40_2": 2.26,
    "vgg8": 3.96,
    "vgg13": 9.46,
    "MobileNetV2": 0.81,
    "ShuffleV1": 0.95,
    "ShuffleV2": 1.36,
    "ResNet50": 23.7,
}

BATCH = 2


@cache
def _model(name: str, num_classes: int) -> nn.Module:
    """One shared instance per (name, classes); tests set the train/eval mode they need."""
    torch.manual_seed(0)
    return create_model(name, num_classes)


def test_names_in_order() -> None:
    assert MODEL_NAMES == EXPECTED_NAMES
    assert tuple(MODELS) == EXPECTED_NAMES
    assert REID_MODEL_NAMES == REID_NAMES


@pytest.mark.parametrize("size", [32, 16])
@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_logits_and_features(name: str, num_classes: int, size: int) -> None:
    model = _model(name, num_classes).eval()
    x = torch.randn(BATCH, 3, size, size)
    with torch.no_grad():
        logits = model(x)
        features, logits_again = model(x, features=True)
    assert logits.shape == (BATCH, num_classes)
    torch.testing.assert_close(logits, logits_again)
    embedding_dim = model.embedding_dim
    assert isinstance(embedding_dim, int)
    assert isinstance(features, list) and len(features) >= 4
    assert features[-1].shape == (BATCH, embedding_dim)
    for feature in features[:-1]:
        assert feature.dim() == 4 and feature.shape[0] == BATCH
        assert min(feature.shape[2:]) >= 1


def test_unknown_name_lists_allowed() -> None:
    with pytest.raises(ConfigError) as info:
        create_model("resnet9", 10, key="teacher")
    message = str(info.value)
    assert message.startswith("teacher: unknown architecture 'resnet9'; allowed: ")
    assert all(name in message for name in EXPECTED_NAMES)
    with pytest.raises(ConfigError, match="^architecture: unknown architecture"):
        create_model("Resnet8", 10)


def test_bad_class_count() -> None:
    with pytest.raises(ConfigError, match="student: num_classes"):
        create_model("resnet8", 0, key="student")


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS_M))
def test_parameter_counts(name: str) -> None:
    count = sum(p.numel() for p in _model(name, 100).parameters())
    assert count == pytest.approx(REFERENCE_PARAMS_M[name] * 1e6, rel=0.01)


@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_probe_matches_forward_and_restores_mode(name: str) -> None:
    model = _model(name, 10)
    model.eval()
    with torch.no_grad():
        features, _ = model(torch.randn(BATCH, 3, 16, 16), features=True)
    model.train()
    assert probe_feature_shapes(model, 16) == [tuple(f.shape[1:]) for f in features]
    assert all(m.training for m in model.modules())


def test_probe_keeps_mixed_modes_and_state() -> None:
    model = _model("resnet8", 10)
    model.train()
    frozen = model.layer1
    frozen.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shapes = probe_feature_shapes(model, 32)
    assert shapes == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64,)]
    assert model.training and model.conv1.training
    assert not any(m.training for m in frozen.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    model.eval()
    probe_feature_shapes(model, 32)
    assert not any(m.training for m in model.modules())
