"""Side-by-side throughput of DeviceBatches and a torchvision DataLoader doing the same augmentation.

Both draw shuffled batches from the same synthetic uint8 images and apply random crop (padding 4),
random horizontal flip, conversion to float and normalisation. Figures are images per second, measured
in one run (machines are noisy: compare the ratio, not the absolute numbers).

    python bench/loaders.py [--num-images N] [--batch-size B] [--epochs E] [--image-size S]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset

try:
    import mgkd  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgkd.data import DatasetSpec, DeviceBatches, ImageSplit, load_splits

_PADDING = 4
_WARMUP_BATCHES = 5


class _UInt8ImageDataset(Dataset):
    """Per-sample view of a uint8 (N, C, H, W) tensor with a torchvision transform."""

    def __init__(self, split: ImageSplit, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.images = split.images
        self.labels = split.labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images_per_second(
    make_epoch: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    epochs: int,
    device: torch.device,
) -> float:
    """Time ``epochs`` full epochs; every batch ends on ``device``."""
    _sync(device)
    count = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for images, labels in make_epoch():
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            count += images.shape[0]
    _sync(device)
    return count / (time.perf_counter() - start)


def _warm_up(make_epoch: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> None:
    for i, _ in enumerate(make_epoch()):
        if i + 1 >= _WARMUP_BATCHES:
            break


def compare_loaders(
    num_images: int = 10000,
    batch_size: int = 64,
    epochs: int = 2,
    image_size: int = 32,
    *,
    device: str | torch.device = "cpu",
    worker_counts: tuple[int, ...] = (0, 2),
    rounds: int = 3,
    threads: int | None = None,
) -> dict:
    """Measure images/second of DeviceBatches(train=True) and of DataLoaders with ``worker_counts`` workers.

    The loaders take turns for ``rounds`` rounds of ``epochs`` epochs each (so background load hits all
    of them alike); the figures are each loader's best round, with its median round beside it. Ratios
    are DeviceBatches / DataLoader on the best rounds (above 1: DeviceBatches is faster). ``threads`` sets
    torch's intra-op thread count for the measurement (restored afterwards); None keeps the current one.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _compare(num_images, batch_size, epochs, image_size, torch.device(device), worker_counts, rounds)
    finally:
        torch.set_num_threads(previous_threads)


def _compare(
    num_images: int,
    batch_size: int,
    epochs: int,
    image_size: int,
    device: torch.device,
    worker_counts: tuple[int, ...],
    rounds: int,
) -> dict:
    """The measurement behind :func:`compare_loaders`."""
    splits = load_splits(
        "synthetic",
        ".",
        val_fraction=0.0,
        options={"num_train": num_images, "num_test": 1, "image_size": image_size, "seed": 0},
    )
    spec: DatasetSpec = dataclasses.replace(splits.spec, crop_padding=_PADDING, flip=True)
    cpu_split = splits.train

    generator = torch.Generator(device=device).manual_seed(0)
    batches = DeviceBatches(cpu_split.to(device), spec, batch_size, train=True, generator=generator)
    runners: dict[str, Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]] = {
        "device_batches": lambda: ((b.images, b.labels) for b in batches)
    }

    transform = T.Compose(
        [
            T.RandomCrop(image_size, padding=_PADDING),
            T.RandomHorizontalFlip(),
            T.ConvertImageDtype(torch.float32),
            T.Normalize(spec.mean, spec.std),
        ]
    )
    dataset = _UInt8ImageDataset(cpu_split, transform)
    for workers in worker_counts:
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=device.type == "cuda",
        )
        runners[f"dataloader_w{workers}"] = lambda loader=loader: loader

    for make_epoch in runners.values():
        _warm_up(make_epoch)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, make_epoch in runners.items():
            rates[name].append(_images_per_second(make_epoch, epochs, device))

    results: dict = {
        "num_images": num_images,
        "batch_size": batch_size,
        "epochs_per_round": epochs,
        "rounds": rounds,
        "image_size": image_size,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    for name, values in rates.items():
        results[f"{name}_images_per_s"] = max(values)
        results[f"{name}_images_per_s_median"] = statistics.median(values)
    best = results["device_batches_images_per_s"]
    for workers in worker_counts:
        results[f"ratio_vs_dataloader_w{workers}"] = best / results[f"dataloader_w{workers}_images_per_s"]
    return results


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: run the comparison (on CPU, and on CUDA when present) and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="*",
        default=[torch.get_num_threads(), 1],
        help="torch intra-op thread counts to measure (default: torch's default, then 1)",
    )
    args = parser.parse_args(argv)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for threads in dict.fromkeys(args.threads):
            result = compare_loaders(
                args.num_images, args.batch_size, args.epochs, args.image_size, device=device, threads=threads
            )
            print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
