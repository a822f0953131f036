"""Reading checkpoints: files of earlier versions still load (converted once on load, with a log
line), a file of another architecture is named in one paragraph, and a file whose pickle would
run code is refused before anything runs.

The fixture ``tests/data/legacy_resnet8_c4.pt`` was written by the OLD zoo code (commit e116f4f,
``mgkd/models`` copied out of the repository with ``git show e116f4f:mgkd/models/<file>.py``):
``torch.manual_seed(11)``, ``create_model("resnet8", 4)``, every BatchNorm's weight/bias and
running statistics set to random values (``num_batches_tracked`` 7), saved exactly as the old
``save_teacher`` did: ``{"format": 1, "arch": "resnet8", "num_classes": 4, "state_dict": ...}``
with the old ``stem.* / stages.*`` names. ``legacy_resnet8_c4_expected.pt`` holds an input batch
(2x3x8x8, seeded) and what the OLD model computed on it in eval mode: its logits and features.
"""
from __future__ import annotations

import argparse
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from mgkd.data import load_splits
from mgkd.errors import ConfigError
from mgkd.io import safe_torch_load
from mgkd.knowledge.heads import HeadBank, HeadKey
from mgkd.knowledge.teacher import SupervisedLearner, load_teacher
from mgkd.models import create_model
from mgkd.runner import teacher_facts
from mgkd.training.engine import Schedule, Trainer
from mgkd.training.tasks import get_task

from conftest import TINY_DATA, VAL_ACC, mgkd

CLASSIFY = get_task("classification")
DATA = Path(__file__).parent / "data"
LEGACY = DATA / "legacy_resnet8_c4.pt"
EXPECTED = DATA / "legacy_resnet8_c4_expected.pt"


def _legacy_state() -> dict[str, torch.Tensor]:
    return torch.load(LEGACY, weights_only=True)["state_dict"]


def _assert_same_function(model: torch.nn.Module) -> None:
    expected = torch.load(EXPECTED, weights_only=True)
    with torch.no_grad():
        feats, logits = model.eval()(expected["input"], features=True)
    # Recorded on another machine: float32 CPU kernels sum in another order there, so outputs
    # differ in the last bits (1.2e-6 seen). 1e-5 of each tensor's largest value is ten times
    # that and still far below what a wrongly converted tensor changes (of the order of 1).
    for ours, old in zip([logits, *feats], [expected["logits"], *expected["features"]],
                         strict=True):
        torch.testing.assert_close(ours, old, rtol=1e-5, atol=1e-5 * old.abs().max().item())


# ---- files of earlier versions ---------------------------------------------------------------
def test_old_teacher_file_loads_converted_and_computes_the_same(caplog):
    assert next(iter(_legacy_state())).startswith("stem.")  # really the old naming
    with caplog.at_level(logging.INFO, logger="mgkd.models.legacy"):
        model = load_teacher(LEGACY, "resnet8", 4)
    lines = [r.getMessage() for r in caplog.records if "converted" in r.getMessage()]
    assert len(lines) == 1 and "56 tensors" in lines[0] and str(LEGACY) in lines[0]
    _assert_same_function(model)


def test_old_student_pt_loads_converted(tmp_path):
    path = tmp_path / "student.pt"  # the old student.pt form: weights under "state_dict"
    torch.save({"arch": "resnet8", "num_classes": 4, "state_dict": _legacy_state()}, path)
    _assert_same_function(load_teacher(path, "resnet8", 4))


def test_old_trial_checkpoint_resumes_converted(tmp_path, caplog):
    splits = load_splits("synthetic", ".", val_fraction=0.25, options=TINY_DATA)
    torch.manual_seed(0)
    trainer = Trainer(SupervisedLearner(create_model("resnet8", 4), CLASSIFY), splits,
                      Schedule(epochs=2, lr=0.1), batch_size=16, seed=0, objective=VAL_ACC)
    trainer.fit()
    state = trainer.state_dict()
    # The same checkpoint as an earlier version wrote it: module tensors in the old naming.
    state["modules"] = {f"model.{k}": v for k, v in _legacy_state().items()}
    torch.save(state, tmp_path / "checkpoint.pt")

    fresh = Trainer(SupervisedLearner(create_model("resnet8", 4), CLASSIFY), splits,
                    Schedule(epochs=2, lr=0.1), batch_size=16, seed=0, objective=VAL_ACC)
    with caplog.at_level(logging.INFO, logger="mgkd.models.legacy"):
        fresh.load_checkpoint(tmp_path / "checkpoint.pt")
    assert any("converted 56 tensors" in r.getMessage() for r in caplog.records)
    assert fresh.state.epoch == 2
    _assert_same_function(fresh.learner.model)


# ---- a file of another architecture or class count -------------------------------------------
def _saved(tmp_path: Path, arch: str, classes: int, wrap: bool = True) -> Path:
    torch.manual_seed(0)
    state = create_model(arch, classes).state_dict()
    path = tmp_path / f"{arch}_{classes}.pth"
    torch.save({"model": state, "epoch": 240} if wrap else state, path)
    return path


