"""Checks, on the CPU, that a training step could be recorded in a CUDA graph.

A recorded step replays fixed kernels on fixed addresses, so it must not

* read a device value back to the host (``.item()``, ``float(t)``, ``if t:``, SVD's convergence
  check) — on a GPU that is a sync, and inside a capture an error;
* produce a tensor whose shape depends on the data (``nonzero``, boolean-mask indexing,
  ``unique``): the graph would replay the shape of the recorded batch;
* replace a module's parameter or buffer by a new tensor (``self.bank = bank.index_copy(...)``):
  the replayed graph keeps reading and writing the old one.

:func:`capture_problems` runs a step once under a dispatch mode that sees every aten op and names
each problem it finds. CPU tensors cannot show a plain ``.cpu()`` or ``.tolist()`` (no op
dispatches for them), so keep those out of steps by review. ``tests/test_capture.py`` holds every
method's declared ``capture_blocker`` (``mgkd.catalog.methods``) to this check.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

_HOST_READ = "reads a device value back to the host (.item(), float(t), bool(t), `if t:`)"
_DATA_SHAPE = "makes a tensor whose shape depends on the data"
_HOST_CHECK = "checks its result on the host (a device-to-host sync)"

# aten op packets (``torch.ops.aten.<name>``) that sync with the host on CUDA, and why.
SYNCING_OPS: dict[str, str] = {
    "_local_scalar_dense": _HOST_READ,
    "is_nonzero": _HOST_READ,
    "equal": _HOST_READ,
    "nonzero": _DATA_SHAPE + " (nonzero, torch.where with one argument)",
    "masked_select": _DATA_SHAPE + " (masked_select)",
    "_unique": _DATA_SHAPE + " (unique)",
    "_unique2": _DATA_SHAPE + " (unique)",
    "unique_dim": _DATA_SHAPE + " (unique)",
    "unique_consecutive": _DATA_SHAPE + " (unique_consecutive)",
    "repeat_interleave": _DATA_SHAPE + " (repeat_interleave)",
    "bincount": _DATA_SHAPE + " (bincount)",
    "_linalg_svd": _HOST_CHECK + " (torch.linalg.svd)",
    "_linalg_eigh": _HOST_CHECK + " (torch.linalg.eigh)",
    "linalg_eig": _HOST_CHECK + " (torch.linalg.eig)",
    "_linalg_check_errors": _HOST_CHECK,
}


def _op_name(func: Any) -> str:
    return func.overloadpacket.__name__


def _bool_index(args: tuple) -> bool:
    """``aten.index.Tensor(x, [mask, ...])`` with a boolean mask: a data-dependent shape."""
    indices = args[1] if len(args) > 1 else []
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or [])


class HostSyncDetector(TorchDispatchMode):
    """Records every op run under it that would sync with the host on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        name = _op_name(func)
        if name in SYNCING_OPS:
            self.found.append(f"aten.{name} {SYNCING_OPS[name]}")
        elif name == "index" and _bool_index(args):
            self.found.append(f"aten.index with a boolean mask {_DATA_SHAPE} (x[mask])")
        return func(*args, **(kwargs or {}))


def _state_tensors(modules: Iterable[nn.Module]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for i, module in enumerate(modules):
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            tensors[f"{i}.{name}"] = tensor
    return tensors


def capture_problems(step: Callable[[], Any], modules: Iterable[nn.Module]) -> list[str]:
    """Run ``step`` once; what would stop it from being recorded in a CUDA graph (empty: none):
    host-syncing ops, and parameters or buffers of ``modules`` that the step replaced."""
    modules = list(modules)
    before = {name: (id(t), t.data_ptr()) for name, t in _state_tensors(modules).items()}
    with HostSyncDetector() as detector:
        step()
    after = _state_tensors(modules)
    problems = list(dict.fromkeys(detector.found))
    for name, (ident, pointer) in before.items():
        tensor = after.get(name)
        if tensor is None or id(tensor) != ident or tensor.data_ptr() != pointer:
            problems.append(f"the step replaced tensor {name!r} instead of updating it in place")
    return problems
