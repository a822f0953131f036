"""Numpy scalars in checkpoints, rebuilt without trusting the pickle.

torchreid's ``save_checkpoint`` stores ``rank1`` as a numpy float32. A numpy scalar pickles as
``numpy._core.multiarray.scalar(numpy.dtype('f4', False, True) + BUILD state, raw bytes)``
(``numpy.core.multiarray.scalar`` under numpy 1.x). Handing numpy's own functions to the unpickler
would also let a file build dtypes with object fields, whose scalars turn raw bytes into pointers.
So the restricted unpickler gets these stand-ins under numpy's names instead:

* :class:`PickledDtype` replaces ``numpy.dtype``: it accepts only a plain number or bool type
  (``np.dtype(spec).kind`` in ``b i u f c``, no fields, no sub-array) and, from the BUILD state,
  only the byte order;
* :func:`numpy_scalar` replaces ``scalar``: it takes a :class:`PickledDtype` and exactly its item
  size in bytes, and returns the numpy scalar read from a fresh, canonical dtype.

Anything else a pickle might ask of numpy (arrays, object dtypes, other functions) stays refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PLAIN_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex numbers
BYTE_ORDERS = "<>|="
SCALAR_NAMES = ("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar")
DTYPE_NAME = "numpy.dtype"


class UnsafeNumpyValue(ValueError):
    """A pickled numpy value this loader will not build."""


@dataclass
class PickledDtype:
    """What a checkpoint's ``numpy.dtype(spec, align, copy)`` may be: a plain numeric type."""

    spec: str
    align: bool = False
    copy: bool = True
    byte_order: str = "|"

    def __post_init__(self) -> None:
        import numpy as np

        if not isinstance(self.spec, str):
            raise UnsafeNumpyValue(f"numpy dtype spec {self.spec!r} is not a type code")
        try:
            dtype = np.dtype(self.spec)
        except TypeError as err:
            raise UnsafeNumpyValue(f"numpy dtype {self.spec!r} is unknown ({err})") from None
        if dtype.kind not in PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise UnsafeNumpyValue(f"numpy dtype {self.spec!r} is not a plain number or bool type")

    def __setstate__(self, state: Any) -> None:
        """numpy's BUILD state ``(version, byte_order, subarray, names, fields, elsize, alignment,
        flags[, metadata])``: only the byte order may differ from a plain type's."""
        if (not isinstance(state, tuple) or len(state) < 8 or state[1] not in tuple(BYTE_ORDERS)
                or state[2:5] != (None, None, None)):
            raise UnsafeNumpyValue(f"numpy dtype {self.spec!r} carries a structured state {state!r}")
        self.byte_order = state[1]

    def to_numpy(self) -> Any:
        import numpy as np

        dtype = np.dtype(self.spec)
        return dtype if self.byte_order in "|=" else dtype.newbyteorder(self.byte_order)


def numpy_scalar(dtype: Any, data: Any) -> Any:
    """The numpy scalar of ``dtype`` (a :class:`PickledDtype`) held in ``data`` (its raw bytes)."""
    import numpy as np

    if not isinstance(dtype, PickledDtype):
        raise UnsafeNumpyValue(f"numpy scalar of {type(dtype).__name__} refused: only plain number "
                               "and bool types are read")
    real = dtype.to_numpy()
    if not isinstance(data, bytes) or len(data) != real.itemsize:
        raise UnsafeNumpyValue(f"numpy scalar of {real} needs {real.itemsize} bytes, got {data!r}")
    return np.frombuffer(data, dtype=real, count=1)[0]


def numpy_safe_globals() -> list[Any]:
    """Entries for ``torch.serialization.safe_globals``: the stand-ins under numpy's names (and
    :class:`PickledDtype` under its own, which the unpickler's BUILD step checks)."""
    return [(PickledDtype, DTYPE_NAME), PickledDtype,
            *((numpy_scalar, name) for name in SCALAR_NAMES)]
