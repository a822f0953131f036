"""Re-ID models (OSNet x1.0/x0.75/x0.5/x0.25, resnet50_reid): torchreid's names, its forward, the
zoo contract at person-crop sizes, and backbone initialisation from a user's file.

``tests/data/torchreid_reid.json`` holds, per architecture at 751 classes (Market-1501's
training identities), data recorded from reference implementations outside this repository:
for OSNet a transcription of torchreid's ``torchreid/models/osnet.py`` (KaiyangZhou/
deep-person-reid), for ``resnet50_reid`` torchvision's ``resnet50`` with ``fc`` renamed
``classifier`` (torchreid's ``resnet50`` is that layout):

* ``tensors``: every state-dict entry as ``[name, shape]`` in registration order;
* ``feature_shapes``: per-sample shapes of the stem (after the max-pool), each stage's output and
  the embedding at 64x32;
* ``outputs``: in eval mode, for the weights ``zoo_reference.reference_weights`` makes from
  ``tensors`` (seed ``WEIGHT_SEED``) and :func:`reference_input`: the first 16 logits, the
  logits' and every feature's per-sample ``[mean, mean |x|]`` and the first 16 embedding values.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mgkd.errors import ConfigError
from mgkd.io import safe_torch_load
from mgkd.knowledge.teacher import load_teacher, save_teacher
from mgkd.models import REID_MODEL_NAMES, create_model, probe_feature_shapes
from mgkd.models.backbone_init import InitReport, init_backbone
from mgkd.models.osnet import AggregationGate, OmniScaleBlock
from zoo_reference import feature_summary, reference_weights

DATA = Path(__file__).parent / "data" / "torchreid_reid.json"
CLASSES = 751
WEIGHT_SEED = 11
INPUT_SEED = 12
BATCH = 2

# Parameters without the classifier, in millions, as published to 0.1 M (hence the 0.05 M
# tolerance): the OSNet paper / torchreid's model zoo (x1.0 2.2, x0.75 1.3, x0.5 0.6, x0.25 0.2)
# and torchvision's ResNet-50 (25.6 M) without its 1000-way fc (2.05 M).
BACKBONE_PARAMS_M = {"osnet_x1_0": 2.2, "osnet_x0_75": 1.3, "osnet_x0_5": 0.6,
                     "osnet_x0_25": 0.2, "resnet50_reid": 23.5}


@cache
def reference() -> dict[str, dict]:
    return json.loads(DATA.read_text())


def expected_tensors(arch: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(shape)) for name, shape in reference()[arch]["tensors"]]


@cache
def _weights(arch: str) -> dict[str, Tensor]:
    return reference_weights(expected_tensors(arch), WEIGHT_SEED)


def reference_input() -> Tensor:
    """Two 3x64x32 crops from a fixed seed."""
    rng = np.random.RandomState(INPUT_SEED)
    return torch.from_numpy(rng.standard_normal((2, 3, 64, 32)).astype(np.float32))


@cache
def _model(arch: str, num_classes: int = CLASSES) -> nn.Module:
    """One shared instance per (arch, classes); tests set the mode they need."""
    torch.manual_seed(0)
    return create_model(arch, num_classes)


def _loaded(arch: str) -> nn.Module:
    model = create_model(arch, CLASSES)
    model.load_state_dict(_weights(arch), strict=True)
    return model.eval()


# ---- torchreid's names and forward --------------------------------------------------------------
def test_data_covers_the_reid_models() -> None:
    assert tuple(reference()) == REID_MODEL_NAMES


@pytest.mark.parametrize("arch", REID_MODEL_NAMES)
def test_state_dict_names_and_shapes(arch: str) -> None:
    got = [(name, tuple(t.shape)) for name, t in _model(arch).state_dict().items()]
    assert got == expected_tensors(arch)


@pytest.mark.parametrize("arch", REID_MODEL_NAMES)
def test_forward_matches_reference(arch: str) -> None:
    expected = reference()[arch]["outputs"]
    model = _loaded(arch)
    with torch.no_grad():
        features, logits = model(reference_input(), features=True)
    torch.testing.assert_close(logits[:, :16], torch.tensor(expected["logits_head"]),
                               rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(torch.tensor(feature_summary([logits])[0]),
                               torch.tensor(expected["logits_summary"]), rtol=1e-3, atol=1e-5)
    assert [list(f.shape[1:]) for f in features] == reference()[arch]["feature_shapes"]
    for index, (got, want) in enumerate(zip(feature_summary(features), expected["features"],
                                            strict=True)):
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-3, atol=1e-5,
                                   msg=f"feature {index}")
    torch.testing.assert_close(features[-1][:, :16], torch.tensor(expected["embedding_head"]),
                               rtol=1e-3, atol=1e-5)


def write_torchreid_checkpoint(arch: str, save_dir: Path, epoch: int = 60) -> Path:
    """A file as torchreid's ``engine.save_model`` -> ``utils.save_checkpoint`` writes it: the
    model trained inside ``nn.DataParallel`` (``module.`` names), its Adam optimizer (torchreid's
    default) and MultiStepLR scheduler after a step, ``rank1`` as the numpy float32 its
    ``evaluate`` returns, saved with plain ``torch.save`` as ``model.pth.tar-<epoch>``."""
    model = create_model(arch, CLASSES)
    model.load_state_dict(_weights(arch), strict=True)
    wrapped = nn.DataParallel(model)
    optimizer = torch.optim.Adam(wrapped.parameters(), lr=3e-4, weight_decay=5e-4, amsgrad=True)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[30, 50], gamma=0.1)
    for group in optimizer.param_groups:  # a step that leaves the weights as they are
        group["lr"] = 0.0
    wrapped.eval()(reference_input()).sum().backward()  # eval: batch-norm statistics stay too
    optimizer.step()
    scheduler.step()
    cmc = np.asarray([[1.0, 1.0], [0.0, 1.0]], dtype=np.float32).sum(0) / 2  # as eval_market1501
    state = {"state_dict": wrapped.state_dict(), "epoch": epoch, "rank1": cmc[0],
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    assert type(state["rank1"]) is np.float32 and next(iter(state["state_dict"])).startswith("module.")
    save_dir.mkdir(parents=True, exist_ok=True)
    path = save_dir / f"model.pth.tar-{epoch}"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("arch", ["osnet_x0_25", "resnet50_reid"])
def test_torchreid_checkpoint_loads_as_teacher(arch: str, tmp_path: Path) -> None:
    """torchreid's own file loads strictly as a teacher: every tensor lands where it belongs."""
    path = write_torchreid_checkpoint(arch, tmp_path / "log" / "model")
    model = load_teacher(path, arch, CLASSES)
    state = model.state_dict()
    assert list(state) == list(_weights(arch))
    for name, value in _weights(arch).items():
        assert torch.equal(state[name], value), name


