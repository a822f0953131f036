"""RepDistiller / mdistiller checkpoints fit the ResNet family as they are and compute the same
function: resnet8..110, resnet8x4, resnet32x4 (RepDistiller ``models/resnet.py``) and ResNet50
(``models/resnetv2.py``).

The expected names and shapes are data written from RepDistiller's model files (read, not run):
each arch is a short spec, expanded below by RepDistiller's naming rules (stem ``conv1``/``bn1``,
``layer<i>.<j>.conv1/bn1/conv2/bn2[/conv3/bn3]``, a projection ``downsample.0/1`` in resnet.py or
``shortcut.0/1`` in resnetv2.py where the stride or width changes, classifier ``fc`` or
``linear``), in registration order; literal tensor counts and spot entries pin the expansion.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mgkd.knowledge.teacher import load_teacher
from mgkd.models import create_model
from mgkd.models.loading import load_zoo_model
from mgkd.runner import save_student

CLASSES = 100
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# arch -> (unit, widths [stem, stage...], units per stage, projection name, classifier name)
SPECS = {
    "resnet8": ("basic", (16, 16, 32, 64), 1, "downsample", "fc"),
    "resnet14": ("basic", (16, 16, 32, 64), 2, "downsample", "fc"),
    "resnet20": ("basic", (16, 16, 32, 64), 3, "downsample", "fc"),
    "resnet32": ("basic", (16, 16, 32, 64), 5, "downsample", "fc"),
    "resnet44": ("basic", (16, 16, 32, 64), 7, "downsample", "fc"),
    "resnet56": ("basic", (16, 16, 32, 64), 9, "downsample", "fc"),
    "resnet110": ("basic", (16, 16, 32, 64), 18, "downsample", "fc"),
    "resnet8x4": ("basic", (32, 64, 128, 256), 1, "downsample", "fc"),
    "resnet32x4": ("basic", (32, 64, 128, 256), 5, "downsample", "fc"),
    "ResNet50": ("bottleneck", (64, 64, 128, 256, 512), (3, 4, 6, 3), "shortcut", "linear"),
}
# Tensors in each state dict (parameters + BN buffers), counted from RepDistiller's layouts.
TENSOR_COUNTS = {"resnet8": 56, "resnet14": 92, "resnet20": 128, "resnet32": 200,
                 "resnet44": 272, "resnet56": 344, "resnet110": 668, "resnet8x4": 62,
                 "resnet32x4": 206, "ResNet50": 320}
SPOT = {  # literal entries, as RepDistiller's state dicts list them
    "resnet8": {"layer1.0.conv1.weight": (16, 16, 3, 3), "layer2.0.downsample.0.weight": (32, 16, 1, 1),
                "fc.weight": (100, 64)},
    "resnet8x4": {"conv1.weight": (32, 3, 3, 3), "layer1.0.downsample.0.weight": (64, 32, 1, 1),
                  "layer3.0.downsample.1.running_var": (256,), "fc.weight": (100, 256)},
    "resnet110": {"layer3.17.bn2.num_batches_tracked": ()},
    "ResNet50": {"layer1.0.shortcut.0.weight": (256, 64, 1, 1), "layer4.2.conv3.weight": (2048, 512, 1, 1),
                 "linear.weight": (100, 2048)},
}  # fmt: skip


def _bn(prefix: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.{n}", () if n == "num_batches_tracked" else (channels,)) for n in BN]


def expected_entries(arch: str) -> list[tuple[str, tuple[int, ...]]]:
    """RepDistiller's state-dict (name, shape) list for ``arch`` at 100 classes, in order."""
    unit, widths, depth, proj, fc = SPECS[arch]
    depths = depth if isinstance(depth, tuple) else (depth,) * (len(widths) - 1)
    out = [("conv1.weight", (widths[0], 3, 3, 3))] + _bn("bn1", widths[0])
    inplanes = widths[0]
    for i, (planes, n) in enumerate(zip(widths[1:], depths)):
        for j in range(n):
            p, stride = f"layer{i + 1}.{j}", (2 if i > 0 and j == 0 else 1)
            if unit == "basic":
                outplanes = planes
                out += [(f"{p}.conv1.weight", (planes, inplanes, 3, 3))] + _bn(f"{p}.bn1", planes)
                out += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + _bn(f"{p}.bn2", planes)
            else:
                outplanes = 4 * planes
                out += [(f"{p}.conv1.weight", (planes, inplanes, 1, 1))] + _bn(f"{p}.bn1", planes)
                out += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + _bn(f"{p}.bn2", planes)
                out += [(f"{p}.conv3.weight", (outplanes, planes, 1, 1))] + _bn(f"{p}.bn3", outplanes)
            if stride != 1 or inplanes != outplanes:
                out += [(f"{p}.{proj}.0.weight", (outplanes, inplanes, 1, 1))]
                out += _bn(f"{p}.{proj}.1", outplanes)
            inplanes = outplanes
    return out + [(f"{fc}.weight", (CLASSES, inplanes)), (f"{fc}.bias", (CLASSES,))]


