"""Linear CKA: hand-derived values and invariances, and ``mgkd cka`` end to end (CSV + PNG)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY_DATA, mgkd
from mgkd.errors import ConfigError
from mgkd.knowledge.teacher import save_teacher
from mgkd.models import create_model
from mgkd.probe.cka import centered_gram, cka_matrix, linear_cka
from mgkd.probe.runs import cka_report


def _data(rows=40, cols=12, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def test_cka_of_a_representation_with_itself_is_one():
    x = _data()
    assert linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    maps = _data(rows=10, cols=3 * 4 * 4).reshape(10, 3, 4, 4)  # feature maps flatten per example
    assert linear_cka(maps, maps) == pytest.approx(1.0, rel=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x, y = _data(seed=1), _data(cols=7, seed=2) + 0.5 * _data(seed=1)[:, :7]
    q, _ = torch.linalg.qr(_data(rows=12, cols=12, seed=3))  # a random orthogonal 12 x 12
    reference = linear_cka(x, y)
    assert 0.05 < reference < 0.95  # a case where the invariances have something to keep
    assert linear_cka(x @ q, y) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(3.7 * x, 0.02 * y) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(x + 5.0, y) == pytest.approx(reference, rel=1e-10)  # columns are centred
    assert linear_cka(y, x) == pytest.approx(reference, rel=1e-12)
    # Not invariant to an anisotropic scaling (CKA is not CCA).
    assert linear_cka(x * torch.linspace(0.1, 3, 12, dtype=torch.float64), y) != \
        pytest.approx(reference, rel=1e-3)


def test_cka_small_cases_by_hand():
    # One feature each: linear CKA is the squared Pearson correlation. x centred: (-1, 0, 1);
    # y = (1, 0, 2) centred: (0, -1, 1); r = 1 / (sqrt 2 * sqrt 2) = 1/2, CKA = 1/4.
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [0.0], [2.0]])
    assert linear_cka(x, y) == pytest.approx(0.25, rel=1e-12)
    # X: four centred points (±1, 0), (0, ±1): XᵀX = 2I. Y: X's first column: YᵀX = (2, 0),
    # YᵀY = 2. CKA = ‖YᵀX‖² / (‖XᵀX‖ ‖YᵀY‖) = 4 / (2√2 · 2) = 1/√2.
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert linear_cka(x, x[:, :1]) == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    # Orthogonal features (x's second column against its first): 0.
    assert linear_cka(x[:, :1], x[:, 1:]) == pytest.approx(0.0, abs=1e-15)


def test_the_chunked_gram_equals_the_whole_one(monkeypatch):
    x = _data(rows=6, cols=50, seed=7).float()
    flat = x.double() - x.double().mean(0)
    whole = centered_gram(x)
    monkeypatch.setattr("mgkd.probe.cka.GRAM_CHUNK", 7)  # 50 columns: 8 chunks, the last short
    assert torch.allclose(centered_gram(x), whole, rtol=1e-12)
    assert torch.allclose(whole, flat @ flat.T, rtol=1e-12)


def test_cka_is_nan_for_a_constant_side_and_needs_matching_examples():
    assert math.isnan(linear_cka(torch.ones(5, 3), _data(rows=5)))
    with pytest.raises(ConfigError, match="same 2\\+ examples"):
        linear_cka(_data(rows=5), _data(rows=6))


def test_cka_matrix_pairs_every_stage_and_writes_csv():
    a, b, c = _data(seed=4), _data(cols=3, seed=5), _data(cols=20, seed=6)
    matrix = cka_matrix([centered_gram(a), centered_gram(b)],
                        [centered_gram(a), centered_gram(b), centered_gram(c)],
                        ["t0", "t1"], ["s0", "s1", "s2"])
    expected = [[linear_cka(t, s) for s in (a, b, c)] for t in (a, b)]
    assert sum(matrix.values, []) == pytest.approx(sum(expected, []), rel=1e-12)
    assert matrix.values[0][0] == pytest.approx(1.0) and matrix.values[1][1] == pytest.approx(1.0)
    lines = matrix.to_csv().splitlines()
    assert lines[0] == "teacher \\ student,s0,s1,s2"
    assert lines[2].split(",")[0] == "t1"
    assert float(lines[2].split(",")[3]) == pytest.approx(expected[1][2], abs=1e-6)


def _model_file(path, arch, seed, dataset_options=TINY_DATA):
    torch.manual_seed(seed)
    model = create_model(arch, dataset_options["num_classes"])
    data = {"dataset": "synthetic", "options": dataset_options, "val_fraction": 0.1,
            "split_seed": 0, "train_subset": None}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_teacher(model, arch, dataset_options["num_classes"], path,
                 {"recipe": {"data": json.dumps(data)}})
    return path


def test_cka_report_of_a_model_with_itself_has_a_unit_diagonal(tmp_path):
    teacher = _model_file(tmp_path / "t" / "teacher.pt", "resnet8", 0)
    result = cka_report(teacher, teacher, samples=16)
    assert result.samples == 16 and result.dataset == "synthetic"
    names = ["stem", "stage1", "stage2", "stage3", "embedding"]
    assert result.matrix.teacher_stages == names == result.matrix.student_stages
    assert [result.matrix.values[i][i] for i in range(5)] == pytest.approx([1.0] * 5, rel=1e-9)


def test_cka_report_compares_different_architectures(tmp_path):
    teacher = _model_file(tmp_path / "t" / "teacher.pt", "wrn_16_1", 0)
    student = _model_file(tmp_path / "s" / "teacher.pt", "resnet8", 1)
    result = cka_report(teacher, student)
    assert len(result.matrix.values) == 5 and len(result.matrix.values[0]) == 5  # wrn: 3 blocks
    assert result.samples == TINY_DATA["num_test"]  # fewer than --samples: all of them
    flat = [v for row in result.matrix.values for v in row]
    assert all(0.0 <= v <= 1.0 + 1e-9 for v in flat)
    with pytest.raises(ConfigError, match="--samples must be 2 or more"):
        cka_report(teacher, student, samples=1)


def test_mgkd_cka_writes_csv_and_png(tmp_path):
    teacher = _model_file(tmp_path / "t" / "teacher.pt", "resnet8", 0)
    done = mgkd("cka", teacher.parent, teacher, "--out", tmp_path / "out", "--samples", "12",
                "--device", "cpu")
    assert done.returncode == 0, done.stderr
    csv = (tmp_path / "out" / "cka.csv").read_text().splitlines()
    assert len(csv) == 6 and csv[1].startswith("stem,1.000000")
    png = (tmp_path / "out" / "cka.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert "12 images" in done.stdout
