"""Model zoo, part B (Wide ResNets, VGG-BN, MobileNetV2, ShuffleNet v1/v2): RepDistiller's
checkpoints load as they are and compute RepDistiller's function.

``tests/data/repdistiller_zoo_b.json`` holds, per architecture, data taken from RepDistiller's
own model code (HobbitLong/RepDistiller ``models/``, the constructors of its ``model_dict``) at
100 classes:

* ``tensors``: every state-dict entry as ``[name, shape]`` in RepDistiller's registration order;
* ``feature_shapes``: the per-sample shapes of ``model(x, features=True)``'s list at 32x32 as this
  project's models gave them before the renaming (methods pair maps by position, so they must
  not change);
* ``outputs``: what RepDistiller's forward computed, for the weights
  ``zoo_reference.reference_weights`` makes from ``tensors`` with seed ``WEIGHT_SEED`` and the
  input :func:`reference_input`, in eval mode: the logits, and for every feature map
  (``preact=False``) its per-sample mean and mean absolute value.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from mgkd.models import create_model
from zoo_reference import feature_summary, reference_weights

DATA = Path(__file__).parent / "data" / "repdistiller_zoo_b.json"
ARCHS = (
    "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
    "MobileNetV2", "ShuffleV1", "ShuffleV2",
)  # fmt: skip
CLASSES = 100
WEIGHT_SEED = 11
INPUT_SEED = 12


@cache
def reference() -> dict[str, dict]:
    """The JSON data, keyed by architecture."""
    return json.loads(DATA.read_text())


def expected_tensors(arch: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(shape)) for name, shape in reference()[arch]["tensors"]]


def reference_input() -> Tensor:
    """Two 3x32x32 images from a fixed seed."""
    rng = np.random.RandomState(INPUT_SEED)
    return torch.from_numpy(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))


@cache
def _weights(arch: str) -> dict[str, Tensor]:
    return reference_weights(expected_tensors(arch), WEIGHT_SEED)


def _loaded(arch: str) -> torch.nn.Module:
    model = create_model(arch, CLASSES)
    model.load_state_dict(_weights(arch), strict=True)
    return model.eval()


def test_data_covers_part_b() -> None:
    assert tuple(reference()) == ARCHS


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_names_and_shapes(arch: str) -> None:
    model = create_model(arch, CLASSES)
    got = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    assert got == expected_tensors(arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_repdistiller_checkpoint_loads_strictly(arch: str, tmp_path: Path) -> None:
    """A checkpoint in RepDistiller's form loads with strict=True and every tensor is used."""
    path = tmp_path / f"{arch}.pth"
    torch.save({"model": _weights(arch), "epoch": 240, "best_acc": 75.0}, path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model(arch, CLASSES)
    model.load_state_dict(checkpoint["model"], strict=True)
    state = model.state_dict()
    assert state.keys() == _weights(arch).keys()
    for name, value in _weights(arch).items():
        assert torch.equal(state[name], value), name


def test_strict_load_rejects_missing_and_foreign_names() -> None:
    weights = dict(_weights("wrn_16_1"))
    model = create_model("wrn_16_1", CLASSES)
    dropped = dict(weights)
    del dropped["block2.layer.0.convShortcut.weight"]
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(dropped, strict=True)
    renamed = dict(weights)
    renamed["stem.weight"] = renamed.pop("conv1.weight")
    with pytest.raises(RuntimeError, match="Unexpected key"):
        model.load_state_dict(renamed, strict=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_matches_repdistiller(arch: str) -> None:
    expected = reference()[arch]["outputs"]
    with torch.no_grad():
        features, logits = _loaded(arch)(reference_input(), features=True)
    want_logits = torch.tensor(expected["logits"])
    scale = want_logits.abs().max().item()
    torch.testing.assert_close(logits, want_logits, rtol=1e-3, atol=1e-3 * scale)
    got = torch.tensor(feature_summary(features), dtype=torch.float64)
    want = torch.tensor(expected["features"], dtype=torch.float64)
    assert got.shape == want.shape
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(
            g, w, rtol=1e-3, atol=1e-3 * w.abs().max().item(), msg=f"feature {index}"
        )


@pytest.mark.parametrize("arch", ARCHS)
def test_feature_list_shapes_unchanged(arch: str) -> None:
    with torch.no_grad():
        features, _ = _loaded(arch)(reference_input(), features=True)
    got = [list(f.shape[1:]) for f in features]
    assert got == reference()[arch]["feature_shapes"]


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip_keeps_forward(arch: str, tmp_path: Path) -> None:
    """A trained-looking model (non-trivial BN statistics) saved as ``{"model": state_dict}``
    and loaded into a fresh instance computes the same logits and maps, at 32x32 and 16x16."""
    torch.manual_seed(0)
    model = create_model(arch, CLASSES)
    model.train()
    with torch.no_grad():  # one training-mode pass moves every BN's running statistics
        model(torch.randn(4, 3, 32, 32) * 2 + 0.5)
    model.eval()
    path = tmp_path / "student.pth"
    torch.save({"model": model.state_dict(), "epoch": 1}, path)
    fresh = create_model(arch, CLASSES).eval()
    probe = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(fresh(probe), model(probe))  # the load below has work to do
    fresh.load_state_dict(torch.load(path, weights_only=True)["model"], strict=True)
    for size in (32, 16):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            feats_a, logits_a = model(x, features=True)
            feats_b, logits_b = fresh(x, features=True)
        assert torch.equal(logits_a, logits_b)
        assert len(feats_a) == len(feats_b)
        for a, b in zip(feats_a, feats_b, strict=True):
            assert torch.equal(a, b)
