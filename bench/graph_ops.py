"""Ops a graphed training step still runs outside its CUDA graph, counted on the CPU.

A replayed graph is one launch; everything else a step does (drawing and augmenting the batch,
copying it into the graph's static inputs) is launched op by op from Python, on a GPU one kernel
each. This counts those ops: the real Trainer (``make_trainer``) runs with an
:class:`~mgkd.training.steps.InlineRecorder` standing in for CUDA graphs and a dispatch mode counts
every aten op dispatched outside the recorded step, over one epoch of whole batches once the step
is recorded. No GPU needed; the count is what a GPU would launch outside the graph.

    .venv/bin/python bench/graph_ops.py
    .venv/bin/python bench/graph_ops.py --channels-last --mode plain
"""
from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mgkd.config import ExperimentConfig, resolve  # noqa: E402
from mgkd.data import load_splits  # noqa: E402
from mgkd.distill.learner import make_trainer  # noqa: E402
from mgkd.knowledge.prepare import Knowledge  # noqa: E402
from mgkd.training.steps import InlineRecorder  # noqa: E402


# Ops that only make a view (no kernel runs for them on a GPU).
VIEW_OPS = frozenset({"view", "_unsafe_view", "slice", "select", "expand", "t", "alias",
                      "as_strided", "unsqueeze", "squeeze", "permute", "transpose", "detach",
                      "lift_fresh", "split", "unbind"})


def kernels(ops: collections.Counter[str]) -> int:
    """How many of ``ops`` launch a kernel (all but views)."""
    return sum(count for name, count in ops.items() if name not in VIEW_OPS)


class OpCounter(TorchDispatchMode):
    """Counts aten ops by name while not paused."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        if not self.paused:
            self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


class PausingRecorder(InlineRecorder):
    """An InlineRecorder that pauses its counter while a step runs recorded, eagerly or as a
    replay: what is left counted is what runs outside the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.counter = OpCounter()

    def _paused(self, fn: Callable[[], Any]) -> Any:
        was, self.counter.paused = self.counter.paused, True
        try:
            return fn()
        finally:
            self.counter.paused = was

    def run_eager(self, fn: Callable[[], None]) -> None:
        self._paused(lambda: InlineRecorder.run_eager(self, fn))

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        return self._paused(lambda: InlineRecorder.capture(self, fn))

    def replay(self, graph: Callable[[], None]) -> None:
        self._paused(lambda: InlineRecorder.replay(self, graph))


def ops_outside_the_graph(*, mode: str = "mas", method: str = "kd", batch: int = 16,
                          steps: int = 8, channels_last: bool = False
                          ) -> tuple[float, collections.Counter[str]]:
    """Ops per step dispatched outside the recorded step, over one epoch of ``steps`` whole
    batches after an epoch that warmed up and recorded it; and the ops by name (whole epoch)."""
    options = {"num_train": batch * steps, "num_test": 8, "num_classes": 10, "image_size": 16}
    config = resolve(ExperimentConfig.from_dict({
        "teacher": "resnet8", "student": "resnet8", "dataset": "synthetic",
        "data_options": options, "val_fraction": 0.0, "method": method, "mode": mode,
        "batch_size": batch, "epochs": 2, "lr_milestones": [1.0], "device": "cpu",
        "channels_last": channels_last}))
    splits = load_splits("synthetic", ".", val_fraction=0.0, options=options)
    recorder = PausingRecorder()
    trainer = make_trainer(config, splits, Knowledge.untrained(config, 10), recorder=recorder)
    try:
        trainer._train_epoch(0)  # warm-up steps and the recording
        replays = recorder.replays
        with recorder.counter:
            trainer._train_epoch(0)
        if recorder.replays - replays != steps:
            raise RuntimeError(f"expected {steps} replays, got {recorder.replays - replays}")
    finally:
        trainer.close()
    ops = recorder.counter.ops
    return sum(ops.values()) / steps, ops


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="mas")
    parser.add_argument("--method", default="kd")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    per_step, ops = ops_outside_the_graph(mode=args.mode, method=args.method, steps=args.steps,
                                          channels_last=args.channels_last)
    layout = "channels-last" if args.channels_last else "contiguous"
    print(f"{args.method} {args.mode}, {layout}, one epoch of {args.steps} replayed steps: "
          f"{per_step:.2f} ops per step outside the graph, {kernels(ops) / args.steps:.2f} of "
          "them kernels (not views)")
    for name, count in ops.most_common():
        kind = "view" if name in VIEW_OPS else "kernel"
        print(f"  {name:28s} {count / args.steps:6.2f} per step  ({kind})")


if __name__ == "__main__":
    main()
