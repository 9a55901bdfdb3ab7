"""``optimizer.decay_report()``: what the scaling rules did to each parameter."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple


@dataclass(frozen=True)
class DecayRow:
    """One parameter's effective decay.

    ``scale`` is s(p), ``lam`` = weight_decay * s(p); ``decay_factor`` is what one step at the
    current lr multiplies the weights by (``1 - c``) for the multiplicative modes; for
    ``"l2"`` it is ``1 - lr * lam`` for SGD (exact without momentum) and None for Adam, whose
    coupled decay is rescaled by the second-moment estimate.
    """

    group: int
    index: int
    name: Optional[str]
    shape: Tuple[int, ...]
    fan_in: int
    scale: float
    weight_decay: float
    lam: float
    decay_mode: str
    lr: float
    decay_factor: Optional[float]


class DecayReport(list):
    """A list of :class:`DecayRow`; ``str()`` gives a table, ``to_dicts()`` plain data."""

    _COLUMNS = ("group", "name", "shape", "fan_in", "scale", "lam", "decay_mode", "decay_factor")

    def to_dicts(self) -> List[dict]:
        return [asdict(row) for row in self]

    def __str__(self) -> str:
        def cell(row, col):
            v = getattr(row, col)
            if col == "name" and v is None:
                return f"[{row.group}][{row.index}]"
            if col == "shape":
                return "x".join(map(str, v)) or "scalar"
            if isinstance(v, float):
                return f"{v:.6g}" if col != "decay_factor" else f"{v:.8f}"
            return "-" if v is None else str(v)

        table = [list(self._COLUMNS)] + [[cell(r, c) for c in self._COLUMNS] for r in self]
        widths = [max(len(line[i]) for line in table) for i in range(len(self._COLUMNS))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    __repr__ = list.__repr__
