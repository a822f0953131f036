"""How a run's steps execute on its device: CUDA graphs, bf16 autocast, channels-last, cuDNN's
algorithm search and the evaluation batch size. These settings change speed and floating-point rounding, never what is
computed, so they are not part of any cache key (teachers, heads) — like the device itself.

Configs say ``auto``, ``true`` or ``false``; :func:`resolve_execution` turns that into an
:class:`Execution` of plain values for the device a run actually got. ``auto`` means on for CUDA
(for CUDA graphs: when the step can be captured) and off on the CPU, whose path stays exactly as
it was.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Union

from mgkd.errors import ConfigError

log = logging.getLogger(__name__)

Setting = Union[Literal["auto"], bool]
# One evaluation batch holds at most this many pixels on a GPU: 1024 CIFAR images (32 x 32).
EVAL_PIXEL_BUDGET = 1024 * 32 * 32
EVAL_BATCH_CAP = 1024


@dataclass(frozen=True)
class Execution:
    """Resolved execution settings (plain values, nothing left on ``auto``)."""

    cuda_graphs: bool = False
    amp: bool = False  # bf16 autocast (CUDA only)
    channels_last: bool = False  # also honoured on the CPU when a config says true
    eval_batch_size: int | None = None  # None: the training batch size
    cudnn_benchmark: bool = False  # CUDA only: torch.backends.cudnn.benchmark while the run trains


@dataclass(frozen=True)
class ExecutionSettings:
    """A config's execution keys as written (``auto`` allowed), resolved per run by
    :meth:`resolve` once the device is known. The defaults are the config's."""

    cuda_graphs: Setting = False
    amp: Setting = "auto"
    channels_last: Setting = "auto"
    eval_batch_size: int | Literal["auto"] = "auto"
    cudnn_benchmark: Setting = False

    @classmethod
    def of(cls, config: Any) -> "ExecutionSettings":
        """The settings of an ``ExperimentConfig`` (typed loosely: this module stays free of the
        config and pydantic)."""
        return cls(cuda_graphs=config.cuda_graphs, amp=config.amp,
                   channels_last=config.channels_last, eval_batch_size=config.eval_batch_size,
                   cudnn_benchmark=config.cudnn_benchmark)

    def resolve(self, *, device_type: str, batch_size: int, image_shape: tuple[int, ...],
                capture_blocker: str | None = None, what: str = "run") -> Execution:
        return resolve_execution(device_type=device_type, cuda_graphs=self.cuda_graphs,
                                 amp=self.amp, channels_last=self.channels_last,
                                 eval_batch_size=self.eval_batch_size,
                                 cudnn_benchmark=self.cudnn_benchmark, batch_size=batch_size,
                                 image_shape=image_shape, capture_blocker=capture_blocker,
                                 what=what)


def auto_eval_batch_size(on_cuda: bool, batch_size: int, image_shape: tuple[int, ...]) -> int:
    """``eval_batch_size: auto``: on a GPU as many images as fit :data:`EVAL_PIXEL_BUDGET`
    (1024 at 32 x 32, 32 at 256 x 128), at most 1024 and never fewer than a training batch;
    on the CPU the training batch size (results and memory as before)."""
    if not on_cuda:
        return batch_size
    pixels = 1
    for size in image_shape[-2:]:
        pixels *= int(size)
    return max(batch_size, min(EVAL_BATCH_CAP, EVAL_PIXEL_BUDGET // max(pixels, 1)))


def graphs_refusal(cuda_graphs: Setting, *, on_gpu: bool, capture_blocker: str | None,
                   what: str = "this run", cpu_because: str = "this run got the CPU") -> str | None:
    """Why ``cuda_graphs`` cannot be honoured (None: it can): the one rule every check asks —
    config validation, the sweep checks, ``mgkd train``'s preflight and the run itself.

    ``cuda_graphs: true`` needs a GPU (``on_gpu``; ``cpu_because`` says why there is none) and a
    step that can be captured (``capture_blocker`` is why not; ``what`` names the step's owner)."""
    if cuda_graphs is not True:
        return None
    if not on_gpu:
        return (f"cuda_graphs: true needs a CUDA GPU, but {cpu_because}; use cuda_graphs: auto "
                "(graphs on GPUs only) or false.")
    if capture_blocker is not None:
        return (f"cuda_graphs: true, but {what}'s step cannot be captured in a CUDA graph: "
                f"{capture_blocker}. Use cuda_graphs: auto (it then runs eagerly) or false.")
    return None


def resolve_execution(*, device_type: str, cuda_graphs: Setting = False, amp: Setting = "auto",
                      channels_last: Setting = "auto",
                      eval_batch_size: int | Literal["auto"] = "auto",
                      cudnn_benchmark: Setting = False, batch_size: int, image_shape: tuple[int, ...],
                      capture_blocker: str | None = None, what: str = "run") -> Execution:
    """Resolve ``auto`` against the device a run got. ``capture_blocker`` is why the run's step
    cannot be captured (None: it can). ``cuda_graphs: true`` that cannot be honoured is a
    ConfigError; ``auto`` falls back to eager steps with one log line naming the reason."""
    on_cuda = device_type == "cuda"
    refusal = graphs_refusal(cuda_graphs, on_gpu=on_cuda, capture_blocker=capture_blocker,
                             what=f"this {what}")
    if refusal:
        raise ConfigError(refusal)
    graphs = cuda_graphs is True
    if cuda_graphs == "auto" and on_cuda:
        if capture_blocker is None:
            graphs = True
        else:
            log.info("cuda_graphs: the %s runs eagerly: %s", what, capture_blocker)
    if eval_batch_size == "auto":
        eval_size = auto_eval_batch_size(on_cuda, batch_size, image_shape)
    else:
        eval_size = int(eval_batch_size)
    return Execution(cuda_graphs=graphs,
                     amp=on_cuda and amp in (True, "auto"),
                     channels_last=channels_last is True or (on_cuda and channels_last == "auto"),
                     eval_batch_size=eval_size,
                     cudnn_benchmark=on_cuda and cudnn_benchmark in (True, "auto"))