def repdistiller_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in RepDistiller's naming with random values (BN variances positive)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in expected_entries(arch):
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(240 * 782)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        elif "bn" in name.split(".")[-2] or name.split(".")[-2] == "1":
            state[name] = torch.randn(shape, generator=g) * 0.1 + (name.endswith("weight"))
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            state[name] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return state


def reference_forward(state: dict[str, torch.Tensor], arch: str, x: torch.Tensor):
    """What RepDistiller's ``forward(x, is_feat=True)`` computes (post-activation features),
    written functionally from the state dict by name: conv -> BN (eval) -> ReLU, units summed
    with their (projected) input then ReLU, global average pool, linear."""
    unit, _, _, proj, fc = SPECS[arch]

    def conv_bn(prefix_conv, prefix_bn, h, stride):
        w = state[f"{prefix_conv}.weight"]
        h = F.conv2d(h, w, stride=stride, padding=w.shape[-1] // 2)
        return F.batch_norm(h, state[f"{prefix_bn}.running_mean"], state[f"{prefix_bn}.running_var"],
                            state[f"{prefix_bn}.weight"], state[f"{prefix_bn}.bias"], False, 0.0, 1e-5)

    h = F.relu(conv_bn("conv1", "bn1", x, 1))
    feats = [h]
    layer = 1
    while f"layer{layer}.0.conv1.weight" in state:
        j = 0
        while f"layer{layer}.{j}.conv1.weight" in state:
            p, stride = f"layer{layer}.{j}", (2 if layer > 1 and j == 0 else 1)
            if unit == "basic":
                out = F.relu(conv_bn(f"{p}.conv1", f"{p}.bn1", h, stride))
                out = conv_bn(f"{p}.conv2", f"{p}.bn2", out, 1)
            else:
                out = F.relu(conv_bn(f"{p}.conv1", f"{p}.bn1", h, 1))
                out = F.relu(conv_bn(f"{p}.conv2", f"{p}.bn2", out, stride))
                out = conv_bn(f"{p}.conv3", f"{p}.bn3", out, 1)
            skip = conv_bn(f"{p}.{proj}.0", f"{p}.{proj}.1", h, stride) \
                if f"{p}.{proj}.0.weight" in state else h
            h = F.relu(out + skip)
            j += 1
        feats.append(h)
        layer += 1
    pooled = h.mean(dim=(2, 3))
    feats.append(pooled)
    return feats, F.linear(pooled, state[f"{fc}.weight"], state[f"{fc}.bias"])


@pytest.mark.parametrize("arch", list(SPECS))
def test_state_dict_has_repdistillers_names_and_shapes_in_order(arch):
    expected = expected_entries(arch)
    assert len(expected) == TENSOR_COUNTS[arch]
    for name, shape in SPOT.get(arch, {}).items():
        assert (name, shape) in expected, name
    have = [(k, tuple(v.shape)) for k, v in create_model(arch, CLASSES).state_dict().items()]
    assert have == expected


@pytest.mark.parametrize("arch", list(SPECS))
def test_repdistiller_checkpoint_loads_strictly_and_computes_its_function(arch, tmp_path):
    state = repdistiller_state(arch)
    path = tmp_path / "ckpt_epoch_240.pth"  # the form RepDistiller's train_teacher.py saves
    torch.save({"epoch": 240, "model": state, "accuracy": torch.tensor(72.5),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.0005, "params": [0]}]}}, path)
    model = load_teacher(path, arch, CLASSES)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats, logits = model(x, features=True)
        ref_feats, ref_logits = reference_forward(state, arch, x)
    assert len(feats) == len(ref_feats)
    for ours, ref in zip(feats + [logits], ref_feats + [ref_logits]):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", list(SPECS))
def test_forward_is_unchanged_by_a_save_load_round_trip(arch, tmp_path):
    torch.manual_seed(0)
    model = create_model(arch, CLASSES)
    with torch.no_grad():  # non-trivial BN statistics
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    model.eval()
    save_student(model, arch, CLASSES, tmp_path / "student.pt", {"epoch": 3})
    raw = torch.load(tmp_path / "student.pt", weights_only=True)
    assert set(raw) >= {"model", "arch", "num_classes", "epoch"}
    again = create_model(arch, CLASSES)
    again.load_state_dict(raw["model"], strict=True)  # how RepDistiller's scripts load it
    again.eval()
    again_ours = load_zoo_model(arch, CLASSES, raw["model"], source="student.pt").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        feats, logits = model(x, features=True)
        for other in (again, again_ours):
            feats2, logits2 = other(x, features=True)
            assert torch.equal(logits, logits2)
            assert all(torch.equal(a, b) for a, b in zip(feats, feats2))
