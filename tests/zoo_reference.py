"""Reference weights and output summaries shared by the zoo tests that compare this project's
models with data recorded from other projects' model code (``tests/data/*.json``)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def reference_weights(
    tensors: list[tuple[str, tuple[int, ...]]], seed: int
) -> dict[str, Tensor]:
    """A full state dict for ``tensors`` with values that exercise every tensor.

    Numpy's legacy ``RandomState`` stream is stable across versions, so the values are the same
    wherever the test runs. Convs and linears get He-scaled normals, BN scales ``1 + 0.2 N``,
    biases and running means ``0.2 N``, running variances ``U(0.5, 1.5)``.
    """
    rng = np.random.RandomState(seed)
    weights: dict[str, Tensor] = {}
    for name, shape in tensors:
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            weights[name] = torch.tensor(3, dtype=torch.long)
            continue
        if leaf == "running_var":
            values = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 1:
            values = 0.2 * rng.standard_normal(shape) + (1.0 if leaf == "weight" else 0.0)
        else:
            fan_in = math.prod(shape[1:])
            values = rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
        weights[name] = torch.from_numpy(values.astype(np.float32))
    return weights


def feature_summary(features: list[Tensor]) -> list[list[list[float]]]:
    """Per map, per sample: ``[mean, mean absolute value]``."""
    out = []
    for f in features:
        flat = f.detach().flatten(1).double()
        out.append(torch.stack([flat.mean(1), flat.abs().mean(1)], dim=1).tolist())
    return out
