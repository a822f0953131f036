"""Training-step cost of plain KD vs. mag and mas (2 heads), and the device loader vs. a
torchvision DataLoader — measured side by side in one run, printed as ratios.

    .venv/bin/python bench/step.py                      # resnet56 -> resnet20, batch 64, CPU
    .venv/bin/python bench/step.py --teacher resnet32x4 --student resnet8x4 --device cuda
    .venv/bin/python bench/step.py --bank               # teacher view bank vs online teacher

The machines are noisy: modes are interleaved round by round and the median per-step time of each
is compared, so drift hits every mode alike.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bank import print_bank, print_differences  # noqa: E402
from bench.loaders import compare_loaders  # noqa: E402
from mgkd.config import ExperimentConfig, resolve
from mgkd.data import DeviceBatches, load_splits  # noqa: E402
from mgkd.distill.learner import build_learner
from mgkd.knowledge.prepare import Knowledge

MODES = ("plain", "mag", "mas")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(mode: str, args: argparse.Namespace, splits):
    config = resolve(ExperimentConfig.from_dict({
        "teacher": args.teacher, "student": args.student, "dataset": "synthetic",
        "data_options": {"num_train": args.batch * 8, "num_test": 8, "num_classes": 100,
                         "image_size": 32},
        "method": "kd", "mode": mode, "batch_size": args.batch, "device": args.device}))
    knowledge = Knowledge.untrained(config, splits.spec.num_classes)
    device = torch.device(args.device)
    task = build_learner(config, splits, knowledge, device)
    optimizer = torch.optim.SGD(task.trainable_parameters(), lr=0.05, momentum=0.9)
    return task, optimizer


def time_steps(task, optimizer, batches, steps: int, device: torch.device) -> float:
    """Seconds per training step (forward of teacher and student, loss, backward, SGD step)."""
    task.train()
    it = iter(batches)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(it)
        loss = task.loss_components(batch, 0)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet56")
    parser.add_argument("--student", default="resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="steps per mode per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-loaders", action="store_true")
    parser.add_argument("--bank", action="store_true",
                        help="only the teacher view bank vs the online teacher (bench/bank.py)")
    parser.add_argument("--bank-images", type=int, default=8,
                        help="images whose 162 views the bank build is timed on (0: none)")
    parser.add_argument("--bank-build-only", action="store_true",
                        help="with --bank: only the build figures")
    parser.add_argument("--bank-exactness", type=int, metavar="EPOCHS", default=0,
                        help="only: how far runs reading a float32 / float16 bank are from the "
                             "online teacher's, over EPOCHS epochs of a tiny run")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.bank_exactness:
        print_differences(args.bank_exactness)
        return
    if args.bank:
        print_bank(time_steps, batch=args.batch, steps=args.steps, rounds=args.rounds,
                   images=args.bank_images, device=device, build_only=args.bank_build_only)
        return

    splits = load_splits("synthetic", ".", val_fraction=0.0, options={
        "num_train": args.batch * 8, "num_test": 8, "num_classes": 100, "image_size": 32})
    splits = splits.to(device)
    runs = {mode: build(mode, args, splits) for mode in MODES}
    generator = torch.Generator(device=device).manual_seed(0)
    batches = DeviceBatches(splits.train, splits.spec, args.batch, train=True, generator=generator)

    def endless():
        while True:
            yield from batches

    stream = endless()
    for mode in MODES:  # warm-up: first steps allocate and tune
        time_steps(*runs[mode], stream, 2, device)
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            samples[mode].append(time_steps(*runs[mode], stream, args.steps, device))
    median = {mode: statistics.median(values) for mode, values in samples.items()}

    print(f"training step, {args.teacher} -> {args.student}, batch {args.batch}, {device}, "
          f"kd, 2 heads (64@T2, 256@T8); median of {args.rounds} rounds x {args.steps} steps")
    for mode in MODES:
        print(f"  {mode:5s} {median[mode] * 1000:8.1f} ms/step   "
              f"ratio to plain {median[mode] / median['plain']:.3f}")

    if not args.skip_loaders:
        result = compare_loaders(batch_size=args.batch)
        print("loader, images/s over the same uint8 data, crop(pad 4) + flip + normalise:")
        for name, value in result.items():
            if isinstance(value, float):
                print(f"  {name:28s} {value:12.1f}")


if __name__ == "__main__":
    main()
