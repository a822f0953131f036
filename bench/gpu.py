"""The GPU fast path, measured side by side in one run: eager vs CUDA-graphed training steps, a full
epoch through the real Trainer, concurrent trials on one GPU and each trial's peak memory.

    python bench/gpu.py            # about 4-6 minutes on an H100
    python bench/gpu.py --quick    # smaller data and shorter runs: a smoke run of every phase
    python bench/gpu.py --phases steps,epoch --concurrency-eager

1. steps: ms/step eager vs graphed, resnet32x4->resnet8x4 and resnet56->resnet20, kd, batch 64,
   32x32 synthetic images, 100 classes; modes plain, mag, mas; fp32 and bf16 + channels-last.
   Every variant is a Trainer from make_trainer; a block is N steps between two synchronisations,
   variants interleaved round by round and the median kept, so drift hits all alike. Short
   blocks compare variants; the aims are judged on full-length epochs (phase 2).
2. epoch: Trainer.fit for two epochs on 45k/5k/10k images (train/val/test), resnet32x4->resnet8x4
   mas, with the GPU defaults (cuda_graphs true, amp and channels_last auto) and eager fp32; the
   240-epoch time extrapolated; then one more full training epoch alone (704 steps, the last
   partial), whose ms/step judges the step aim.
5. reid: OSNet x1.0 -> x0.75, kd mas, on Market-1501-shaped data made on the GPU (12,936 training
   images at 256x128, P x K batches of 64, evaluation of 3,368 queries against 15,913 gallery
   images): a training epoch and the evaluation, eager vs graphed (bf16 + channels-last).
3. concurrency: 1, 2, 4, 8 processes training graphed steps on one GPU for a fixed time, started
   together; summed images/s and its ratio to one trial (--concurrency-eager: eager ones too).
4. memory: one trial alone per pair (Trainer.fit, one epoch): peak allocated / reserved and what
   the GPU holds for it, so how many trials fit on one GPU.
6. bank: graphed steps reading the teacher view bank vs running the teacher, kd plain and mas,
   per pair (bf16 + channels-last; flip-only step data, so the bank builds in seconds).

Needs only torch and mgkd (and pydantic, PyYAML, numpy, which mgkd imports); never Ray. Without a
CUDA GPU it says so and exits 0. With OUT set, every figure also goes to $OUT/gpu_bench.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gpu_procs import Barrier, run_together  # noqa: E402
from bench.gpu_report import (GIB, WorkerResult, extrapolate_run, fmt_duration,  # noqa: E402
                              fmt_gib, fmt_ms, fmt_ratio, format_table, parse_worker_output,
                              ratio, scaling, trials_that_fit, verdict)

SKIP_MESSAGE = "bench/gpu.py: no CUDA GPU is visible; the GPU benchmark was skipped."
# module -> what installs it; mgkd imports each of them when the benchmark loads it.
REQUIRED = {"pydantic": "pydantic==2.14.4", "yaml": "PyYAML==6.0.4", "numpy": "numpy"}
AIM_PAIR = ("resnet32x4", "resnet8x4")
AIM_STEP_S = 0.003  # graphed mas step
AIM_RUN_S = 600.0  # 240 epochs
AIM_FOUR_TRIALS = 1.25  # 4 graphed trials vs 1
TOTAL_EPOCHS = 240
JSON_NAME = "gpu_bench.json"


@dataclass(frozen=True)
class Settings:
    pairs: tuple[tuple[str, str], ...]
    batch: int
    steps: int  # steps per timed block
    rounds: int
    image_size: int
    num_classes: int
    epoch_images: tuple[int, int]  # (train + val, test); val is a tenth of the first
    fit_epochs: int
    trials: tuple[int, ...]
    seconds: float
    # phase 5's bench.gpu_work.ReidSize fields ({}: Market-1501's counts); a dict, as this
    # module imports nothing of mgkd before it has checked mgkd's requirements
    reid: dict[str, int] = dataclasses.field(default_factory=dict)
    reid_pair: tuple[str, str] = ("osnet_x1_0", "osnet_x0_75")
    modes: tuple[str, ...] = ("plain", "mag", "mas")
    precisions: tuple[str, ...] = ("fp32", "bf16+cl")
    concurrency_eager: bool = False


PRESETS: dict[str, Settings] = {
    "full": Settings(pairs=(AIM_PAIR, ("resnet56", "resnet20")), batch=64, steps=20, rounds=7,
                     image_size=32, num_classes=100, epoch_images=(50_000, 10_000), fit_epochs=2,
                     trials=(1, 2, 4, 8), seconds=10.0),
    "quick": Settings(pairs=(AIM_PAIR, ("resnet56", "resnet20")), batch=64, steps=10, rounds=3,
                      image_size=32, num_classes=100, epoch_images=(5_000, 1_000), fit_epochs=2,
                      trials=(1, 2, 4), seconds=3.0,
                      reid={"num_train": 2_560, "identities": 160, "num_query": 500,
                            "num_gallery": 2_000, "test_identities": 100}),
    # --allow-cpu without a GPU: the same code paths, tiny, for the test suite's self-check.
    "cpu": Settings(pairs=(("resnet14", "resnet8"),), batch=8, steps=2, rounds=1, image_size=16,
                    num_classes=10, epoch_images=(40, 16), fit_epochs=2, trials=(1,),
                    seconds=0.3,
                    reid={"num_train": 16, "identities": 4, "num_query": 4, "num_gallery": 8,
                          "test_identities": 2, "height": 32, "width": 16},
                    reid_pair=("osnet_x0_25", "osnet_x0_25")),
}


class Bench:
    """One benchmark run: settings, device, progress lines and the figures gathered so far."""

    def __init__(self, settings: Settings, device: torch.device, out_dir: Path | None):
        self.settings = settings
        self.device = device
        self.out_dir = out_dir
        self.started = time.perf_counter()
        self.figures: dict[str, Any] = {"settings": dataclasses.asdict(settings),
                                        "device": device_name(device),
                                        "torch": torch.__version__, "errors": {}}

    def progress(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f} s] {message}", flush=True)

    def show(self, text: str) -> None:
        print(text, flush=True)

    def save(self) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / JSON_NAME
        path.write_text(json.dumps(self.figures, indent=2, default=str))

    # the data sizes of each phase -------------------------------------------------------------
    def step_data(self):
        from bench.gpu_work import DataSize
        s = self.settings
        return DataSize(s.steps * s.batch, s.batch, 0.0, s.image_size, s.num_classes)

    def epoch_data(self):
        from bench.gpu_work import DataSize
        s = self.settings
        return DataSize(s.epoch_images[0], s.epoch_images[1], 0.1, s.image_size, s.num_classes)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu (self-check: InlineRecorder stands in for CUDA graphs, bf16 autocast off)"


def to_ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def pair_name(pair: tuple[str, str]) -> str:
    return f"{pair[0]}->{pair[1]}"


# ---- phase 1: eager vs graphed steps -----------------------------------------------------------
def phase_steps(bench: Bench) -> dict[str, Any]:
    from bench.gpu_work import StepClock, build_trainer, interleaved_medians, step_variants
    from bench.gpu_work import untrained_knowledge

    s = bench.settings
    data = bench.step_data()
    rows, figures, replays, failed = [], [], {}, {}
    for pair in s.pairs:
        variants = step_variants([pair], s.modes, s.precisions, s.batch)
        bench.progress(f"steps: {pair_name(pair)}, building {len(variants)} trainers")
        splits = data.load(bench.device)
        knowledge = untrained_knowledge(next(iter(variants.values())), data)
        clocks = {key: StepClock(build_trainer(spec, data, splits, knowledge, bench.device))
                  for key, spec in variants.items()}
        try:
            named = {"/".join(map(str, key)): clock for key, clock in clocks.items()}
            medians, errors = interleaved_medians(named, s.rounds, progress=lambda m: (
                bench.progress(f"steps: {pair_name(pair)} {m}")))
            failed.update(errors)
            replays.update({name: clock.replays for name, clock in named.items()
                            if clock.replays is not None})
        finally:
            for clock in clocks.values():
                clock.close()
        del clocks, splits
        if bench.device.type == "cuda":
            torch.cuda.empty_cache()
        for mode in s.modes:
            for precision in s.precisions:
                key = (pair[0], pair[1], mode, precision)
                eager = medians.get("/".join(map(str, (*key, False))))
                graphed = medians.get("/".join(map(str, (*key, True))))
                figures.append({"teacher": pair[0], "student": pair[1], "mode": mode,
                                "precision": precision, "eager_ms": to_ms(eager),
                                "graphed_ms": to_ms(graphed), "ratio": ratio(eager, graphed)})
                rows.append([pair_name(pair), mode, precision, fmt_ms(eager), fmt_ms(graphed),
                             fmt_ratio(ratio(eager, graphed))])
    bench.show(f"\ntraining step, kd, batch {s.batch}, {s.image_size}x{s.image_size}, "
               f"{s.num_classes} classes, {bench.device.type}; median of {s.rounds} interleaved "
               f"rounds x {s.steps} steps (ms/step)")
    bench.show(format_table(["pair", "mode", "precision", "eager", "graphed", "eager/graphed"],
                            rows))
    for name, error in failed.items():
        bench.show(f"  FAILED {name}: {error}")
    bench.show("  (short blocks, to compare variants; the aims are judged on full-length epochs "
               "in phase epoch)")
    return {"rows": figures, "failed": failed,
            **({"inline_replays": replays} if replays else {})}


# ---- phase 6: the teacher view bank in the graphed step ---------------------------------------
BANK_MODES = ("plain", "mas")


def phase_bank(bench: Bench) -> dict[str, Any]:
    """Graphed steps (GPU defaults: bf16 + channels-last) reading the teacher view bank against
    the same steps running the teacher, kd in plain and mas. The step data is augmented by
    flips alone (2 views, see bench/bank.py): its bank builds in seconds, and a step gathers its
    rows exactly as from CIFAR's 162-view bank."""
    from bench.bank import flip_only, with_bank
    from bench.gpu_work import RunSpec, StepClock, build_trainer, interleaved_medians
    from bench.gpu_work import untrained_knowledge

    s = bench.settings
    data = bench.step_data()
    splits = flip_only(data.load(bench.device))
    rows, figures, failed = [], [], {}
    with tempfile.TemporaryDirectory(prefix="mgkd-gpu-bank-") as cache:
        for pair in s.pairs:
            for mode in BANK_MODES:
                specs = {name: RunSpec.variant(pair[0], pair[1], mode, "bf16+cl", True, s.batch)
                         for name in ("online", "bank")}
                specs["bank"] = dataclasses.replace(specs["bank"], teacher_bank="float16")
                knowledge = untrained_knowledge(specs["online"], data)
                config = specs["bank"].config(data, bench.device.type)
                given = {"online": knowledge, "bank": with_bank(
                    knowledge, dataclasses.replace(config, cache_dir=cache), splits,
                    bench.device)}
                clocks = {name: StepClock(build_trainer(spec, data, splits, given[name],
                                                        bench.device))
                          for name, spec in specs.items()}
                if clocks["bank"].trainer.learner.bank is None:
                    raise RuntimeError("the bank variant runs its teacher online")
                try:
                    medians, errors = interleaved_medians(clocks, s.rounds, progress=lambda m: (
                        bench.progress(f"bank: {pair_name(pair)} {mode} {m}")))
                finally:
                    for clock in clocks.values():
                        clock.close()
                failed.update({f"{pair_name(pair)}/{mode}/{k}": v for k, v in errors.items()})
                online, bank = medians.get("online"), medians.get("bank")
                figures.append({"teacher": pair[0], "student": pair[1], "mode": mode,
                                "online_ms": to_ms(online), "bank_ms": to_ms(bank),
                                "ratio": ratio(online, bank)})
                rows.append([pair_name(pair), mode, fmt_ms(online), fmt_ms(bank),
                             fmt_ratio(ratio(online, bank))])
                if bench.device.type == "cuda":
                    torch.cuda.empty_cache()
    bench.show(f"\ngraphed training step (bf16 + channels-last where the device has them), kd, "
               f"batch {s.batch}: teacher online vs teacher view bank (float16); median of "
               f"{s.rounds} interleaved rounds x {s.steps} steps (ms/step)")
    bench.show(format_table(["pair", "mode", "online", "bank", "online/bank"], rows))
    for name, error in failed.items():
        bench.show(f"  FAILED {name}: {error}")
    return {"rows": figures, "failed": failed}


