"""How the Trainer runs its training steps: eagerly, or as replays of one captured CUDA graph.

A step is: the task's loss components for one batch (under autocast when on), backward, the
optimizer's step, and adding each component into a per-epoch sum on the device (read once per
epoch). :class:`EagerSteps` runs that in Python every batch. :class:`GraphedSteps` records it once
into a CUDA graph and replays it: each batch is copied into static input buffers, and the graph
replays teacher forward, student forward, every loss term, backward and the SGD update with one
launch. The batches are written straight into those buffers (``epoch(into=...)`` of
:func:`mgkd.data.make_batches`), so outside the graph a step runs only the few ops that draw and
augment its batch (``bench/graph_ops.py`` counts them). What it needs to stay exact:

* **Warm-up.** The first ``warmup_steps`` full batches run eagerly on a side stream (real training
  steps): they initialise lazily created state — above all SGD's momentum buffers, whose first step
  takes a different branch — before anything is recorded.
* **Baked constants.** A graph replays with the Python numbers it was recorded with: the learning
  rate and per-epoch values such as DKD's warm-up factor. Each step comes with a *capture key*
  (:func:`capture_key`); when the key changes the step is recorded again.
* **Static shapes.** Only full batches replay; a smaller last batch of an epoch runs eagerly, so
  every sample still trains.
* **No host reads.** Sums stay on the device; a step that would sync with the host cannot be
  captured (methods declare it: ``mgkd.catalog.methods``; :mod:`mgkd.training.capture` checks
  it on CPU).

The recording back-end is a :class:`Recorder`: :class:`CudaGraphRecorder` on GPUs;
:class:`InlineRecorder` "replays" by calling the recorded step again, which lets CPU tests run the
same control flow (buffers, keys, re-recording, partial batches) the GPU path runs.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Hashable
from typing import Any, Protocol

import torch

from mgkd.data import Batch, BatchBuffer

log = logging.getLogger(__name__)

Components = dict[str, torch.Tensor]
ComputeFn = Callable[[Batch], Components]  # loss components of one batch; "loss" is the total
WARMUP_STEPS = 3


class CaptureFailed(RuntimeError):
    """Recording the training step into a CUDA graph failed."""


def capture_key(optimizer: torch.optim.Optimizer, constants: Hashable = ()) -> Hashable:
    """What a recorded step bakes in: every parameter group's learning rate and the task's
    per-epoch constants. Equal keys: the recorded graph still computes this epoch's step."""
    return (tuple(float(group["lr"]) for group in optimizer.param_groups), constants)


def train_step(compute: ComputeFn, optimizer: torch.optim.Optimizer, batch: Batch,
               sums: Components) -> None:
    """One optimisation step; adds each component (float32, detached) into ``sums`` in place."""
    optimizer.zero_grad(set_to_none=True)
    components = compute(batch)
    components["loss"].backward()
    optimizer.step()
    for name, value in components.items():
        total = sums.get(name)
        if total is None:
            total = sums[name] = torch.zeros((), dtype=torch.float32, device=value.device)
        total.add_(value.detach().float())


def epoch_means(sums: Components, count: int) -> dict[str, float]:
    """Per-batch means of the summed components: one host sync for all of them."""
    names = list(sums)
    if not names:
        return {}
    values = torch.stack([sums[n] for n in names]).div_(max(count, 1)).tolist()
    return dict(zip(names, values))


class StepRunner(Protocol):
    buffer: BatchBuffer | None  # where full batches should be written (None: anywhere)

    def begin_epoch(self) -> None: ...

    def step(self, batch: Batch, key: Hashable, compute: ComputeFn) -> None: ...

    def means(self, count: int) -> dict[str, float]: ...

    def invalidate(self) -> None: ...

    def close(self) -> None: ...


