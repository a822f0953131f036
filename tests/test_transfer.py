"""Linear-probe transfer: for every zoo family the probe sees exactly the features the model's own
classifier takes, and the backbone (weights and BatchNorm statistics) stays unchanged; the probe
learns; ``mgkd transfer`` end to end on STL-10 files written in the official format."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import mgkd
from mgkd.data import ImageSplit, dataset_spec
from mgkd.errors import ConfigError
from mgkd.knowledge.teacher import save_teacher
from mgkd.models import create_model
from mgkd.probe.outputs import run_model
from mgkd.probe.runs import transfer_options
from mgkd.probe.transfer import ProbeSettings, linear_probe, train_probe
from test_data_transfer_sets import write_stl10

# One architecture per zoo family (the smallest), with the side its input takes.
FAMILIES = {
    "cifar resnet": ("resnet8", 32), "bottleneck resnet": ("ResNet50", 32),
    "wide resnet": ("wrn_16_1", 32), "vgg": ("vgg8", 32), "mobilenetv2": ("MobileNetV2", 32),
    "shufflenetv1": ("ShuffleV1", 32), "shufflenetv2": ("ShuffleV2", 32),
    "osnet": ("osnet_x0_25", 64), "re-id resnet50": ("resnet50_reid", 64),
}
FAST = ProbeSettings(epochs=2, batch_size=4)


def _split(count: int, size: int, seed: int) -> ImageSplit:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)
    return ImageSplit(images, torch.arange(count) % 10)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_probe_sees_the_classifier_input_and_the_backbone_stays_frozen(family):
    arch, size = FAMILIES[family]
    torch.manual_seed(0)
    model = create_model(arch, 7)
    spec = dataset_spec("stl10", {"image_size": size})
    train, test = _split(6, size, 1), _split(4, size, 2)
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    seen = []
    hook = classifier.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        result = linear_probe(model, train, test, spec, settings=FAST)
        embedding = run_model(model, test, spec, keep="embedding").features[0]
    finally:
        hook.remove()
    # The classifier's own input, captured on the same test images, is what the probe trains on.
    assert result.feature_dim == classifier.in_features == embedding.shape[1]
    assert torch.equal(torch.cat(seen[-1:]), embedding)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the backbone changed"
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    assert (result.train_images, result.test_images) == (6, 4)


def test_probe_learns_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=generator) * 4
    labels = torch.arange(300) % 3
    features = centres[labels] + torch.randn(300, 16, generator=generator)
    probe = train_probe(features[:240], labels[:240], 3, ProbeSettings(epochs=20))
    assert (probe(features[240:]).argmax(1) == labels[240:]).float().mean() == 1.0
    again = train_probe(features[:240], labels[:240], 3, ProbeSettings(epochs=20))
    assert torch.equal(probe.weight, again.weight)  # seeded


def test_probe_settings_and_target_options_are_checked():
    with pytest.raises(ConfigError, match="--epochs must be 1 or more"):
        ProbeSettings(epochs=0)
    with pytest.raises(ConfigError, match="--lr must be > 0"):
        ProbeSettings(lr=0)
    assert transfer_options("stl10", "resnet8", None) == ({"image_size": 32}, 32)
    assert transfer_options("tiny_imagenet", "osnet_x0_25", None) == ({"image_size": 64}, 64)
    assert transfer_options("digits", "resnet8", None) == ({}, None)
    with pytest.raises(ConfigError, match="--image-size applies to stl10 and tiny_imagenet"):
        transfer_options("digits", "resnet8", 32)
    with pytest.raises(ConfigError, match="person re-ID backbone"):
        transfer_options("stl10", "osnet_x0_25", 32)
    with pytest.raises(ConfigError, match="unknown data set"):
        transfer_options("stl100", "resnet8", None)


def test_mgkd_transfer_on_stl10_files(tmp_path):
    write_stl10(tmp_path / "data", train=20, test=10)
    torch.manual_seed(0)
    save_teacher(create_model("resnet8", 100), "resnet8", 100, tmp_path / "t" / "teacher.pt")
    done = mgkd("transfer", tmp_path / "t", "--dataset", "stl10", "--data-dir", tmp_path / "data",
                "--out", tmp_path / "out", "--epochs", "3", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "out" / "transfer-stl10.json").read_text())
    assert (written["arch"], written["image_size"], written["feature_dim"]) == ("resnet8", 32, 64)
    assert (written["train_images"], written["test_images"]) == (20, 10)
    assert written["settings"]["epochs"] == 3
    assert f"test_acc {written['test_acc']:.2f}%" in done.stdout
    wrong = mgkd("transfer", tmp_path / "t", "--dataset", "stl10", "--data-dir", tmp_path,
                 "--out", tmp_path / "out")
    assert wrong.returncode == 2 and "stl10_binary/train_X.bin" in wrong.stderr