# ---- phase 2: full epochs through Trainer.fit --------------------------------------------------
def phase_epoch(bench: Bench) -> dict[str, Any]:
    from bench.gpu_work import RunSpec, time_fit, untrained_knowledge

    s = bench.settings
    data = bench.epoch_data()
    teacher, student = s.pairs[0]
    runs = {
        "graphed, GPU defaults (bf16+cl)": RunSpec(teacher, student, "mas", s.batch, s.fit_epochs,
                                                   cuda_graphs=True, amp="auto",
                                                   channels_last="auto"),
        "eager fp32": RunSpec(teacher, student, "mas", s.batch, s.fit_epochs, cuda_graphs=False,
                              amp=False, channels_last=False),
    }
    bench.progress(f"epoch: generating {sum(s.epoch_images)} synthetic images")
    splits = data.load(bench.device)
    knowledge = untrained_knowledge(next(iter(runs.values())), data)
    graphed_name, eager_name = runs
    timings, train_epochs = {}, {}
    for name, spec in runs.items():
        bench.progress(f"epoch: Trainer.fit, {s.fit_epochs} epochs, {name}")
        timings[name] = time_fit(spec, data, splits, knowledge, bench.device)
        bench.progress(f"epoch: one more training epoch alone, {name}")
        train_epochs[name] = full_training_epoch(spec, data, splits, knowledge, bench.device)
    # cuDNN's algorithm search: kept off by default unless it measures faster here.
    graphed_spec = next(iter(runs.values()))
    searched = f"{next(iter(runs))} + cudnn_benchmark"
    bench.progress(f"epoch: one more training epoch alone, {searched}")
    searched_epoch = full_training_epoch(
        dataclasses.replace(graphed_spec, cudnn_benchmark=True), data, splits, knowledge,
        bench.device)
    del splits
    if bench.device.type == "cuda":
        torch.cuda.empty_cache()
    any_timing = next(iter(timings.values()))
    bench.show(f"\nfull epoch (train + val + test), {pair_name(s.pairs[0])} mas, kd, batch "
               f"{s.batch}: {any_timing.train_images} train / {any_timing.val_images} val / "
               f"{any_timing.test_images} test images, Trainer.fit for {s.fit_epochs} epochs")
    rows, figures = [], {}
    for name, t in timings.items():
        total = extrapolate_run(t.epoch_seconds, TOTAL_EPOCHS)
        figures[name] = {**dataclasses.asdict(t), f"run_{TOTAL_EPOCHS}_s": total}
        rows.append([name, *(f"{x:.2f}" for x in t.epoch_seconds), f"{t.eval_seconds:.2f}",
                     fmt_duration(total)])
    headers = ["run", *(f"epoch {i + 1} s" for i in range(s.fit_epochs)), "val+test s",
               f"{TOTAL_EPOCHS} epochs"]
    bench.show(format_table(headers, rows))
    benchmark_gain = ratio(train_epochs[graphed_name][0], searched_epoch[0])
    for name, (seconds, steps) in train_epochs.items():
        figures[name]["train_epoch_s"] = seconds
        figures[name]["train_epoch_steps"] = steps
        figures[name]["train_epoch_ms_per_step"] = to_ms(seconds / steps)
    bench.show(format_table(["training epoch alone", "s", "steps", "ms/step"],
                            [[name, f"{sec:.2f}", str(steps), fmt_ms(sec / steps)]
                             for name, (sec, steps) in
                             [*train_epochs.items(), (searched, searched_epoch)]]))
    graphed, eager = figures[graphed_name], figures[eager_name]
    bench.show(f"  without / with cudnn_benchmark, graphed training epoch: "
               f"{fmt_ratio(benchmark_gain)} (above 1: the search pays)")
    steady = ratio(eager["epoch_seconds"][-1], graphed["epoch_seconds"][-1])
    bench.show(f"  eager fp32 / graphed, last epoch: {fmt_ratio(steady)}")
    result = verdict(graphed[f"run_{TOTAL_EPOCHS}_s"], AIM_RUN_S)
    bench.show(f"  aim {TOTAL_EPOCHS} epochs graphed <= {AIM_RUN_S / 60:.0f} min: "
               f"{fmt_duration(graphed[f'run_{TOTAL_EPOCHS}_s'])}: {result}")
    step_ms = graphed["train_epoch_ms_per_step"]
    step_result = verdict(step_ms, AIM_STEP_S * 1000)
    bench.show(f"  aim graphed mas step {pair_name(s.pairs[0])} <= {AIM_STEP_S * 1000:.1f} ms over "
               f"a full training epoch: {fmt_ms(step_ms / 1000)} ms: {step_result}")
    return {"runs": figures, "eager_over_graphed_last_epoch": steady, "aim": result,
            "step_aim": step_result,
            "cudnn_benchmark": {"train_epoch_s": searched_epoch[0],
                                "without_over_with": benchmark_gain}}


