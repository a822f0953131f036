"""The teacher view bank against the online teacher, side by side in one run (``bench/step.py
--bank`` prints it): ms per training step, kd in plain and mas, for resnet32x4 -> resnet8x4 and
resnet56 -> resnet20; and the bank's build time and size for CIFAR-100 shapes.

* Step timing: both variants train on the same synthetic 32x32 split of ``batch`` images with the
  same batches. Building a real 162-view bank of even 64 images takes the CPU minutes per teacher,
  so this split is augmented by flips alone (2 views, crop padding 0) for *both* variants: a bank
  step then gathers 64 rows with one index_select, exactly as from a 162-view bank (its size only
  changes which rows the page cache holds).
* Build figures: a real 162-view bank (crop padding 4 and flips, float16) of ``images`` synthetic
  images per teacher, timed, then scaled linearly to CIFAR-100's 50,000 training images; the size
  is computed for 50,000 x 162 x (100 logits + embedding) x 2 bytes.
"""
from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from mgkd.config import ExperimentConfig, resolve
from mgkd.data import DataSplits, DeviceBatches, load_config_splits, load_splits
from mgkd.distill.learner import build_learner, make_trainer
from mgkd.knowledge.bank_use import prepare_bank
from mgkd.knowledge.prepare import Knowledge
from mgkd.knowledge.views import BankLayout, human_bytes
from mgkd.models import create_model

PAIRS = (("resnet32x4", "resnet8x4"), ("resnet56", "resnet20"))
BANK_MODES = ("plain", "mas")
CIFAR100_TRAIN, CIFAR_VIEWS, CIFAR100_CLASSES = 50_000, 162, 100

TimeSteps = Callable[..., float]


def _config(teacher: str, student: str, mode: str, batch: int, device: str, cache: Path,
            bank: str) -> ExperimentConfig:
    return resolve(ExperimentConfig.from_dict({
        "teacher": teacher, "student": student, "dataset": "synthetic",
        "data_options": {"num_train": batch, "num_test": 8, "num_classes": CIFAR100_CLASSES,
                         "image_size": 32},
        "val_fraction": 0.0, "method": "kd", "mode": mode, "batch_size": batch,
        "device": device, "cache_dir": str(cache), "teacher_bank": bank}))


def with_bank(knowledge: Knowledge, config: ExperimentConfig, splits: DataSplits,
              device: torch.device) -> Knowledge:
    """``knowledge`` (of an untrained teacher, which has no file: its hash is made up from its
    name) with the bank of ``config``'s teacher built on ``splits``' training images."""
    model = create_model(config.teacher, splits.spec.num_classes)
    model.load_state_dict(knowledge.teacher_state)
    fake_hash = config.teacher.ljust(64, "0")
    bank = prepare_bank([(config, config.epochs)], splits, model.to(device), fake_hash, device)
    if bank.path is None:
        raise RuntimeError(f"no teacher view bank was built: {bank.note}")
    return dataclasses.replace(knowledge, teacher_hash=fake_hash, bank=bank)


def flip_only(splits: DataSplits) -> DataSplits:
    """``splits`` augmented by flips alone (2 views): a bank of it builds in seconds."""
    return dataclasses.replace(splits, spec=dataclasses.replace(splits.spec, crop_padding=0))


def _variants(teacher: str, student: str, mode: str, splits: DataSplits, batch: int,
              device: torch.device, cache: Path) -> dict[str, tuple]:
    """The online and the bank learner of one pair and mode, each with its optimizer."""
    runs = {}
    for name, setting in (("online", "off"), ("bank", "float16")):
        config = _config(teacher, student, mode, batch, device.type, cache, setting)
        knowledge = Knowledge.untrained(config, CIFAR100_CLASSES)
        if setting != "off":
            knowledge = with_bank(knowledge, config, splits, device)
        learner = build_learner(config, splits, knowledge, device)
        assert (learner.bank is not None) == (setting != "off")
        optimizer = torch.optim.SGD(learner.trainable_parameters(), lr=0.05, momentum=0.9)
        runs[name] = (learner, optimizer)
    return runs


def step_table(time_steps: TimeSteps, *, batch: int, steps: int, rounds: int,
               device: torch.device) -> Iterator[tuple[str, str, float, float]]:
    """(pair, mode, online ms/step, bank ms/step): medians of interleaved rounds, one row at a
    time."""
    splits = flip_only(load_splits("synthetic", ".", val_fraction=0.0, options={
        "num_train": batch, "num_test": 8, "num_classes": CIFAR100_CLASSES, "image_size": 32}))
    splits = splits.to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    batches = DeviceBatches(splits.train, splits.spec, batch, train=True, generator=generator,
                            views=True)

    def endless():
        while True:
            yield from batches

    stream = endless()
    with tempfile.TemporaryDirectory(prefix="mgkd-bank-bench-") as cache:
        for teacher, student in PAIRS:
            for mode in BANK_MODES:
                runs = _variants(teacher, student, mode, splits, batch, device, Path(cache))
                for run in runs.values():
                    time_steps(*run, stream, 2, device)  # warm-up
                samples: dict[str, list[float]] = {name: [] for name in runs}
                for _ in range(rounds):
                    for name, run in runs.items():
                        samples[name].append(time_steps(*run, stream, steps, device))
                yield (f"{teacher}->{student}", mode, statistics.median(samples["online"]) * 1000,
                       statistics.median(samples["bank"]) * 1000)