@pytest.mark.parametrize("arch, classes, load_as, words", [
    ("resnet56", 100, ("resnet20", 10), ["holds a resnet56 with 100 classes", "set teacher: resnet56",
                                         "data set with 100 classes"]),
    ("resnet20", 100, ("resnet20", 10), ["holds a resnet20 with 100 classes",
                                         "use a data set with 100 classes"]),
    ("resnet32x4", 100, ("resnet8x4", 100), ["holds a resnet32x4 with 100 classes",
                                             "set teacher: resnet32x4,"]),
    ("ResNet50", 10, ("resnet110", 10), ["holds a ResNet50 with 10 classes"]),
])
def test_wrong_architecture_names_what_the_file_holds(tmp_path, arch, classes, load_as, words):
    path = _saved(tmp_path, arch, classes)
    with pytest.raises(ConfigError) as info:
        load_teacher(path, *load_as)
    message = str(info.value)
    assert message.startswith(f"teacher_checkpoint: {path} does not fit a {load_as[0]} with "
                              f"{load_as[1]} classes")
    for word in words:
        assert word in message
    assert "\n" not in message and "Error(s)" not in message and "Missing key" not in message


def test_a_damaged_file_is_named_by_its_closest_architecture(tmp_path):
    torch.manual_seed(0)
    state = {k: v for k, v in create_model("resnet56", 100).state_dict().items()
             if not k.startswith("layer3.8.")}  # the last unit lost
    torch.save({"model": state}, tmp_path / "cut.pth")
    with pytest.raises(ConfigError) as info:
        load_teacher(tmp_path / "cut.pth", "resnet56", 100)
    assert ("its tensors are closest to a resnet56 with 100 classes (332 of its 332 tensors have "
            "a shape the resnet56 has; the resnet56 has 344)") in str(info.value)


def test_wrong_architecture_in_the_old_naming_is_named_too(tmp_path):
    path = tmp_path / "old.pt"
    torch.save(_legacy_state(), path)  # a bare old-naming resnet8 state dict
    with pytest.raises(ConfigError, match="holds a resnet8 with 4 classes; set teacher: resnet8"):
        load_teacher(path, "resnet20", 4)


def test_a_file_without_a_state_dict_is_a_clear_error(tmp_path):
    path = tmp_path / "metrics.pt"
    torch.save({"epoch": 3, "accuracy": 71.0}, path)
    with pytest.raises(ConfigError, match="holds no model state dict .*epoch, accuracy"):
        load_teacher(path, "resnet8", 4)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="could not be read as a torch checkpoint"):
        load_teacher(tmp_path / "text.pt", "resnet8", 4)