def test_torchreid_checkpoint_keeps_its_numpy_rank1_and_training_state(tmp_path: Path) -> None:
    path = write_torchreid_checkpoint("osnet_x0_25", tmp_path)
    raw = safe_torch_load(path, "teacher_checkpoint")
    assert type(raw["rank1"]) is np.float32 and raw["rank1"] == np.float32(0.5)
    assert raw["epoch"] == 60 and raw["scheduler"]["last_epoch"] == 1
    assert raw["optimizer"]["param_groups"][0]["amsgrad"] is True


def test_torchreid_checkpoint_initialises_a_student(tmp_path: Path) -> None:
    """As ``student_init`` (here into a model of another class count): the backbone is copied,
    the classifier of 751 identities skipped."""
    path = write_torchreid_checkpoint("osnet_x0_25", tmp_path)
    model = create_model("osnet_x0_25", 10)
    report = init_backbone(model, path, key="student_init", arch="osnet_x0_25")
    assert report.skipped_classifier == ("classifier.weight", "classifier.bias")
    for name in report.loaded:
        assert torch.equal(model.state_dict()[name], _weights("osnet_x0_25")[name]), name


def test_strict_load_rejects_missing_and_foreign_names() -> None:
    model = create_model("osnet_x0_25", CLASSES)
    dropped = dict(_weights("osnet_x0_25"))
    del dropped["conv2.0.gate.fc1.bias"]
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(dropped, strict=True)
    renamed = dict(_weights("osnet_x0_25"))
    renamed["conv2.0.conv2a.0.conv1.weight"] = renamed.pop("conv2.0.conv2a.conv1.weight")
    with pytest.raises(RuntimeError, match="Unexpected key"):
        model.load_state_dict(renamed, strict=True)


# ---- architecture -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(BACKBONE_PARAMS_M))
def test_parameter_counts(arch: str) -> None:
    model = _model(arch)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.classifier.parameters())
    assert head == CLASSES * (model.embedding_dim + 1)
    assert total - head == pytest.approx(BACKBONE_PARAMS_M[arch] * 1e6, abs=0.05e6)


def test_osnet_x1_0_backbone_is_2_17_million() -> None:
    model = _model("osnet_x1_0")
    backbone = sum(p.numel() for name, p in model.named_parameters()
                   if not name.startswith("classifier."))
    assert backbone == 2_169_508