class EagerSteps:
    """Every step in Python: the CPU path, and GPU runs whose step cannot be captured."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.sums: Components = {}
        self.buffer = None

    def begin_epoch(self) -> None:
        self.sums = {}

    def step(self, batch: Batch, key: Hashable, compute: ComputeFn) -> None:
        train_step(compute, self.optimizer, batch, self.sums)

    def means(self, count: int) -> dict[str, float]:
        return epoch_means(self.sums, count)

    def invalidate(self) -> None:
        pass

    def close(self) -> None:
        self.sums = {}


class Recorder(Protocol):
    def run_eager(self, fn: Callable[[], None]) -> None: ...

    def capture(self, fn: Callable[[], None]) -> Any: ...

    def replay(self, graph: Any) -> None: ...

    def release(self, graph: Any) -> None: ...


@functools.cache
def side_stream(device: torch.device) -> torch.cuda.Stream:
    """The one side stream of ``device`` in this process. cuBLAS keeps a workspace per (handle,
    stream) that ``empty_cache`` never frees: a new stream per run would grow the GPU memory of a
    reused Ray actor trial after trial."""
    return torch.cuda.Stream(device)


def release_cublas_workspaces() -> None:
    """Free cuBLAS's per-stream workspaces (torch offers it privately since 1.12; a no-op where a
    torch lacks it)."""
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()


class CudaGraphRecorder:
    """torch.cuda graphs: eager steps on the device's side stream, capture, replay (torch >= 2.0
    API)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.side_stream = side_stream(device)

    def run_eager(self, fn: Callable[[], None]) -> None:
        current = torch.cuda.current_stream(self.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.device(self.device), torch.cuda.stream(self.side_stream):
            fn()
        current.wait_stream(self.side_stream)

    def capture(self, fn: Callable[[], None]) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        # The run's device, not whichever is current; thread_local: other threads of a Ray
        # worker may touch CUDA while this one records.
        with torch.cuda.device(self.device), torch.cuda.graph(graph,
                                                              capture_error_mode="thread_local"):
            fn()
        return graph

    def replay(self, graph: torch.cuda.CUDAGraph) -> None:
        graph.replay()

    def release(self, graph: torch.cuda.CUDAGraph) -> None:
        graph.reset()


class InlineRecorder:
    """A stand-in for CUDA graphs on the CPU: recording keeps the step, replaying calls it again.
    Values bound in the step's closure (the epoch, so DKD's warm-up factor) stay as recorded, as
    in a real graph, so CPU tests catch a capture key that misses them; what the step reads from
    objects when it runs (the optimizer's lr) is read live here but baked in on a GPU.
    Counts recordings, replays and eager steps for tests."""

    def __init__(self) -> None:
        self.captures = 0
        self.replays = 0
        self.eager_steps = 0

    def run_eager(self, fn: Callable[[], None]) -> None:
        self.eager_steps += 1
        fn()

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        self.captures += 1
        return fn

    def replay(self, graph: Callable[[], None]) -> None:
        self.replays += 1
        graph()

    def release(self, graph: Any) -> None:
        pass


def _static_copy(batch: Batch) -> Batch:
    return Batch(batch.images.clone(), batch.labels.clone(), batch.indices.clone(),
                 None if batch.views is None else batch.views.clone())


class GraphedSteps:
    """Full batches replay one recorded step; warm-up and partial batches run eagerly."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, batch_size: int, recorder: Recorder,
                 warmup_steps: int = WARMUP_STEPS):
        if warmup_steps < 1:
            raise ValueError("warmup_steps must be >= 1: SGD's first step differs from the rest")
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.recorder = recorder
        self.warmup_steps = warmup_steps
        self._warmups_left = warmup_steps
        self.sums: Components = {}  # addresses fixed once created: the graph adds into them
        # The graph's static inputs. Batches written into ``buffer`` (make_batches' epoch(into=))
        # are already there; any other full batch is copied in.
        self.buffer = BatchBuffer()
        self._static: Batch | None = None
        self._graph: Any = None
        self._key: Hashable = None

    def begin_epoch(self) -> None:
        for total in self.sums.values():
            total.zero_()

    def _eager(self, batch: Batch, compute: ComputeFn) -> None:
        self.recorder.run_eager(lambda: train_step(compute, self.optimizer, batch, self.sums))

    def step(self, batch: Batch, key: Hashable, compute: ComputeFn) -> None:
        if batch.labels.shape[0] != self.batch_size:
            self._eager(batch, compute)  # the last, smaller batch of an epoch
            return
        if self._warmups_left > 0:
            self._warmups_left -= 1
            self._eager(batch, compute)
            return
        if self._static is None:
            self._static = batch if batch is self.buffer.batch else _static_copy(batch)
        elif batch is not self._static:
            for static, value in zip((self._static.images, self._static.labels,
                                      self._static.indices, self._static.views),
                                     (batch.images, batch.labels, batch.indices, batch.views)):
                if static is not None and value is not None:
                    static.copy_(value)
        if self._graph is None or key != self._key:
            self._record(key, compute)
        self.recorder.replay(self._graph)

    def _record(self, key: Hashable, compute: ComputeFn) -> None:
        self._release_graph()
        static, sums, optimizer = self._static, self.sums, self.optimizer
        assert static is not None
        try:
            self._graph = self.recorder.capture(lambda: train_step(compute, optimizer, static, sums))
        except Exception as err:  # torch reports an uncapturable op as a RuntimeError
            raise CaptureFailed(
                f"recording the training step in a CUDA graph failed ({type(err).__name__}: "
                f"{err}). Something in the step syncs with the host or changes shape; set "
                "cuda_graphs: false for this run and report the method.") from err
        self._key = key
        log.debug("training step recorded in a CUDA graph (key %s)", key)

    def means(self, count: int) -> dict[str, float]:
        return epoch_means(self.sums, count)

    def invalidate(self) -> None:
        """Parameters or optimizer state were replaced (a checkpoint was loaded): record anew,
        after at least one eager step so the optimizer's state exists."""
        self._release_graph()
        self._warmups_left = max(self._warmups_left, 1)

    def _release_graph(self) -> None:
        if self._graph is not None:
            self.recorder.release(self._graph)
            self._graph = None
            self._key = None

    def close(self) -> None:
        """Free the graph and its memory pool: gradients recorded into it are dropped too."""
        self._release_graph()
        self._static = self.buffer.batch = None
        self.optimizer.zero_grad(set_to_none=True)
