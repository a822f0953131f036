"""The report's final runs: an ``mgkd train`` out dir read and analysed (noise, ECE, CKA against
its teacher), damaged ones described in notes, and the section the report adds."""
from __future__ import annotations

import json

import pytest
import torch

from analysis.final_runs import read_final_run
from analysis.report import final_runs_section
from conftest import TINY_DATA
from mgkd.config import ExperimentConfig, save_config
from mgkd.knowledge.teacher import save_teacher
from mgkd.models import create_model
from mgkd.probe.runs import noise_report


def _final_run(tmp_path, *, same_weights: bool):
    """A finished run dir whose student is (or is not) a copy of its teacher."""
    classes = TINY_DATA["num_classes"]
    torch.manual_seed(0)
    teacher = create_model("resnet8", classes)
    teacher_file = tmp_path / "teacher.pt"
    save_teacher(teacher, "resnet8", classes, teacher_file)
    student = teacher if same_weights else create_model("resnet8", classes)
    run = tmp_path / "final"
    config = ExperimentConfig.from_dict({
        "teacher": "resnet8", "student": "resnet8", "dataset": "synthetic",
        "data_options": TINY_DATA, "teacher_checkpoint": str(teacher_file), "val_fraction": 0.0,
        "cache_dir": str(tmp_path / "cache")})
    run.mkdir()
    save_config(config, run / "config.yaml")
    (run / "metrics.json").write_text(json.dumps({"history": [], "final": {"test_acc": 41.5}}))
    save_teacher(student, "resnet8", classes, run / "student.pt")
    return run, teacher_file


def test_a_final_run_is_analysed_against_its_teacher(tmp_path):
    run_dir, _ = _final_run(tmp_path, same_weights=True)
    run = read_final_run(run_dir, cka_samples=16)
    assert run.notes == [] and run.final["test_acc"] == 41.5
    assert run.label == "resnet8→resnet8 kd mas"
    direct = noise_report(run_dir / "student.pt")
    assert run.noise == direct and run.noise.samples == TINY_DATA["num_test"]
    # The student is the teacher: every stage matches itself exactly.
    values = run.cka.matrix.values
    assert [values[i][i] for i in range(len(values))] == pytest.approx([1.0] * 5, rel=1e-9)
    assert run.cka.samples == 16

    images = []
    html = "\n".join(final_runs_section([run], tmp_path, images))
    assert f"<td>{run.noise.prediction_noise:.4f}</td>" in html and "<td>1.000</td>" in html
    assert "<td>41.50</td>" in html
    assert images == [tmp_path / "final-1-cka.png"] and images[0].read_bytes()[:4] == b"\x89PNG"


def test_damaged_final_runs_become_notes(tmp_path):
    run_dir, teacher_file = _final_run(tmp_path, same_weights=False)
    teacher_file.unlink()
    run = read_final_run(run_dir)
    assert run.noise is not None and run.cka is None
    assert any("teacher file" in note and "no CKA" in note for note in run.notes)
    (run_dir / "student.pt").unlink()
    assert "has not finished" in read_final_run(run_dir).notes[0]
    assert "not an `mgkd train` out dir" in read_final_run(tmp_path / "elsewhere").notes[0]
    html = "\n".join(final_runs_section([read_final_run(run_dir)], tmp_path, []))
    assert "has not finished" in html and "<img" not in html
    assert final_runs_section([], tmp_path, []) == []


def test_report_takes_final_run_dirs():
    from search.cli import build_parser
    args = build_parser().parse_args(["report", "runs/demo", "--out", "r", "--final", "a", "b"])
    assert args.final == ["a", "b"] and args.device == "auto"
    assert build_parser().parse_args(["report", "runs/demo", "--out", "r"]).final == []
