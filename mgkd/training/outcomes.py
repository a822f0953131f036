"""Which validation samples a run got right, kept so two runs can be compared sample by sample
(the paired verdict, :mod:`analysis.verdict`).

Per epoch the validation split yields :class:`SampleOutcomes`: one bool per sample (classification:
the prediction is the label; re-ID: the first match is right, i.e. rank-1) and, for re-ID, each
valid query's AP (a share in [0, 1]). The run keeps two of them, both in its checkpoint (so a
resumed run writes the same file): the best epoch's and the last epoch's (the epoch a sweep trial's
value comes from). A trial writes them as ``val_outcomes.json`` in its trial dir: the bools packed
8 to a byte and the APs as float32, each base64 text.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mgkd.io import atomic_write_text

OUTCOMES_FILE = "val_outcomes.json"
OUTCOMES_FORMAT = 1
BEST, LAST = "best", "last"


class OutcomesError(ValueError):
    """A stored outcome record does not parse."""


@dataclass(frozen=True)
class SampleOutcomes:
    """One epoch's per-sample validation outcomes."""

    epoch: int
    correct: np.ndarray  # bool (n,): the sample was classified right (re-ID: a rank-1 hit)
    ap: np.ndarray | None = None  # float (n,): each valid query's AP in [0, 1] (re-ID only)

    @property
    def size(self) -> int:
        return int(self.correct.size)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (a checkpoint and the JSON file hold this)."""
        out: dict[str, Any] = {"epoch": int(self.epoch), "n": self.size,
                               "correct": _encode(np.packbits(self.correct.astype(bool)))}
        if self.ap is not None:
            out["ap"] = _encode(np.asarray(self.ap, dtype="<f4"))
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "SampleOutcomes":
        if not isinstance(data, dict) or not isinstance(data.get("epoch"), int) \
                or not isinstance(data.get("n"), int) or not isinstance(data.get("correct"), str):
            raise OutcomesError("an outcome record needs integer 'epoch' and 'n' and a base64 "
                                "'correct' bitset")
        n = data["n"]
        bits = np.frombuffer(_decode(data["correct"]), dtype=np.uint8)
        if bits.size != (n + 7) // 8:
            raise OutcomesError(f"its bitset holds {bits.size} bytes, not the {(n + 7) // 8} that "
                                f"{n} samples need")
        correct = np.unpackbits(bits, count=n).astype(bool)
        ap = None
        if "ap" in data:
            ap = np.frombuffer(_decode(data["ap"]), dtype="<f4").astype(np.float64)
            if ap.size != n:
                raise OutcomesError(f"it holds {ap.size} APs for {n} queries")
        return cls(data["epoch"], correct, ap)


def _encode(array: np.ndarray) -> str:
    return base64.b64encode(array.tobytes()).decode("ascii")


def _decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as err:
        raise OutcomesError(f"it is not valid base64 ({err})") from None


def write_outcomes(path: Path, records: dict[str, dict[str, Any] | None]) -> None:
    """Write the records (``{"best": SampleOutcomes.to_dict(), "last": ...}``) atomically."""
    kept = {name: record for name, record in records.items() if record is not None}
    atomic_write_text(path, json.dumps({"format": OUTCOMES_FORMAT, "records": kept}))


def read_outcomes(path: Path) -> dict[str, SampleOutcomes]:
    """The records of an outcomes file; OutcomesError saying what is wrong otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OutcomesError(f"{path} could not be read ({err})") from None
    if not isinstance(data, dict) or data.get("format") != OUTCOMES_FORMAT \
            or not isinstance(data.get("records"), dict):
        raise OutcomesError(f"{path} is not an outcomes file of format {OUTCOMES_FORMAT}")
    out = {}
    for name, record in data["records"].items():
        try:
            out[name] = SampleOutcomes.from_dict(record)
        except OutcomesError as err:
            raise OutcomesError(f"{path}, record '{name}': {err}") from None
    return out
