"""``optimizer.decay_report()``: what the scaling rules did to each parameter and group."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DecayRow:
    """One parameter's effective decay.

    ``scale`` is s(p), ``lam`` = weight_decay * s(p); ``fan_in_source`` says where
    ``fan_in`` came from (the module class the registry knew, ``"1-d"``, ``"shape"``, or
    ``"given"``); ``peak_lr`` is eta0 for the modes that use it (else None);
    ``decay_factor`` is what one step at the current lr multiplies the weights by
    (``1 - c``) for the multiplicative modes; for ``"l2"`` it is ``1 - lr * lam`` for SGD
    (exact without momentum) and None for Adam, whose coupled decay is rescaled by the
    second-moment estimate. ``no_decay_reason``: why ``sd.param_groups`` put the tensor in
    its ``weight_decay=0`` group (None for decayed tensors and groups built otherwise).
    ``dtype``: the parameter's; ``decay_survives``: whether one step's shrink ``1 -
    decay_factor`` is at least half an ulp of that dtype (False: rounding to nearest drops it
    every step; None: no fixed shrink); ``compensated_by``: the group's ``low_precision``
    where it keeps a bf16/fp16 tensor's decay ("kahan", "stochastic"), else None.
    ``timescale``: the weights' EMA timescale in steps at the peak lr, ``1 / c(eta0)``
    (Wang & Aitchison 2024; ``timescale=`` sets it for ``s(p) = 1``); None for mode
    ``"l2"`` and for tensors that do not decay. ``decayed``: with ``cautious_decay=True``,
    the fraction of the tensor's coordinates decayed on the last step (None otherwise, or
    before a step; the table shows the column only where some row has it).

    Attributes:
        group: the index of the tensor's param group.
        index: the tensor's position in its group.
        name: its name from the group's ``param_names``, or None.
        shape: its global shape.
        fan_in: the fan-in the rules see.
        fan_in_source: where ``fan_in`` came from.
        scale: ``s(p)``, the product of the group's ``decay_scaling`` rules.
        weight_decay: the group's ``weight_decay``.
        lam: the effective decay, ``weight_decay * s(p)``.
        decay_mode: the group's decay mode.
        lr: the group's current lr.
        peak_lr: eta0, for ``"independent"`` and ``"corrected"``; else None.
        decay_factor: what one step at the current lr multiplies the weights by, or None.
        no_decay_reason: why ``sd.param_groups`` did not decay it, or None.
        timescale: the EMA timescale in steps at the peak lr, or None.
        dtype: the parameter's dtype, as text (``"torch.bfloat16"``).
        decay_survives: whether one step's shrink survives rounding, or None.
        compensated_by: the ``low_precision`` mode that keeps the decay, or None.
        decayed: the fraction of coordinates cautious decay decayed on the last step, or
            None.
    """

    group: int
    index: int
    name: str | None
    shape: tuple[int, ...]
    fan_in: int
    fan_in_source: str
    scale: float
    weight_decay: float
    lam: float
    decay_mode: str
    lr: float
    peak_lr: float | None
    decay_factor: float | None
    no_decay_reason: str | None = None
    timescale: float | None = None
    dtype: str = ""
    decay_survives: bool | None = None
    compensated_by: str | None = None
    decayed: float | None = None

    @property
    def decay_kept(self) -> str:
        """Whether the decay survives rounding, as the table shows it.

        ``"yes"``, the ``low_precision`` mode that keeps it, ``"LOST"`` (rounded away every
        step) or ``"-"`` (no fixed shrink).
        """
        if self.decay_survives is None:
            return "-"
        if self.compensated_by:
            return self.compensated_by
        return "yes" if self.decay_survives else "LOST"


@dataclass(frozen=True)
class GroupSummary:
    """One param group: its settings and the range of ``lam`` over its tensors.

    Attributes:
        group: the group's index.
        tensors: its number of tensors.
        elements: its number of elements, all tensors together.
        weight_decay: its ``weight_decay``.
        decay_mode: its decay mode.
        decay_scaling: its rules as text (``" * "`` between them; ``"none"`` for none).
        lr: its current lr.
        peak_lr: eta0, for ``"independent"`` and ``"corrected"``; else None.
        lam_min: the smallest ``lam`` of its tensors (0 for a group without tensors).
        lam_max: the largest ``lam`` of its tensors (0 for a group without tensors).
    """

    group: int
    tensors: int
    elements: int
    weight_decay: float
    decay_mode: str
    decay_scaling: str
    lr: float
    peak_lr: float | None
    lam_min: float
    lam_max: float


def _table(header: Sequence[str], lines: list[list[str]]) -> list[str]:
    table = [list(header), *lines]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def _number(v) -> str:
    return "-" if v is None else f"{v:.6g}"


class DecayReport(list):
    """A list of ``DecayRow``, one per parameter, with ``groups``, one ``GroupSummary`` per
    param group; ``str()`` gives both tables, ``to_dicts()`` the rows as plain data.

    ``optimizer.decay_report()`` and ``sd.decay_report`` make it.

    Args:
        rows: the rows (``groups`` starts empty).

    Attributes:
        groups: one ``GroupSummary`` per param group.
    """

    _COLUMNS: tuple[str, ...] = (
        "group",
        "name",
        "shape",
        "fan_in",
        "fan_in_from",
        "scale",
        "lam",
        "lr",
        "decay_factor",
        "timescale",
        "dtype",
        "decay_kept",
        "no_decay",
    )
    _GROUP_COLUMNS = (
        "group",
        "tensors",
        "elements",
        "weight_decay",
        "decay_mode",
        "decay_scaling",
        "lr",
        "peak_lr",
        "lam",
    )

    def __init__(self, rows: Iterable[DecayRow] = ()) -> None:
        super().__init__(rows)
        self.groups: list[GroupSummary] = []

    def to_dicts(self) -> list[dict]:
        """The rows as plain data.

        Returns:
            One dict per row, its fields by name (``dataclasses.asdict``).
        """
        return [asdict(row) for row in self]

    @staticmethod
    def _cells(row: DecayRow) -> list[str]:
        return [
            str(row.group),
            row.name if row.name is not None else f"[{row.group}][{row.index}]",
            "x".join(map(str, row.shape)) or "scalar",
            str(row.fan_in),
            row.fan_in_source,
            _number(row.scale),
            _number(row.lam),
            _number(row.lr),
            "-" if row.decay_factor is None else f"{row.decay_factor:.8f}",
            _number(row.timescale),
            row.dtype.replace("torch.", ""),
            row.decay_kept,
            row.no_decay_reason or "",
        ]

    @staticmethod
    def _group_cells(g: GroupSummary) -> list[str]:
        lam = (
            _number(g.lam_min)
            if g.lam_min == g.lam_max
            else f"{_number(g.lam_min)} .. {_number(g.lam_max)}"
        )
        return [
            str(g.group),
            str(g.tensors),
            str(g.elements),
            _number(g.weight_decay),
            g.decay_mode,
            g.decay_scaling,
            _number(g.lr),
            _number(g.peak_lr),
            lam,
        ]

    def __str__(self) -> str:
        if any(getattr(r, "decayed", None) is not None for r in self):  # cautious decay
            lines = _table(
                (*self._COLUMNS, "decayed"), [[*self._cells(r), _number(r.decayed)] for r in self]
            )
        else:
            lines = _table(self._COLUMNS, [self._cells(r) for r in self])
        if self.groups:
            lines += ["", *_table(self._GROUP_COLUMNS, [self._group_cells(g) for g in self.groups])]
        return "\n".join(lines)

    __repr__ = list.__repr__