def build_figures(*, images: int, device: torch.device) -> list[tuple[str, int, float, float, int]]:
    """Per teacher: (teacher, embedding width, seconds for ``images`` x 162 rows, seconds scaled
    to 50,000 images, bytes of the CIFAR-100 float16 bank with logits and embedding)."""
    splits = load_splits("synthetic", ".", val_fraction=0.0, options={
        "num_train": images, "num_test": 8, "num_classes": CIFAR100_CLASSES,
        "image_size": 32}).to(device)
    assert splits.spec.crop_padding == 4 and splits.spec.flip  # CIFAR's 162 views
    figures = []
    with tempfile.TemporaryDirectory(prefix="mgkd-bank-build-") as cache:
        for teacher, student in PAIRS:
            config = _config(teacher, student, "mas", 64, device.type, Path(cache), "float16")
            model = create_model(teacher, CIFAR100_CLASSES).to(device)
            started = time.perf_counter()
            prepared = prepare_bank([(config, config.epochs)], splits, model,
                                    teacher.ljust(64, "1"), device)
            seconds = time.perf_counter() - started
            assert prepared.path is not None
            width = int(model.embedding_dim)
            size = BankLayout(CIFAR100_TRAIN, CIFAR_VIEWS, CIFAR100_CLASSES, width,
                              "float16").nbytes
            figures.append((teacher, width, seconds, seconds / images * CIFAR100_TRAIN, size))
    return figures


def print_bank(time_steps: TimeSteps, *, batch: int, steps: int, rounds: int, images: int,
               device: torch.device, build_only: bool = False) -> None:
    if not build_only:
        _print_steps(time_steps, batch=batch, steps=steps, rounds=rounds, device=device)
    if images:
        _print_build(images, device)


def _print_steps(time_steps: TimeSteps, *, batch: int, steps: int, rounds: int,
                 device: torch.device) -> None:
    print(f"teacher view bank vs online teacher, kd, batch {batch}, {device}; median of {rounds} "
          f"rounds x {steps} steps (bank float16; flip-only views, see bench/bank.py)")
    for pair, mode, online, bank in step_table(time_steps, batch=batch, steps=steps,
                                               rounds=rounds, device=device):
        print(f"  {pair:22s} {mode:5s} online {online:8.1f} ms/step   bank {bank:8.1f} ms/step"
              f"   speed-up {online / bank:.2f}x", flush=True)


def _print_build(images: int, device: torch.device) -> None:
    print(f"bank build, 162 views (pad 4 + flip), float16, logits + embedding; timed on {images} "
          f"synthetic images, scaled to CIFAR-100's {CIFAR100_TRAIN:,}:")
    for teacher, width, seconds, scaled, size in build_figures(images=images, device=device):
        print(f"  {teacher:11s} embedding {width:3d}: {seconds:7.1f} s for {images} images "
              f"({seconds / (images * CIFAR_VIEWS) * 1000:.2f} ms per image-view) -> "
              f"{scaled / 3600:8.1f} h for {CIFAR100_TRAIN:,}; size {human_bytes(size)}")


def loss_differences(*, epochs: int, cache: Path) -> dict[str, float]:
    """Largest relative difference of any per-epoch mean loss component between a run reading a
    float32 / float16 bank and the same run with the online teacher (resnet14 -> resnet8, kd mas,
    synthetic 8x8 images: padding 1 and flips, 18 views; 192 training images)."""
    base = {"teacher": "resnet14", "student": "resnet8", "dataset": "synthetic",
            "data_options": {"num_train": 256, "num_test": 32, "num_classes": 10,
                             "image_size": 8},
            "epochs": epochs, "batch_size": 32, "device": "cpu", "cache_dir": str(cache),
            "method": "kd", "mode": "mas",
            "granularities": [{"dim": 8, "temperature": 2.0}, {"dim": 32, "temperature": 8.0}]}
    histories = {}
    for setting in ("off", "float32", "float16"):
        config = resolve(ExperimentConfig.from_dict({**base, "teacher_bank": setting}))
        splits = load_config_splits(config)
        knowledge = Knowledge.untrained(config, 10)
        if setting != "off":
            model = create_model(config.teacher, 10)
            model.load_state_dict(knowledge.teacher_state)
            bank = prepare_bank([(config, epochs)], splits, model, "2" * 64, torch.device("cpu"))
            knowledge = dataclasses.replace(knowledge, teacher_hash="2" * 64, bank=bank)
        trainer = make_trainer(config, splits, knowledge)
        assert (trainer.learner.bank is not None) == (setting != "off")
        histories[setting] = trainer.fit().history
    names = [k for k in histories["off"][0] if k == "train_loss" or k.startswith("loss_")]
    names += ["val_acc", "val_loss"]

    def worst(setting: str) -> float:
        return max(abs(row[k] - ref[k]) / max(abs(ref[k]), 1e-12)
                   for row, ref in zip(histories[setting], histories["off"]) for k in names)

    return {"float32": worst("float32"), "float16": worst("float16")}


def print_differences(epochs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mgkd-bank-exact-") as cache:
        worst = loss_differences(epochs=epochs, cache=Path(cache))
    print(f"bank vs online teacher, {epochs} epochs (resnet14->resnet8, kd mas, synthetic 8x8, 18 "
          "views): largest relative difference of any per-epoch loss component, val_acc, val_loss:")
    for dtype, value in worst.items():
        print(f"  {dtype}: {value:.2e}")
