"""Which zoo architecture a state dict most likely holds, judged from its tensor shapes.

Used to turn a failed strict load into a one-paragraph error that names what the file holds.
The class count is read from the file (the first dimension of its last 2-D tensor, the final
linear layer in every zoo model); each zoo model is then built at that class count on the
``meta`` device (shapes only, no memory, no compute) and compared tensor by tensor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Guess:
    """The zoo model whose tensors agree best with a state dict's."""

    arch: str
    num_classes: int
    exact: bool  # same number of tensors, same shapes in the same order
    matched: int  # the file's tensors whose shapes the model also has (as a multiset)
    total: int  # tensors in the file
    model_total: int  # tensors in the model

    def describe(self) -> str:
        if self.exact:
            return f"it holds a {self.arch} with {self.num_classes} classes"
        return (f"its tensors are closest to a {self.arch} with {self.num_classes} classes "
                f"({self.matched} of its {self.total} tensors have a shape the {self.arch} has; "
                f"the {self.arch} has {self.model_total})")


def tensor_shapes(state: Mapping[str, object]) -> list[Shape]:
    """Shapes of the tensor values of ``state``, in its order."""
    return [tuple(v.shape) for v in state.values() if isinstance(v, torch.Tensor)]


def classes_of(state: Mapping[str, object]) -> int | None:
    """The class count a state dict's classifier implies, or None when it has no 2-D tensor."""
    matrices = [shape for shape in tensor_shapes(state) if len(shape) == 2]
    return matrices[-1][0] if matrices else None


def _shapes_of(factory: Callable[[int], nn.Module], num_classes: int) -> list[Shape] | None:
    try:
        with torch.device("meta"):
            model = factory(num_classes)
    except Exception:  # a factory that cannot build on meta (or at this class count)
        return None
    return tensor_shapes(model.state_dict())


def zoo_shapes(models: Mapping[str, Callable[[int], nn.Module]],
               num_classes: int) -> dict[str, list[Shape]]:
    """Each model's state-dict shapes at ``num_classes``, in order (built on ``meta``)."""
    table = {name: _shapes_of(factory, num_classes) for name, factory in models.items()}
    return {name: shapes for name, shapes in table.items() if shapes is not None}


def best_match(have: list[Shape], num_classes: int,
               shapes_by_name: Mapping[str, list[Shape]]) -> Guess | None:
    """The entry of ``shapes_by_name`` that agrees best with the shapes ``have``."""
    have_counts = Counter(have)
    best: tuple[int, Guess] | None = None
    for name, want in shapes_by_name.items():
        if want == have:
            return Guess(name, num_classes, True, len(have), len(have), len(want))
        matched = sum((have_counts & Counter(want)).values())
        # Penalise a size difference, so a small model does not win by being a subset.
        score = matched - abs(len(want) - len(have))
        if best is None or score > best[0]:
            best = (score, Guess(name, num_classes, False, matched, len(have), len(want)))
    return best[1] if best else None


def guess_architecture(state: Mapping[str, object],
                       models: Mapping[str, Callable[[int], nn.Module]]) -> Guess | None:
    """The entry of ``models`` (name -> factory(num_classes)) whose state-dict shapes agree best
    with ``state``'s, or None when ``state`` has no classifier-like tensor."""
    num_classes = classes_of(state)
    if num_classes is None:
        return None
    return best_match(tensor_shapes(state), num_classes, zoo_shapes(models, num_classes))