def full_training_epoch(spec: Any, data: Any, splits: Any, knowledge: Any,
                        device: torch.device) -> tuple[float, int]:
    """Seconds and steps of one whole training epoch (no evaluation), after an untimed one that
    warms up and records: what the step aim is judged on."""
    from bench.gpu_work import StepClock, build_trainer

    clock = StepClock(build_trainer(spec, data, splits, knowledge, device))
    try:
        clock.block()
        return clock.block() * clock.steps, clock.steps
    finally:
        clock.close()


# ---- phases 3 and 4: worker processes ----------------------------------------------------------
def worker_command(spec_json: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", spec_json]


def run_workers(bench: Bench, specs: list[Any]) -> list[WorkerResult]:
    """Start one process per WorkerSpec together (behind one barrier) and parse what each says."""
    with tempfile.TemporaryDirectory(prefix="mgkd-gpu-bench-") as folder:
        specs = [dataclasses.replace(spec, barrier=folder, worker=i)
                 for i, spec in enumerate(specs)]
        longest = max(spec.seconds for spec in specs)
        outputs = run_together([worker_command(spec.to_json()) for spec in specs],
                               Barrier(Path(folder)), ready_timeout=300.0,
                               run_timeout=longest + 300.0)
    return [parse_worker_output(text) for text in outputs]


def phase_concurrency(bench: Bench) -> dict[str, Any]:
    from bench.gpu_work import RunSpec, WorkerSpec

    s = bench.settings
    teacher, student = s.pairs[0]
    kinds = {"graphed": True, **({"eager": False} if s.concurrency_eager else {})}
    data = bench.step_data()
    figures: dict[str, Any] = {}
    rows = []
    for kind, graphed in kinds.items():
        run = RunSpec.variant(teacher, student, "mas", "bf16+cl", graphed, s.batch)
        levels: dict[int, list[WorkerResult]] = {}
        for trials in s.trials:
            bench.progress(f"concurrency: {trials} {kind} trial(s) for {s.seconds:g} s")
            spec = WorkerSpec("steps", run, data, bench.device.type, "", 0, s.seconds)
            levels[trials] = run_workers(bench, [spec] * trials)
        table = scaling(levels)
        figures[kind] = {"levels": {n: [dataclasses.asdict(r) for r in rs]
                                    for n, rs in levels.items()},
                         "scaling": [dataclasses.asdict(row) for row in table]}
        rows += [[kind, str(row.trials), f"{row.images_per_s:.0f}", fmt_ratio(row.ratio_to_one),
                  "-" if row.mean_ms_per_step is None else f"{row.mean_ms_per_step:.2f}"]
                 for row in table]
    bench.show(f"\nconcurrent trials on one {bench.device.type} device, "
               f"{pair_name(s.pairs[0])} mas bf16+cl, batch {s.batch}, {s.seconds:g} s each, "
               "started together")
    bench.show(format_table(["steps", "trials", "images/s", "ratio to 1", "ms/step per trial"],
                            rows))
    four = next((row for row in figures["graphed"]["scaling"] if row["trials"] == 4), None)
    if four is not None:
        result = verdict(four["ratio_to_one"], AIM_FOUR_TRIALS, at_most=False)
        figures["aim"] = result
        bench.show(f"  aim 4 graphed trials >= {AIM_FOUR_TRIALS:.2f}x one: "
                   f"{fmt_ratio(four['ratio_to_one'])}: {result}")
    return figures


def phase_memory(bench: Bench) -> dict[str, Any]:
    from bench.gpu_work import RunSpec, WorkerSpec

    s = bench.settings
    data = bench.epoch_data()
    on_cuda = bench.device.type == "cuda"
    baseline = 0
    total = 0
    if on_cuda:
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(bench.device)
        baseline = total - free  # this process's context and cache, and anything else there
    figures, rows = [], []
    for pair in s.pairs:
        bench.progress(f"memory: one graphed bf16 mas trial of {pair_name(pair)} alone "
                       "(Trainer.fit, 1 epoch)")
        run = RunSpec(pair[0], pair[1], "mas", s.batch, 1, cuda_graphs=True, amp="auto",
                      channels_last="auto")
        (result,) = run_workers(bench, [WorkerSpec("fit", run, data, bench.device.type, "")])
        used = None if result.device_used is None else max(0, result.device_used - baseline)
        fit = trials_that_fit(total, used) if on_cuda else None
        figures.append({"teacher": pair[0], "student": pair[1], **dataclasses.asdict(result),
                        "trial_footprint": used, "trials_that_fit": fit})
        rows.append([pair_name(pair), fmt_gib(result.max_allocated), fmt_gib(result.max_reserved),
                     fmt_gib(used), "-" if fit is None else str(fit)])
    bench.show(f"\npeak memory of one trial alone (graphed bf16+cl mas, batch {s.batch}, "
               f"{sum(s.epoch_images)} images on the device), GiB; trials that fit in the "
               f"device's {total / GIB:.1f} GiB by memory alone")
    bench.show(format_table(["pair", "max allocated", "max reserved",
                             "GPU used (+context)", "trials that fit"], rows))
    return {"device_total": total, "baseline_used": baseline, "pairs": figures}


# ---- phase 5: person re-ID, OSNet ----------------------------------------------------------------
def phase_reid(bench: Bench) -> dict[str, Any]:
    from bench.gpu_work import ReidSize, RunSpec, time_fit, untrained_knowledge

    s = bench.settings
    data = ReidSize(**s.reid)
    teacher, student = s.reid_pair
    batch = 64 if bench.device.type == "cuda" else 8
    runs = {f"{kind} bf16+cl": RunSpec(teacher, student, "mas", batch, 1, cuda_graphs=graphed,
                                       amp="auto", channels_last="auto")
            for kind, graphed in (("eager", False), ("graphed", True))}
    bench.progress(f"reid: making {data.num_train + data.num_query + data.num_gallery} images "
                   f"of {data.height}x{data.width}")
    splits = data.load(bench.device)
    knowledge = untrained_knowledge(next(iter(runs.values())), data)
    figures, rows = {}, []
    for name, spec in runs.items():
        bench.progress(f"reid: Trainer.fit, 1 epoch, {name}")
        fit = time_fit(spec, data, splits, knowledge, bench.device)
        bench.progress(f"reid: one more training epoch alone, {name}")
        seconds, steps = full_training_epoch(spec, data, splits, knowledge, bench.device)
        figures[name] = {"fit": dataclasses.asdict(fit), "train_epoch_s": seconds,
                         "train_epoch_steps": steps, "eval_s": fit.eval_seconds,
                         "train_epoch_ms_per_step": to_ms(seconds / steps)}
        rows.append([name, f"{seconds:.2f}", str(steps), fmt_ms(seconds / steps),
                     f"{fit.eval_seconds:.2f}", fmt_gib(fit.max_reserved)])
    del splits
    if bench.device.type == "cuda":
        torch.cuda.empty_cache()
    bench.show(f"\nperson re-ID, {teacher}->{student} mas, kd, P x K = {batch // data.instances} x "
               f"{data.instances}, {data.height}x{data.width}: {data.num_train} training images "
               f"({data.identities} identities); evaluation {data.num_query} queries x "
               f"{data.num_gallery} gallery")
    bench.show(format_table(["run", "training epoch s", "steps", "ms/step", "evaluation s",
                             "max reserved GiB"], rows))
    eager, graphed = (figures[n]["train_epoch_s"] for n in runs)
    speedup = ratio(eager, graphed)
    bench.show(f"  eager / graphed, training epoch: {fmt_ratio(speedup)}")
    return {"data": dataclasses.asdict(data), "runs": figures, "eager_over_graphed": speedup}


PHASES: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "steps": phase_steps, "epoch": phase_epoch, "concurrency": phase_concurrency,
    "memory": phase_memory, "reid": phase_reid, "bank": phase_bank}


