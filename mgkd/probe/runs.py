"""The analyses end to end, from model files to results: what ``mgkd noise``, ``mgkd cka`` and
``mgkd transfer`` compute (the command line prints and writes them)."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mgkd.catalog.datasets import dataset_entry, dataset_task
from mgkd.catalog.models import model_entry
from mgkd.catalog.tasks import CLASSIFICATION
from mgkd.data import ImageSplit, load_splits
from mgkd.errors import ConfigError
from mgkd.probe.cka import CkaMatrix, centered_gram, cka_matrix
from mgkd.probe.modelfile import ModelFile, data_of, load_model_file
from mgkd.probe.noise import DEFAULT_BINS, NoiseReport, noise_of
from mgkd.probe.outputs import check_classes, held_out_split, run_model, stage_names
from mgkd.probe.transfer import ProbeResult, ProbeSettings, linear_probe

log = logging.getLogger(__name__)
DEFAULT_CKA_SAMPLES = 1000
# Re-ID backbones take person crops: sides multiples of 32, at least 64 x 32.
REID_MIN_SIDE = 64


def noise_report(path: str | Path, *, arch: str | None = None, dataset: str | None = None,
                 data_dir: str | Path = "./data", split: str = "test", bins: int = DEFAULT_BINS,
                 device: torch.device | str = "cpu") -> NoiseReport:
    """Accuracy, prediction noise and ECE of a model file on a held-out split."""
    if bins < 1:
        raise ConfigError(f"noise: --bins must be 1 or more, got {bins}")
    model_file = load_model_file(path, arch=arch)
    data = data_of(model_file, dataset, "noise")
    images, spec = held_out_split(data, data_dir, split, "noise")
    check_classes(model_file.model, model_file.arch, spec, "noise")
    out = run_model(model_file.model, images, spec, device=device)
    return NoiseReport(model=str(model_file.path), arch=model_file.arch, dataset=data.dataset,
                       split=split, samples=len(images), ece_bins=bins,
                       **noise_of(out.logits, out.labels, bins=bins))


@dataclass(frozen=True)
class CkaResult:
    teacher: ModelFile
    student: ModelFile
    dataset: str
    split: str
    samples: int
    matrix: CkaMatrix


def _subset(split: ImageSplit, samples: int, seed: int) -> ImageSplit:
    if samples >= len(split):
        return split
    chosen = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:samples]
    return split.select(chosen.sort().values)


def cka_report(teacher_path: str | Path, student_path: str | Path, *,
               teacher_arch: str | None = None, student_arch: str | None = None,
               dataset: str | None = None, data_dir: str | Path = "./data", split: str = "test",
               samples: int = DEFAULT_CKA_SAMPLES, seed: int = 0,
               device: torch.device | str = "cpu") -> CkaResult:
    """Linear CKA of every teacher stage with every student stage on ``samples`` images (a seeded
    subset) of a held-out split of the student's data set."""
    if samples < 2:
        raise ConfigError(f"cka: --samples must be 2 or more, got {samples}")
    teacher = load_model_file(teacher_path, arch=teacher_arch, what="TEACHER_FILE")
    student = load_model_file(student_path, arch=student_arch, what="STUDENT_FILE")
    if dataset is None and student.trained_on is None and teacher.trained_on is not None:
        dataset = teacher.trained_on.dataset
    data = data_of(student, dataset, "cka")
    images, spec = held_out_split(data, data_dir, split, "cka")
    for model_file in (teacher, student):
        check_classes(model_file.model, model_file.arch, spec, "cka")
    images = _subset(images, samples, seed)
    grams, names = {}, {}
    for role, model_file in (("teacher", teacher), ("student", student)):
        features = run_model(model_file.model, images, spec, keep="all", device=device).features
        grams[role] = [centered_gram(f) for f in features]  # n x n each; the maps are dropped
        names[role] = stage_names(len(features))
        del features
    matrix = cka_matrix(grams["teacher"], grams["student"], names["teacher"], names["student"])
    return CkaResult(teacher, student, data.dataset, split, len(images), matrix)


@dataclass(frozen=True)
class TransferResult:
    model: str
    arch: str
    dataset: str
    image_size: int
    probe: ProbeResult

    def to_dict(self) -> dict:
        return {"model": self.model, "arch": self.arch, "dataset": self.dataset,
                "image_size": self.image_size, **asdict(self.probe)}


def transfer_options(dataset: str, arch: str, image_size: int | None) -> tuple[dict, int | None]:
    """The target's ``data_options`` for ``image_size`` (default 32, 64 for re-ID backbones);
    ConfigError when the data set has a fixed size or the model cannot take it."""
    takes_size = "image_size" in dataset_entry(dataset, "--dataset").options
    reid = model_entry(arch, "--arch").reid
    if image_size is None and takes_size:
        image_size = REID_MIN_SIDE if reid else 32
    if image_size is not None and not takes_size:
        raise ConfigError(f"transfer: --image-size applies to stl10 and tiny_imagenet (resized "
                          f"when read); {dataset} has a fixed size. Drop --image-size.")
    if reid and (image_size is None or image_size < REID_MIN_SIDE or image_size % 32):
        raise ConfigError(f"transfer: {arch} is a person re-ID backbone: its input sides must be "
                          f"multiples of 32, at least {REID_MIN_SIDE}; use stl10 or tiny_imagenet "
                          f"with --image-size 64 (or 96 for stl10).")
    return ({"image_size": image_size} if takes_size else {}), image_size


def transfer_report(path: str | Path, dataset: str, *, arch: str | None = None,
                    data_dir: str | Path = "./data", image_size: int | None = None,
                    settings: ProbeSettings = ProbeSettings(),
                    device: torch.device | str = "cpu") -> TransferResult:
    """Linear-probe accuracy of a model file's frozen penultimate features on ``dataset``'s
    test split, the probe trained on its whole training split."""
    model_file = load_model_file(path, arch=arch)
    if dataset_task(dataset) != CLASSIFICATION:
        raise ConfigError(f"transfer: --dataset {dataset} is a person re-ID data set; give a "
                          "classification data set (stl10, tiny_imagenet, cifar10, ...).")
    options, size = transfer_options(dataset, model_file.arch, image_size)
    splits = load_splits(dataset, Path(data_dir).expanduser(), val_fraction=0.0, options=options)
    assert isinstance(splits.test, ImageSplit)
    probe = linear_probe(model_file.model, splits.train, splits.test, splits.spec,
                         settings=settings, device=device)
    log.info("transfer %s -> %s: probe test_acc %.2f", model_file.arch, dataset, probe.test_acc)
    return TransferResult(str(model_file.path), model_file.arch, dataset,
                          size if size is not None else splits.spec.height, probe)