@pytest.mark.parametrize("arch", ["osnet_x1_0", "osnet_x0_25"])
def test_one_gate_per_block_shared_by_the_four_streams(arch: str) -> None:
    model = _model(arch).eval()
    blocks = [m for m in model.modules() if isinstance(m, OmniScaleBlock)]
    gates = [m for m in model.modules() if isinstance(m, AggregationGate)]
    assert len(blocks) == 6 and len(gates) == 6
    assert all(sum(isinstance(m, AggregationGate) for m in b.modules()) == 1 for b in blocks)
    calls: list[tuple[int, ...]] = []
    hook = blocks[0].gate.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    try:
        with torch.no_grad():
            model(reference_input())
    finally:
        hook.remove()
    mid = blocks[0].conv1.conv.out_channels
    assert calls == [(BATCH, mid, 16, 8)] * 4  # once per stream, each on its own output


def test_stream_depths_are_one_to_four_lite_layers() -> None:
    block = _model("osnet_x0_25").conv3[0]
    depths = [sum(1 for m in stream.modules() if type(m).__name__ == "LiteConv3x3")
              for stream in block.streams()]
    assert depths == [1, 2, 3, 4]


def test_resnet50_reid_matches_torchvision_layout() -> None:
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        theirs = torchvision.models.resnet50(num_classes=CLASSES).state_dict()
        ours = create_model("resnet50_reid", CLASSES).state_dict()
    renamed = [("classifier" + n[2:] if n.startswith("fc.") else n, tuple(v.shape))
               for n, v in theirs.items()]
    assert [(n, tuple(v.shape)) for n, v in ours.items()] == renamed


# ---- the zoo contract at person-crop sizes ------------------------------------------------------
@pytest.mark.parametrize("arch", REID_MODEL_NAMES)
def test_contract_at_small_crops(arch: str) -> None:
    model = _model(arch).eval()
    assert model.num_classes == CLASSES
    for size in ((64, 32), (96, 64)):
        x = torch.randn(BATCH, 3, *size)
        with torch.no_grad():
            logits = model(x)
            features, again = model(x, features=True)
            embedding = model.embed(x)
        assert logits.shape == (BATCH, CLASSES)
        torch.testing.assert_close(logits, again)
        assert features[-1].shape == (BATCH, model.embedding_dim)
        torch.testing.assert_close(embedding, features[-1])
        assert all(f.dim() == 4 and f.shape[0] == BATCH for f in features[:-1])
        assert len(features) >= 5
        assert probe_feature_shapes(model, size) == [tuple(f.shape[1:]) for f in features]


@pytest.mark.parametrize("arch,maps", [
    ("osnet_x0_75", [(48, 64, 32), (192, 32, 16), (288, 16, 8), (384, 16, 8), (512,)]),
    ("resnet50_reid", [(64, 64, 32), (256, 64, 32), (512, 32, 16), (1024, 16, 8),
                       (2048, 8, 4), (2048,)]),
])
def test_full_size_crops(arch: str, maps: list[tuple[int, ...]]) -> None:
    model = _model(arch, 10)
    model.train()
    assert probe_feature_shapes(model, (256, 128)) == maps
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("arch", REID_MODEL_NAMES)
def test_training_step_reaches_every_parameter(arch: str) -> None:
    model = create_model(arch, 10).train()
    logits = model(torch.randn(BATCH, 3, 64, 32))  # training mode: BatchNorm1d on a batch
    assert logits.shape == (BATCH, 10)
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_embedding_dims() -> None:
    assert [_model(a).embedding_dim for a in REID_MODEL_NAMES] == [512] * 4 + [2048]


# ---- backbone initialisation from a user's file -------------------------------------------------
def _imagenet_like(arch: str, classes: int, tmp_path: Path, **wrap: str) -> tuple[Path, dict]:
    torch.manual_seed(1)
    state = create_model(arch, classes).state_dict()
    path = tmp_path / f"{arch}_{classes}.pth"
    prefix = wrap.get("prefix", "")
    body = {prefix + name: value for name, value in state.items()}
    torch.save({wrap["under"]: body} if "under" in wrap else body, path)
    return path, state