# ---- entry points --------------------------------------------------------------------------------
def missing_requirement() -> str | None:
    """One line naming the first module mgkd needs that does not import, and the fix."""
    for module, package in REQUIRED.items():
        try:
            importlib.import_module(module)
        except ImportError:
            return (f"bench/gpu.py needs the Python package {module!r} (mgkd imports it), "
                    f"which does not import here: run `pip install {package}`, or install it "
                    f"elsewhere with `pip install --target DIR {package}` and carry DIR with "
                    f"PYTHONPATH=DIR.")
    return None


def limit_cpu_threads() -> None:
    """The CPU self-check's tensors are tiny: one thread, or on a shared machine the intra-op
    threads spin against other processes and a 10-second check takes a minute."""
    torch.set_num_threads(1)


def settings_from(args: argparse.Namespace, on_cuda: bool) -> Settings:
    base = PRESETS["quick" if args.quick else "full"] if on_cuda else PRESETS["cpu"]
    changes: dict[str, Any] = {"concurrency_eager": args.concurrency_eager}
    if args.rounds is not None:
        changes["rounds"] = args.rounds
    if args.seconds is not None:
        changes["seconds"] = args.seconds
    if args.trials is not None:
        changes["trials"] = tuple(int(n) for n in args.trials.split(","))
    return dataclasses.replace(base, **changes)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller data, shorter runs")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated, of: {', '.join(PHASES)} (default: all)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the step table")
    parser.add_argument("--seconds", type=float, help="seconds each concurrent trial runs")
    parser.add_argument("--trials", help="numbers of concurrent trials, e.g. 1,2,4,8")
    parser.add_argument("--concurrency-eager", action="store_true",
                        help="also measure concurrent eager trials")
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", metavar="SPEC_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [p for p in args.phases.split(",") if p not in PHASES]
    if unknown:
        parser.error(f"--phases: unknown {', '.join(unknown)}; allowed: {', '.join(PHASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        from bench.gpu_work import WorkerSpec, run_worker
        spec = WorkerSpec.from_json(args.worker)
        if spec.device == "cpu":
            limit_cpu_threads()
        print(run_worker(spec).line(), flush=True)
        return 0
    on_cuda = torch.cuda.is_available()
    if not on_cuda and not args.allow_cpu:
        print(SKIP_MESSAGE, flush=True)
        return 0
    problem = missing_requirement()
    if problem is not None:
        print(problem, file=sys.stderr, flush=True)
        return 2
    if not on_cuda:
        limit_cpu_threads()
    settings = settings_from(args, on_cuda)
    out = os.environ.get("OUT")
    bench = Bench(settings, torch.device("cuda" if on_cuda else "cpu"),
                  Path(out) if out else None)
    bench.progress(f"{bench.figures['device']}, torch {torch.__version__}")
    for name in args.phases.split(","):
        try:
            bench.figures[name] = PHASES[name](bench)
        except Exception as err:  # one phase failing must not lose the others' figures
            traceback.print_exc()
            bench.figures["errors"][name] = f"{type(err).__name__}: {err}"
            bench.show(f"\nphase {name} FAILED: {type(err).__name__}: {err}")
        bench.save()
    bench.progress("done" + (f"; figures in {bench.out_dir / JSON_NAME}" if bench.out_dir else ""))
    return 1 if bench.figures["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
