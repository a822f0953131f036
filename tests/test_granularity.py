"""Teacher heads: trained on a frozen teacher, stored once in the bank, shared by later runs."""
import copy
import multiprocessing as mp
from dataclasses import replace

import pytest
import torch
from torch import nn

from mgkd.data import DeviceBatches, load_splits
from mgkd.knowledge.heads import (FrozenTeacher, HeadBank, HeadKey, HeadLearner, StudentGranularity,
                                  TeacherHead, train_heads)
from mgkd.models import create_model

from conftest import TINY_DATA


def tiny_splits():
    return load_splits("synthetic", ".", val_fraction=0.25, options=TINY_DATA)


def teacher_model():
    torch.manual_seed(0)
    return create_model("resnet8", TINY_DATA["num_classes"])


def key(dim=8, temperature=2.0, teacher_hash="ab" * 32):
    return HeadKey(teacher_hash=teacher_hash, dim=dim, temperature=temperature, epochs=1, seed=0,
                   data="tiny")


def test_head_shapes():
    head = TeacherHead(width=64, dim=8, num_classes=4)
    code, logits = head(torch.randn(5, 64))
    assert code.shape == (5, 8) and logits.shape == (5, 4)
    student = StudentGranularity(width=32, dims=[8, 16, 4])
    assert [c.shape[1] for c in student(torch.randn(5, 32))] == [8, 16, 4]
    assert len(StudentGranularity(32, []).encoders) == 0


def test_no_gradient_reaches_the_frozen_teacher():
    splits = tiny_splits()
    teacher = teacher_model()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}  # includes BN running stats
    heads, _ = train_heads(teacher, splits, [(8, 2.0)], epochs=1, seed=0)
    assert all(p.grad is None for p in teacher.parameters())
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert any(p.grad is not None for p in heads[0].parameters())


def test_frozen_teacher_stays_in_eval_mode_and_outputs_no_graph():
    frozen = FrozenTeacher(teacher_model(), [TeacherHead(64, 8, 4)])
    frozen.train()
    assert not frozen.model.training
    out = frozen(torch.randn(2, 3, 16, 16))
    assert not out.logits.requires_grad and not out.codes[0].requires_grad
    assert out.decoder_logits[0].shape == (2, 4)


def test_task_loss_is_the_design_head_loss():
    import torch.nn.functional as F
    torch.manual_seed(1)
    teacher = teacher_model().eval()
    head = TeacherHead(64, 8, 4)
    task = HeadLearner(teacher, [head], [3.0])
    splits = tiny_splits()
    batch = next(iter(DeviceBatches(splits.train, splits.spec, 16, train=False)))
    loss = task.loss_components(batch, 0)["loss"]
    with torch.no_grad():
        features, t_logits = teacher(batch.images, features=True)
    _, dec = head(features[-1])
    p = F.softmax(t_logits / 3.0, 1)
    kl = (p * (p.log() - F.log_softmax(dec / 3.0, 1))).sum(1).mean() * 9.0
    assert torch.allclose(loss, kl + F.cross_entropy(dec, batch.labels), atol=1e-5)


def test_heads_trained_together_equal_heads_trained_alone():
    splits = tiny_splits()
    together, _ = train_heads(teacher_model(), splits, [(8, 2.0), (16, 8.0)], epochs=2, seed=3)
    alone, _ = train_heads(teacher_model(), splits, [(16, 8.0)], epochs=2, seed=3)
    for a, b in zip(together[1].state_dict().values(), alone[0].state_dict().values()):
        assert torch.equal(a, b)


def test_bank_trains_once_then_loads(tmp_path):
    bank = HeadBank(tmp_path)
    splits, teacher = tiny_splits(), teacher_model()
    keys = [key(8, 2.0), key(16, 8.0)]
    assert bank.ensure(teacher, keys, splits) == keys
    files = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.pt")}
    assert len(files) == 2
    assert bank.ensure(teacher, keys + [key(8, 2.0)], splits) == []  # nothing retrained
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.pt")} == files
    head = bank.load(keys[0], width=64, num_classes=4)
    assert isinstance(head, TeacherHead) and not head.training
    # A different key (other epochs) is a different head.
    assert bank.ensure(teacher, [replace(keys[0], epochs=2)], splits) == [replace(keys[0], epochs=2)]


def test_damaged_entry_is_retrained(tmp_path):
    bank = HeadBank(tmp_path)
    splits, teacher = tiny_splits(), teacher_model()
    bank.ensure(teacher, [key()], splits)
    bank.path(key()).write_bytes(b"truncated")
    assert not bank.has(key())
    assert bank.ensure(teacher, [key()], splits) == [key()]
    assert bank.has(key())


def _ask_for_head(root, queue):
    torch.set_num_threads(1)
    trained = HeadBank(root).ensure(teacher_model(), [key()], tiny_splits())
    queue.put(len(trained))


def test_two_processes_asking_at_once_end_with_one_valid_file(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ask_for_head, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert sorted(queue.get() for _ in procs) == [0, 1]  # one trained, the other loaded
    assert len(list(tmp_path.glob("*.pt"))) == 1
    assert not list(tmp_path.glob("*.tmp"))
    assert HeadBank(tmp_path).has(key())


@pytest.mark.parametrize("arch", ["resnet8x4", "wrn_16_2", "MobileNetV2", "ShuffleV2", "vgg8",
                                  "osnet_x0_25"])
def test_a_teacher_with_bf16_weights_computes_exactly_what_autocast_computes(arch):
    """Under bf16 autocast a GPU run keeps the frozen teacher's conv and linear weights in bf16
    (cast once) instead of letting autocast cast them every step: the outputs must not change by
    a bit. Checked under the CPU's bf16 autocast, which casts the same ops."""
    torch.manual_seed(0)
    model = create_model(arch, 10)
    cast_every_call = FrozenTeacher(model, [TeacherHead(model.embedding_dim, 16, 10)])
    cast_once = copy.deepcopy(cast_every_call)
    cast_once.store_matmul_weights_in(torch.bfloat16)
    dtypes = {type(m).__name__: m.weight.dtype for m in cast_once.modules()
              if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))}
    assert dtypes["Conv2d"] == dtypes["Linear"] == torch.bfloat16
    assert dtypes["BatchNorm2d"] == torch.float32
    images = torch.randn(3, 3, *((64, 32) if arch.startswith("osnet") else (32, 32)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = cast_every_call(images), cast_once(images)
    for a, b in zip([*want.features, want.logits, *want.codes, *want.decoder_logits],
                    [*got.features, got.logits, *got.codes, *got.decoder_logits]):
        assert a.dtype == b.dtype and torch.equal(a, b)