def test_init_backbone_skips_a_classifier_of_other_classes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, source = _imagenet_like("osnet_x0_25", 1000, tmp_path)
    torch.manual_seed(2)
    model = create_model("osnet_x0_25", CLASSES)
    head_before = model.classifier.weight.clone()
    with caplog.at_level(logging.INFO, logger="mgkd.models.backbone_init"):
        report = init_backbone(model, path, key="student_init", arch="osnet_x0_25")
    assert isinstance(report, InitReport)
    assert report.skipped_classifier == ("classifier.weight", "classifier.bias")
    assert report.unused == () and report.missing == ()
    assert len(report.loaded) == len(source) - 2
    state = model.state_dict()
    for name in report.loaded:
        assert torch.equal(state[name], source[name]), name
    assert torch.equal(model.classifier.weight, head_before)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "565 tensors loaded, 2 classifier tensors skipped" in lines[0]


@pytest.mark.parametrize("wrap", [{"prefix": "module."}, {"under": "state_dict"},
                                  {"under": "model", "prefix": "module."}])
def test_init_backbone_reads_the_usual_file_forms(wrap: dict, tmp_path: Path) -> None:
    path, source = _imagenet_like("osnet_x0_25", CLASSES, tmp_path, **wrap)
    model = create_model("osnet_x0_25", CLASSES)
    report = init_backbone(model, path, key="student_init")
    assert report.skipped_classifier == () and len(report.loaded) == len(source)
    for name, value in model.state_dict().items():
        assert torch.equal(value, source[name]), name


def test_init_backbone_leaves_unknown_tensors_unused(tmp_path: Path) -> None:
    """torchvision's ImageNet file: its ``fc`` is unused, the rest fills the backbone."""
    torch.manual_seed(3)
    with torch.device("meta"):
        names = list(create_model("resnet50_reid", 4).state_dict())
    model = create_model("resnet50_reid", 4)
    state = {n: torch.randn_like(v, dtype=torch.float32) if v.is_floating_point() else v
             for n, v in model.state_dict().items() if not n.startswith("classifier.")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(state, path)
    report = init_backbone(model, path, key="teacher_checkpoint", arch="resnet50_reid")
    assert report.unused == ("fc.weight", "fc.bias")
    assert report.missing == ("classifier.weight", "classifier.bias")
    assert len(report.loaded) == len(names) - 2
    assert torch.equal(model.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])


def test_init_backbone_refuses_another_width(tmp_path: Path) -> None:
    path, _ = _imagenet_like("osnet_x0_5", CLASSES, tmp_path)
    model = create_model("osnet_x0_25", CLASSES)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as info:
        init_backbone(model, path, key="student_init", arch="osnet_x0_25")
    message = str(info.value)
    assert message.startswith(f"student_init: {path} does not fit a osnet_x0_25 backbone")
    assert "it holds a osnet_x0_5 with 751 classes" in message
    assert "differ in shape" in message and "student_init: null" in message
    for name, value in model.state_dict().items():  # nothing was half-loaded
        assert torch.equal(value, before[name]), name


def test_init_backbone_refuses_a_file_with_no_fitting_tensor(tmp_path: Path) -> None:
    path, _ = _imagenet_like("resnet8", 10, tmp_path)
    with pytest.raises(ConfigError) as info:
        init_backbone(create_model("osnet_x0_25", 10), path, key="student_init",
                      arch="osnet_x0_25")
    message = str(info.value)
    assert "has no tensor that fits a osnet_x0_25 backbone" in message
    assert "it holds a resnet8 with 10 classes" in message


def test_init_backbone_refuses_a_classifier_only_match(tmp_path: Path) -> None:
    path = tmp_path / "head.pth"
    torch.save({"classifier.weight": torch.zeros(10, 512), "classifier.bias": torch.zeros(10)},
               path)
    with pytest.raises(ConfigError, match="has no tensor that fits"):
        init_backbone(create_model("osnet_x0_25", 10), path, key="student_init")


def test_init_backbone_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^student_init: .* does not exist"):
        init_backbone(create_model("osnet_x0_25", 10), tmp_path / "none.pth", key="student_init")


# ---- this project's teacher files ---------------------------------------------------------------
def test_saved_osnet_teacher_loads(tmp_path: Path) -> None:
    torch.manual_seed(4)
    model = create_model("osnet_x0_25", 6)
    model.train()
    with torch.no_grad():  # move the BN statistics, so the load has work to do
        model(torch.randn(4, 3, 64, 32) * 2 + 0.5)
    path = tmp_path / "teacher.pt"
    save_teacher(model, "osnet_x0_25", 6, path)
    loaded = load_teacher(path, "osnet_x0_25", 6)
    assert not loaded.training
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), model.eval().embed(x), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="holds a osnet_x0_25, but teacher is 'osnet_x0_5'"):
        load_teacher(path, "osnet_x0_5", 6)
