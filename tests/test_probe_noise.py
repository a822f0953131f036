"""Prediction noise and expected calibration error: hand-derived values, and ``mgkd noise`` on a
model file against an independent per-sample computation."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY_DATA, mgkd
from mgkd.data import load_splits
from mgkd.errors import ConfigError
from mgkd.knowledge.teacher import save_teacher
from mgkd.models import create_model
from mgkd.probe.noise import expected_calibration_error, noise_of, prediction_noise
from mgkd.probe.runs import noise_report


def test_noise_by_hand():
    probs = torch.tensor([
        [0.6, 0.3, 0.1],     # even share 0.2: |0.3-0.2| + |0.1-0.2| = 0.2
        [0.5, 0.25, 0.25],   # spread evenly: 0
        [1.0, 0.0, 0.0],     # one-hot: 0
        [0.2, 0.1, 0.7],     # top is class 2, share 0.15: |0.2-0.15| + |0.1-0.15| = 0.1
    ])
    assert prediction_noise(probs).tolist() == pytest.approx([0.2, 0.0, 0.0, 0.1])


def test_noise_is_largest_when_the_rest_sits_on_one_class():
    # C = 4, p_max = 0.6, the other 0.4 on one class: share 0.4/3, so
    # |0.4 - 0.4/3| + 2 * 0.4/3 = 0.8 * 2/3 = 2 (1 - p_max)(C - 2)/(C - 1).
    assert float(prediction_noise(torch.tensor([[0.6, 0.4, 0.0, 0.0]]))) == pytest.approx(1.6 / 3)
    assert float(prediction_noise(torch.tensor([[0.6, 0.2, 0.1, 0.1]]))) == \
        pytest.approx((0.2 - 0.4 / 3) + 2 * (0.4 / 3 - 0.1))  # = 0.4 / 3, a third of the worst
    assert float(prediction_noise(torch.tensor([[0.4, 0.2, 0.2, 0.2]]))) == pytest.approx(0.0, abs=1e-7)


def test_noise_needs_two_classes():
    with pytest.raises(ConfigError, match="C>=2"):
        prediction_noise(torch.ones(3, 1))


def test_ece_by_hand():
    # 4 bins: (0, .25], (.25, .5], (.5, .75], (.75, 1].
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 0, 1])
    # bin 4 (.75, 1]: confidences 0.9, 0.8 -> conf 0.85, accuracy 1/2: gap 0.35, weight 2/4
    # bin 3 (.5, .75]: confidences 0.6, 0.7 -> conf 0.65, accuracy 1: gap 0.35, weight 2/4
    assert expected_calibration_error(probs, labels, bins=4) == pytest.approx(0.35)
    # one bin: |mean accuracy - mean confidence| = |0.75 - 0.75| = 0
    assert expected_calibration_error(probs, labels, bins=1) == pytest.approx(0.0)


def test_ece_bin_edges_belong_to_the_lower_bin():
    # A confidence of exactly 0.5 falls into (.25, .5] with 2 bins... i.e. the first of 2 bins.
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    labels = torch.tensor([1, 0])  # first wrong (argmax 0), second right
    # bin (0, .5]: conf 0.5, acc 0 -> 0.5 * 1/2; bin (.5, 1]: conf 1, acc 1 -> 0
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx(0.25)


def test_a_perfectly_calibrated_set_has_zero_ece():
    probs = torch.tensor([[0.75, 0.25]] * 4)
    labels = torch.tensor([0, 0, 0, 1])  # 75% right at 75% confidence
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)
    assert noise_of(torch.log(probs), labels)["accuracy"] == pytest.approx(75.0)


def _reference(model, split, spec):
    """Per-sample, plain Python: softmax, top class, noise and the 15-bin ECE."""
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = model.eval()(((split.images.double() / 255 - mean) / std).float())
    noise, right, bins = [], 0, {}
    for row, label in zip(torch.softmax(logits.double(), 1).tolist(), split.labels.tolist()):
        top = max(range(len(row)), key=row.__getitem__)
        share = (1 - row[top]) / (len(row) - 1)
        noise.append(sum(abs(p - share) for j, p in enumerate(row) if j != top))
        right += top == label
        b = min(14, max(0, math.ceil(row[top] * 15) - 1))
        bins.setdefault(b, []).append((row[top], top == label))
    ece = sum(abs(sum(c for c, _ in v) - sum(ok for _, ok in v)) for v in bins.values())
    return 100 * right / len(noise), sum(noise) / len(noise), ece / len(noise)


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet8", TINY_DATA["num_classes"])
    data = {"dataset": "synthetic", "options": TINY_DATA, "train_subset": None,
            "val_fraction": 0.25, "split_seed": 3}
    path = tmp_path / "teacher.pt"
    save_teacher(model, "resnet8", TINY_DATA["num_classes"], path,
                 {"recipe": {"data": json.dumps(data)}})
    return path, model


def test_noise_report_matches_a_per_sample_reference(model_file):
    path, model = model_file
    report = noise_report(path.parent)  # the run dir stands for its teacher.pt
    splits = load_splits("synthetic", ".", val_fraction=0.0, options=TINY_DATA)
    accuracy, noise, ece = _reference(model, splits.test, splits.spec)
    assert (report.arch, report.dataset, report.split) == ("resnet8", "synthetic", "test")
    assert report.samples == TINY_DATA["num_test"]
    assert report.accuracy == pytest.approx(accuracy)
    assert report.prediction_noise == pytest.approx(noise, rel=1e-4)
    assert report.ece == pytest.approx(ece, rel=1e-4, abs=1e-6)


def test_noise_on_the_val_split_uses_the_models_own_split(model_file):
    path, model = model_file
    report = noise_report(path, split="val")
    splits = load_splits("synthetic", ".", val_fraction=0.25, seed=3, options=TINY_DATA)
    assert report.samples == len(splits.val) == 20
    assert report.accuracy == pytest.approx(_reference(model, splits.val, splits.spec)[0])


def test_a_file_that_does_not_name_its_architecture_needs_arch(tmp_path, model_file):
    bare = tmp_path / "bare.pth"
    torch.save({"model": model_file[1].state_dict()}, bare)
    with pytest.raises(ConfigError, match="add --arch"):
        noise_report(bare)
    with pytest.raises(ConfigError, match="add --dataset"):
        noise_report(bare, arch="resnet8")
    with pytest.raises(ConfigError, match="resnet8 has 4 classes but digits has 10"):
        noise_report(bare, arch="resnet8", dataset="digits")


def test_mgkd_noise_prints_and_writes(model_file, tmp_path):
    path, _ = model_file
    done = mgkd("noise", path, "--out", tmp_path / "out", "--device", "cpu", "--bins", "10")
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "out" / "noise.json").read_text())
    assert written["ece_bins"] == 10 and written["samples"] == TINY_DATA["num_test"]
    assert f"prediction noise {written['prediction_noise']:.4f}" in done.stdout
    missing = mgkd("noise", tmp_path / "nothing.pt")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