# ---- loading never runs code -----------------------------------------------------------------
class RunsCode:
    """Unpickling this calls ``Path.touch(marker)``: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _booby_trapped(tmp_path: Path, name: str) -> tuple[Path, Path]:
    marker = tmp_path / f"{name}.ran"
    torch.manual_seed(0)
    state = create_model("resnet8", 4).state_dict()
    path = tmp_path / f"{name}.pth"
    torch.save({"model": state, "arch": "resnet8", "format": 2, "payload": RunsCode(marker)}, path)
    return path, marker


def test_the_booby_trap_is_real(tmp_path):
    # Control: the unrestricted unpickler runs the file's code. The tests below must not.
    path, marker = _booby_trapped(tmp_path, "control")
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    path, marker = _booby_trapped(tmp_path, "teacher")
    with pytest.raises(ConfigError) as info:
        load_teacher(path, "resnet8", 4)
    message = str(info.value)
    assert str(path) in message and "refused" in message and "weights_only=True" in message
    assert "would need the Python object" in message and "\n" not in message
    with pytest.raises(ConfigError, match="refused"):
        teacher_facts(path)

    splits = load_splits("synthetic", ".", val_fraction=0.25, options=TINY_DATA)
    trainer = Trainer(SupervisedLearner(create_model("resnet8", 4), CLASSIFY), splits,
                      Schedule(epochs=1, lr=0.1), batch_size=16, seed=0, objective=VAL_ACC)
    with pytest.raises(ConfigError, match="checkpoint: .* was refused"):
        trainer.load_checkpoint(path)

    bank = HeadBank(tmp_path / "heads")
    key = HeadKey(teacher_hash="ab" * 32, dim=8, temperature=2.0, epochs=1, seed=0, data="tiny")
    bank.path(key).parent.mkdir(parents=True)
    bank.path(key).write_bytes(path.read_bytes())
    assert not bank.has(key)  # treated as damaged (it would be retrained), never unpickled
    assert not marker.exists()


def test_a_booby_trapped_teacher_exits_2_through_the_cli(tmp_path):
    path, marker = _booby_trapped(tmp_path, "cli")
    result = mgkd("heads", "--teacher", path, "--dims", "8", "--temperatures", "2", "--epochs", "1",
                  "--dataset", "synthetic", "--device", "cpu", "--cache-dir", tmp_path / "cache")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "refused" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not marker.exists()


# ---- numpy scalars (torchreid's rank1): plain number types only ---------------------------------
@pytest.mark.parametrize("value", [np.float32(0.875), np.float64(-2.5), np.int64(7), np.uint8(200),
                                   np.bool_(True), np.complex64(1 + 2j)])
def test_numpy_scalars_of_plain_types_load_as_themselves(tmp_path, value):
    path = tmp_path / "scalar.pt"
    torch.save({"rank1": value, "model": {}}, path)
    loaded = safe_torch_load(path, "teacher_checkpoint")["rank1"]
    assert type(loaded) is type(value) and loaded == value


def test_a_numpy_scalar_written_under_numpy_1_names_loads(tmp_path):
    # numpy 1.x pickles the scalar's function as numpy.core.multiarray.scalar (numpy 2: _core);
    # the legacy (non-zip) torch format keeps the pickle as one stream, so the name can be edited.
    path = tmp_path / "old.pt"
    torch.save({"rank1": np.float32(0.25)}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    assert raw.count(b"numpy._core.multiarray") == 1
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    loaded = safe_torch_load(path, "teacher_checkpoint")["rank1"]
    assert type(loaded) is np.float32 and loaded == np.float32(0.25)


class StructuredDtypeState:
    """Pickles as numpy.dtype('f4') whose BUILD state gives it named fields: the route by which a
    dtype could claim to hold objects and turn bytes into pointers."""

    def __reduce__(self):
        return (np.dtype, ("f4", False, True), (3, "|", None, ("a",), {"a": (0.0, 0)}, 4, 1, 0))


@pytest.mark.parametrize("value, reason", [
    (np.zeros(1, dtype=[("a", "f4")])[0], "'V4' is not a plain number"),
    (np.datetime64("2020-01-01"), "'M8' is not a plain number"),
    (StructuredDtypeState(), "carries a structured state"),
    (np.arange(3.0), "numpy._core.multiarray._reconstruct"),
])
def test_other_numpy_values_are_refused(tmp_path, value, reason):
    path = tmp_path / "numpy.pt"
    torch.save({"model": {}, "extra": value}, path)
    with pytest.raises(ConfigError, match="was refused") as info:
        safe_torch_load(path, "teacher_checkpoint")
    assert reason in str(info.value) and str(path) in str(info.value)


def test_repdistiller_last_file_with_its_argparse_options_loads(tmp_path):
    # RepDistiller's <arch>_last.pth stores {"opt": argparse.Namespace, "model": ...}: a Namespace
    # holds attributes only, so the restricted unpickler may rebuild it.
    torch.manual_seed(0)
    model = create_model("resnet8", 4)
    path = tmp_path / "resnet8_last.pth"
    torch.save({"opt": argparse.Namespace(model="resnet8", learning_rate=0.05, lr_decay_epochs=[150]),
                "model": model.state_dict()}, path)
    loaded = load_teacher(path, "resnet8", 4)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)


def test_every_zoo_architecture_is_recognised_from_its_shapes():
    # Through the registry, so the guess covers whatever the zoo holds; 7 classes: the class count
    # comes from the file, not from a default.
    from mgkd.models import MODEL_NAMES, MODELS
    from mgkd.models.identify import best_match, classes_of, tensor_shapes, zoo_shapes

    table = zoo_shapes(MODELS, 7)
    assert list(table) == list(MODEL_NAMES)  # every factory builds on the meta device
    for name in MODEL_NAMES:
        with torch.device("meta"):
            state = create_model(name, 7).state_dict()
        assert classes_of(state) == 7
        guess = best_match(tensor_shapes(state), 7, table)
        assert (guess.arch, guess.num_classes, guess.exact) == (name, 7, True), name


def test_every_checkpoint_read_goes_through_the_restricted_unpickler():
    root = Path(__file__).resolve().parents[1]
    loads = {str(p.relative_to(root)): p.read_text().count("torch.load(")
             for package in ("mgkd", "trainables", "search", "analysis", "spaces")
             for p in (root / package).rglob("*.py") if "torch.load(" in p.read_text()}
    assert loads == {"mgkd/io.py": 2}  # safe_torch_load's call and its error message's example
    source = (root / "mgkd" / "io.py").read_text()
    assert "weights_only=True)" in source and source.count("weights_only=False") == 1


def test_our_student_pt_says_its_architecture(tmp_path):
    from mgkd.runner import save_student
    save_student(create_model("resnet14", 4), "resnet14", 4, tmp_path / "student.pt")
    with pytest.raises(ConfigError, match="holds a resnet14, but teacher is 'resnet8'; set teacher: "
                                          "resnet14"):
        load_teacher(tmp_path / "student.pt", "resnet8", 4)
    assert load_teacher(tmp_path / "student.pt", "resnet14", 4).num_classes == 4


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_written_atomically_get_the_mode_a_plain_open_gives(tmp_path, umask):
    """mkstemp makes private (0600) temp files; a report or config renamed from one stayed
    unreadable to anyone else (the report's index.html was 0600 while its PNGs were 0644)."""
    from mgkd.io import atomic_write_text
    previous = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic_write_text(tmp_path / "atomic.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
