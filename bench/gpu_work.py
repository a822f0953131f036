"""What bench/gpu.py measures, built only from the product's own pieces: synthetic CIFAR-sized
splits, an untrained teacher's :class:`~mgkd.knowledge.prepare.Knowledge`, and a distillation
:class:`~mgkd.training.engine.Trainer` from :func:`~mgkd.distill.learner.make_trainer` on a
GPU — so the
config keys ``cuda_graphs``, ``amp``, ``channels_last``, ``eval_batch_size`` resolve as in a
user's run.

A block of training steps is one training epoch of that Trainer over a split of exactly N full
batches (``Trainer._train_epoch``: batches drawn and augmented on the device, the graphed or eager
step runner, one host read of the epoch's loss sums), so what is timed is what ``fit`` runs.

On the CPU (only for the test's self-check) the Trainer is built from the same pieces with an
:class:`~mgkd.training.steps.InlineRecorder` standing in for CUDA graphs; bf16 autocast is then off.
Imports pydantic (through mgkd.config): bench/gpu.py checks it is installed first.
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import torch

from bench.gpu_procs import Barrier, sleep_until
from bench.gpu_report import WorkerResult
from mgkd.config import ExperimentConfig, resolve
from mgkd.data import DataSplits, ImageSplit, RetrievalSplit, dataset_spec, load_splits
from mgkd.distill.learner import make_trainer
from mgkd.knowledge.prepare import Knowledge
from mgkd.training.engine import EpochReport, Trainer
from mgkd.training.steps import InlineRecorder

Setting = Union[bool, str]  # a config value: True, False or "auto"
READY_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Precision:
    amp: bool  # bf16 autocast
    channels_last: bool


PRECISIONS: dict[str, Precision] = {"fp32": Precision(False, False),
                                    "bf16+cl": Precision(True, True)}


@dataclass(frozen=True)
class DataSize:
    """Synthetic classification data: ``num_train`` images, of which ``val_fraction`` go to val,
    and ``num_test`` test images."""

    num_train: int
    num_test: int
    val_fraction: float = 0.0
    image_size: int = 32
    num_classes: int = 100

    def options(self) -> dict[str, int]:
        return {"num_train": self.num_train, "num_test": self.num_test,
                "num_classes": self.num_classes, "image_size": self.image_size}

    def load(self, device: torch.device) -> DataSplits:
        splits = load_splits("synthetic", ".", val_fraction=self.val_fraction,
                             options=self.options())
        return splits.to(device)

    def config_keys(self) -> dict[str, Any]:
        return {"dataset": "synthetic", "data_options": self.options(),
                "val_fraction": self.val_fraction}


@dataclass(frozen=True)
class ReidSize:
    """Market-1501-shaped re-ID data made on the device (random pixels): ``num_train`` training
    images of ``identities`` identities, and a test split of ``num_query`` queries against
    ``num_gallery`` gallery images of ``test_identities`` other identities, over ``cameras``
    cameras. The defaults are Market-1501's counts."""

    num_train: int = 12_936
    identities: int = 751
    num_query: int = 3_368
    num_gallery: int = 15_913
    test_identities: int = 750
    height: int = 256
    width: int = 128
    instances: int = 4  # K of the P x K batches
    cameras: int = 6

    @property
    def num_classes(self) -> int:
        return self.identities

    def options(self) -> dict[str, int]:
        return {"height": self.height, "width": self.width, "instances": self.instances}

    def config_keys(self) -> dict[str, Any]:
        return {"dataset": "market1501", "data_options": self.options(), "val_fraction": 0.0}

    def _split(self, count: int, identities: int, camera_shift: int,
               generator: torch.Generator, device: torch.device) -> ImageSplit:
        images = torch.randint(0, 256, (count, 3, self.height, self.width), dtype=torch.uint8,
                               generator=generator, device=device)
        positions = torch.arange(count, device=device)
        cameras = (positions // identities + camera_shift) % self.cameras + 1
        return ImageSplit(images, positions % identities, cameras)

    def load(self, device: torch.device) -> DataSplits:
        generator = torch.Generator(device=device).manual_seed(0)
        spec = dataclasses.replace(dataset_spec("market1501", self.options()),
                                   num_classes=self.identities)
        train = self._split(self.num_train, self.identities, 0, generator, device)
        # Test identities from 1 (0 marks distractors); queries and gallery images of an identity
        # come from different cameras, so every query has true matches to rank.
        query = self._split(self.num_query, self.test_identities, 0, generator, device)
        gallery = self._split(self.num_gallery, self.test_identities, 1, generator, device)
        query.labels.add_(1)
        gallery.labels.add_(1)
        return DataSplits(spec=spec, train=train, val=None, test=RetrievalSplit(query, gallery))


Data = Union["DataSize", ReidSize]


@dataclass(frozen=True)
class RunSpec:
    """One distillation run's config keys that the benchmark varies (kd, one seed)."""

    teacher: str
    student: str
    mode: str = "mas"
    batch: int = 64
    epochs: int = 1
    cuda_graphs: Setting = False
    amp: Setting = False
    channels_last: Setting = False
    cudnn_benchmark: Setting = False
    teacher_bank: str = "off"  # the benchmark's knowledge carries a bank only where it asks

    @classmethod
    def variant(cls, teacher: str, student: str, mode: str, precision: str, graphed: bool,
                batch: int) -> "RunSpec":
        p = PRECISIONS[precision]
        return cls(teacher, student, mode, batch, cuda_graphs=graphed, amp=p.amp,
                   channels_last=p.channels_last)

    def config(self, data: Data, device: str) -> ExperimentConfig:
        on_cpu = device == "cpu"
        return resolve(ExperimentConfig.from_dict({
            "teacher": self.teacher, "student": self.student, **data.config_keys(),
            "method": "kd", "mode": self.mode, "batch_size": self.batch, "epochs": self.epochs,
            "lr_milestones": [1.0],  # no lr change inside a short run: no re-recording timed
            "device": device, "cuda_graphs": False if on_cpu else self.cuda_graphs,
            "amp": self.amp, "channels_last": self.channels_last, "eval_batch_size": "auto",
            "cudnn_benchmark": self.cudnn_benchmark, "teacher_bank": self.teacher_bank}))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def untrained_knowledge(spec: RunSpec, data: Data) -> Knowledge:
    """A randomly initialised teacher with the heads of mode mas (they serve mag too)."""
    config = dataclasses.replace(spec, mode="mas").config(data, "cpu")
    return Knowledge.untrained(config, data.num_classes)


def _expected(setting: Setting, on_cuda: bool) -> bool:
    return on_cuda if setting == "auto" else bool(setting)


def build_trainer(spec: RunSpec, data: Data, splits: DataSplits, knowledge: Knowledge,
                  device: torch.device, *,
                  callbacks: list[Callable[[EpochReport], None]] | None = None) -> Trainer:
    """The Trainer a user's run of ``spec`` gets (``make_trainer``); on the CPU one built from the
    same pieces with an InlineRecorder for ``cuda_graphs``. Raises when the resolved execution is
    not what ``spec`` asks for, so no table row is mislabelled."""
    on_cuda = device.type == "cuda"
    config = spec.config(data, "cuda" if on_cuda else "cpu")
    recorder = InlineRecorder() if spec.cuda_graphs and not on_cuda else None
    trainer = make_trainer(config, splits, knowledge, callbacks=callbacks, recorder=recorder)
    got = trainer.execution
    want = (_expected(spec.cuda_graphs, on_cuda) if on_cuda else bool(spec.cuda_graphs),
            _expected(spec.amp, on_cuda) and on_cuda, _expected(spec.channels_last, on_cuda))
    if (got.cuda_graphs, trainer.amp, got.channels_last) != want:
        raise RuntimeError(f"{spec} resolved to {got} (amp active: {trainer.amp}); expected "
                           f"cuda_graphs/amp/channels_last = {want}")
    return trainer


class StepClock:
    """Times blocks of a Trainer's training steps; one block is one training epoch (every batch
    of the split, a last partial one included: what ``fit`` runs)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.steps = trainer.steps_per_epoch()

    def block(self) -> float:
        """Seconds per step over one block (synchronised before and after)."""
        device = self.trainer.device
        sync(device)
        start = time.perf_counter()
        means = self.trainer._train_epoch(0)  # the step loop fit() runs, at the first epoch's lr
        sync(device)
        seconds = (time.perf_counter() - start) / self.steps
        if not math.isfinite(means["train_loss"]):
            raise RuntimeError(f"the training loss became {means['train_loss']}")
        return seconds

    @property
    def replays(self) -> int | None:
        recorder = self.trainer.recorder
        return recorder.replays if isinstance(recorder, InlineRecorder) else None

    def close(self) -> None:
        self.trainer.close()


def interleaved_medians(clocks: dict[str, StepClock], rounds: int, warmup_blocks: int = 2,
                        progress: Callable[[str], None] | None = None
                        ) -> tuple[dict[str, float], dict[str, str]]:
    """Median seconds per step of each clock over ``rounds`` rounds, one block of each per round
    (after ``warmup_blocks`` untimed blocks each: warm-up steps, recording, cuDNN's choices).
    A clock whose block raises is dropped; returns (medians, error text of each dropped one)."""
    failed: dict[str, str] = {}
    samples: dict[str, list[float]] = {name: [] for name in clocks}

    def run(name: str, clock: StepClock) -> float | None:
        if name in failed:
            return None
        try:
            return clock.block()
        except Exception as err:  # e.g. CaptureFailed: the other variants still get measured
            failed[name] = f"{type(err).__name__}: {err}"
            return None

    for _ in range(warmup_blocks):
        for name, clock in clocks.items():
            run(name, clock)
    for index in range(rounds):
        for name, clock in clocks.items():
            value = run(name, clock)
            if value is not None:
                samples[name].append(value)
        if progress is not None:
            progress(f"round {index + 1}/{rounds}")
    medians = {name: statistics.median(values) for name, values in samples.items()
               if values and name not in failed}
    return medians, failed


@dataclass
class FitTiming:
    """One ``Trainer.fit``: wall time of each epoch (train + val + test), of one evaluation of val
    and test alone afterwards, and the run's peak memory (bytes; None off the GPU)."""

    epoch_seconds: list[float]
    eval_seconds: float
    train_images: int
    val_images: int
    test_images: int
    train_steps: int
    last_metrics: dict[str, Any] = field(default_factory=dict)
    max_allocated: int | None = None
    max_reserved: int | None = None
    device_used: int | None = None


def _device_used(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return int(total - free)


def time_fit(spec: RunSpec, data: Data, splits: DataSplits, knowledge: Knowledge,
             device: torch.device, before_fit: Callable[[], None] | None = None) -> FitTiming:
    """Fit ``spec`` for its epochs with the real Trainer, timing each epoch by wall clock."""
    marks: list[float] = []
    used: list[int] = []

    def on_epoch(report: EpochReport) -> None:  # after val and test: metrics are on the host
        marks.append(time.perf_counter())
        value = _device_used(device)  # the graph and its pool are still held here
        if value is not None:
            used.append(value)

    trainer = build_trainer(spec, data, splits, knowledge, device, callbacks=[on_epoch])
    if before_fit is not None:
        before_fit()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    steps_per_epoch = trainer.steps_per_epoch()
    state = trainer.fit()
    edges = [start, *marks]
    epoch_seconds = [b - a for a, b in zip(edges, edges[1:])]
    sync(device)
    began = time.perf_counter()
    trainer.evaluate(splits.val, "val")
    trainer.evaluate(splits.test, "test")
    sync(device)
    eval_seconds = time.perf_counter() - began
    on_cuda = device.type == "cuda"
    last = state.history[-1] if state.history else {}
    val_images = 0 if splits.val is None else len(splits.val)
    return FitTiming(
        epoch_seconds=epoch_seconds, eval_seconds=eval_seconds,
        train_images=len(splits.train), val_images=val_images, test_images=len(splits.test),
        train_steps=state.epoch * steps_per_epoch,
        last_metrics={k: last[k] for k in ("train_loss", "val_acc", "test_acc", "test_map",
                                            "test_rank1") if k in last},
        max_allocated=int(torch.cuda.max_memory_allocated(device)) if on_cuda else None,
        max_reserved=int(torch.cuda.max_memory_reserved(device)) if on_cuda else None,
        device_used=max(used) if used else None)


# ---- worker processes ----------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process runs: ``steps`` (graphed or eager steps for ``seconds``, after the
    barrier) or ``fit`` (one real trial: Trainer.fit, for its peak memory)."""

    kind: str
    run: RunSpec
    data: DataSize
    device: str
    barrier: str
    worker: int = 0
    seconds: float = 10.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "WorkerSpec":
        raw = json.loads(text)
        return cls(**{**raw, "run": RunSpec(**raw["run"]), "data": DataSize(**raw["data"])})


def _memory(device: torch.device) -> dict[str, int | None]:
    if device.type != "cuda":
        return {"max_allocated": None, "max_reserved": None, "device_used": None}
    return {"max_allocated": int(torch.cuda.max_memory_allocated(device)),
            "max_reserved": int(torch.cuda.max_memory_reserved(device)),
            "device_used": _device_used(device)}


def _steps_worker(spec: WorkerSpec, device: torch.device) -> WorkerResult:
    splits = spec.data.load(device)
    knowledge = untrained_knowledge(spec.run, spec.data)
    clock = StepClock(build_trainer(spec.run, spec.data, splits, knowledge, device))
    for _ in range(2):  # warm-up steps and recording happen before the barrier
        clock.block()
    barrier = Barrier(Path(spec.barrier))
    barrier.ready(spec.worker)
    sleep_until(barrier.wait(READY_TIMEOUT_S))
    start = time.perf_counter()
    steps = 0
    while time.perf_counter() - start < spec.seconds:
        clock.block()
        steps += clock.steps
    sync(device)
    seconds = time.perf_counter() - start
    memory = _memory(device)  # before close(): the graph's pool still counts
    replays = clock.replays
    clock.close()
    return WorkerResult(worker=spec.worker, steps=steps, batch=spec.run.batch, seconds=seconds,
                        replays=replays, **memory)


def _fit_worker(spec: WorkerSpec, device: torch.device) -> WorkerResult:
    splits = spec.data.load(device)
    knowledge = untrained_knowledge(spec.run, spec.data)
    barrier = Barrier(Path(spec.barrier))

    def wait_for_go() -> None:
        barrier.ready(spec.worker)
        sleep_until(barrier.wait(READY_TIMEOUT_S))

    timing = time_fit(spec.run, spec.data, splits, knowledge, device, before_fit=wait_for_go)
    return WorkerResult(worker=spec.worker, steps=timing.train_steps, batch=spec.run.batch,
                        seconds=sum(timing.epoch_seconds), max_allocated=timing.max_allocated,
                        max_reserved=timing.max_reserved, device_used=timing.device_used)


WORKERS: dict[str, Callable[[WorkerSpec, torch.device], WorkerResult]] = {
    "steps": _steps_worker, "fit": _fit_worker}


def run_worker(spec: WorkerSpec) -> WorkerResult:
    try:
        work = WORKERS[spec.kind]
    except KeyError:
        raise ValueError(f"worker kind {spec.kind!r}; allowed: {', '.join(WORKERS)}") from None
    return work(spec, torch.device(spec.device))


def step_variants(pairs: Sequence[tuple[str, str]], modes: Sequence[str],
                  precisions: Sequence[str], batch: int) -> dict[tuple, RunSpec]:
    """Every (teacher, student, mode, precision, graphed) the step table compares."""
    return {(t, s, mode, precision, graphed): RunSpec.variant(t, s, mode, precision, graphed, batch)
            for t, s in pairs for mode in modes for precision in precisions
            for graphed in (False, True)}
