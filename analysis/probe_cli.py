"""The model-analysis subcommands of ``mgkd``: noise, cka, transfer.

Each takes model files (``teacher.pt``, ``student.pt``, a run dir holding one, or a RepDistiller
checkpoint with ``--arch``) and computes with :mod:`mgkd.probe`; this module parses, prints and
writes. Building the parsers loads no torch: it loads in the handlers.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from mgkd.catalog.datasets import DATASET_NAMES
from mgkd.catalog.models import MODEL_NAMES

SPLIT_HELP = ("held-out split: test (the data set's own test images) or val (the validation "
              "images the model's training held out); default test")


def _device(name: str):
    from mgkd.training.engine import resolve_device
    return resolve_device(name)


def _writable(out: str):
    from mgkd.paths import writable_dir
    return writable_dir(out, "--out", "give a directory you can write (created if missing).")


def _write_json(path: Path, payload: dict) -> None:
    from mgkd.io import atomic_write_text
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")


def cmd_noise(args: argparse.Namespace) -> int:
    from mgkd.probe.runs import noise_report

    out = _writable(args.out) if args.out else None
    report = noise_report(args.model_file, arch=args.arch, dataset=args.dataset,
                          data_dir=args.data_dir, split=args.split, bins=args.bins,
                          device=_device(args.device))
    print(f"{report.arch} on {report.dataset} {report.split} ({report.samples} images): "
          f"accuracy {report.accuracy:.2f}%  prediction noise {report.prediction_noise:.4f}  "
          f"ECE {100 * report.ece:.2f}% ({report.ece_bins} bins)  "
          f"mean confidence {report.mean_confidence:.4f}")
    if out is not None:
        _write_json(out / "noise.json", asdict(report))
        print(f"written: {out / 'noise.json'}")
    return 0


def cmd_cka(args: argparse.Namespace) -> int:
    from analysis.cka_plot import cka_heatmap_png
    from mgkd.io import atomic_write_text
    from mgkd.probe.runs import cka_report

    out = _writable(args.out)
    result = cka_report(args.teacher_file, args.student_file, teacher_arch=args.teacher_arch,
                        student_arch=args.student_arch, dataset=args.dataset,
                        data_dir=args.data_dir, split=args.split, samples=args.samples,
                        seed=args.seed, device=_device(args.device))
    matrix = result.matrix
    atomic_write_text(out / "cka.csv", matrix.to_csv())
    title = (f"linear CKA: {result.teacher.arch} (teacher) vs {result.student.arch} (student), "
             f"{result.dataset} {result.split}, {result.samples} images")
    cka_heatmap_png(matrix, title, out / "cka.png")
    width = max(len(s) for s in matrix.teacher_stages)
    print(title)
    print(" " * width + "".join(f"{s:>11}" for s in matrix.student_stages))
    for name, row in zip(matrix.teacher_stages, matrix.values):
        print(f"{name:<{width}}" + "".join(f"{v:>11.4f}" for v in row))
    print(f"written: {out / 'cka.csv'}, {out / 'cka.png'}")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from mgkd.probe.runs import transfer_report
    from mgkd.probe.transfer import ProbeSettings

    settings = ProbeSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, seed=args.seed)
    out = _writable(args.out)
    result = transfer_report(args.model_file, args.dataset, arch=args.arch,
                             data_dir=args.data_dir, image_size=args.image_size,
                             settings=settings, device=_device(args.device))
    probe = result.probe
    print(f"{result.arch} -> {result.dataset} ({result.image_size}x{result.image_size}): linear "
          f"probe on the frozen {probe.feature_dim}-d penultimate features: test_acc "
          f"{probe.test_acc:.2f}% ({probe.test_images} images), train_acc {probe.train_acc:.2f}% "
          f"({probe.train_images}); features {probe.feature_seconds:.1f} s, probe "
          f"{probe.probe_seconds:.1f} s")
    path = out / f"transfer-{result.dataset}.json"
    _write_json(path, {**result.to_dict(), "settings": asdict(settings)})
    print(f"written: {path}")
    return 0


def _common(p: argparse.ArgumentParser, *, arch: bool = True) -> None:
    if arch:
        p.add_argument("--arch", metavar="ARCH",
                       help="architecture (default: read from the file, which `mgkd teacher` and "
                            f"`mgkd train` write); one of {', '.join(MODEL_NAMES)}")
    p.add_argument("--data-dir", default="./data", metavar="DIR",
                   help="where file-based data sets live (default ./data)")
    p.add_argument("--device", default="auto",
                   help="auto (the visible GPU, else CPU), cpu, cuda or cuda:N (default auto)")


def add_probe_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``noise``, ``cka`` and ``transfer`` to the ``mgkd`` program."""
    dataset_help = ("data set to evaluate on (default: the one the model file records; needed "
                    f"for RepDistiller files); one of {', '.join(DATASET_NAMES)}")

    p = subparsers.add_parser(
        "noise", help="prediction noise and calibration error of a model",
        description="Accuracy, mean prediction noise (per image: the sum over the non-top "
                    "classes of |p_j - (1 - p_max)/(C - 1)|, how unevenly the probability left "
                    "after the top class is spread) and expected calibration error (equal-width "
                    "confidence bins) on a held-out split.")
    p.add_argument("model_file", metavar="MODEL_FILE",
                   help="teacher.pt, student.pt, a run dir holding one, or a RepDistiller file")
    p.add_argument("--dataset", metavar="NAME", help=dataset_help)
    p.add_argument("--split", default="test", choices=["test", "val"], help=SPLIT_HELP)
    p.add_argument("--bins", type=int, default=15, metavar="M",
                   help="confidence bins of the ECE (default 15)")
    p.add_argument("--out", metavar="DIR", help="also write DIR/noise.json")
    _common(p)
    p.set_defaults(handler=cmd_noise)

    p = subparsers.add_parser(
        "cka", help="linear CKA between every teacher stage and every student stage",
        description="Linear CKA (Kornblith et al. 2019) of every teacher stage output (stem, "
                    "each stage, the pooled embedding) with every student stage output on a "
                    "seeded subset of a held-out split; writes OUT/cka.csv and OUT/cka.png.")
    p.add_argument("teacher_file", metavar="TEACHER_FILE",
                   help="teacher.pt or a run dir of `mgkd teacher` (or a RepDistiller file)")
    p.add_argument("student_file", metavar="STUDENT_FILE",
                   help="student.pt or a run dir of `mgkd train`")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for cka.csv and cka.png")
    p.add_argument("--teacher-arch", metavar="ARCH", help="teacher architecture if the file "
                   "does not say it")
    p.add_argument("--student-arch", metavar="ARCH", help="student architecture if the file "
                   "does not say it")
    p.add_argument("--dataset", metavar="NAME", help=dataset_help)
    p.add_argument("--split", default="test", choices=["test", "val"], help=SPLIT_HELP)
    p.add_argument("--samples", type=int, default=1000, metavar="N",
                   help="images compared (a seeded subset; default 1000; all if fewer)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset (default 0)")
    _common(p, arch=False)
    p.set_defaults(handler=cmd_cka)

    p = subparsers.add_parser(
        "transfer", help="linear probe of a model's frozen features on another data set",
        description="Compute the model's penultimate features (the pooled embedding that feeds "
                    "its classifier) once per split, frozen, then train a linear classifier on "
                    "the training features and report its test accuracy. stl10 reads the official "
                    "binary files (DATA_DIR/stl10_binary/), tiny_imagenet the official folder "
                    "(DATA_DIR/tiny-imagenet-200/); any classification data set works.")
    p.add_argument("model_file", metavar="MODEL_FILE",
                   help="teacher.pt, student.pt, a run dir holding one, or a RepDistiller file")
    p.add_argument("--dataset", required=True, metavar="NAME",
                   help=f"target data set: stl10, tiny_imagenet or any of "
                        f"{', '.join(DATASET_NAMES)}")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory for transfer-<dataset>.json")
    p.add_argument("--image-size", type=int, metavar="S",
                   help="side the stl10 / tiny_imagenet images are resized to (default 32; 64 for "
                        "re-ID backbones)")
    p.add_argument("--epochs", type=int, default=30, help="probe epochs (default 30)")
    p.add_argument("--batch-size", type=int, default=256, help="probe batch size (default 256)")
    p.add_argument("--lr", type=float, default=1e-2, help="probe Adam learning rate (default 0.01)")
    p.add_argument("--weight-decay", type=float, default=1e-4,
                   help="probe L2 weight decay (default 0.0001)")
    p.add_argument("--seed", type=int, default=0, help="probe seed (default 0)")
    _common(p)
    p.set_defaults(handler=cmd_transfer)
