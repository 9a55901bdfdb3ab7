"""The decay plan: rules -> s(p) of every tensor, computed once, for any optimizer.

Shared by sd.SGD, sd.Adam, sd.AdamW and by optimizers given the package's decay from outside
(one place, so every optimizer decays a tensor by the same number). :class:`DecayPlan`
computes ``s(p)`` of every tensor once (cached until the groups or their rules change), holds
the step plans built from it (``scaled_decay.step_plan``), and gives the table of
``decay_report()``. Each step, ``lam = weight_decay * s(p)`` is used as is (mode ``"l2"``) or
as the multiplicative amount ``c = f(lr) * lam`` with ``p *= 1 - c`` (the other modes): the
group's weight_decay and lr are applied at run time, never baked into a per-tensor table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import compiling as C
from .group_keys import PER_TENSOR_KEYS, check_groups_for_step, check_per_tensor_keys, peak_lr
from .modes import PEAK_LR_MODES, decay_lr_factor
from .report import DecayReport, DecayRow, GroupSummary
from .rules import TensorInfo, fan_in_from_shape, tensor_scale
from .updates import low_precision as LP


def total_param_count(param_groups: Sequence[dict]) -> int:
    """N for ParamCount: all elements of all parameters held (global shapes)."""
    return sum(p.numel() for g in param_groups for p in g["params"])


def tensor_infos(group: dict, total: int) -> list[TensorInfo]:
    """What the rules may know of each tensor of ``group``."""
    names = group.get("param_names")
    fan_ins = group.get("fan_ins")
    sources = group.get("fan_in_sources")
    refs = group.get("fan_in_references")
    return [
        TensorInfo(
            shape=tuple(p.shape),
            fan_in=fan_ins[i] if fan_ins else fan_in_from_shape(p.shape),
            total_count=total,
            fan_in_reference=refs[i] if refs else None,
            name=names[i] if names else None,
            fan_in_source=sources[i]
            if sources
            else "given"
            if fan_ins
            else "1-d"
            if p.dim() <= 1
            else "shape",
        )
        for i, p in enumerate(group["params"])
    ]


def group_amounts(group: dict, scales: Sequence[float]) -> tuple[list | None, list | None]:
    """(l2_lams, decay) for a group: per-tensor ``lam`` for "l2", else per-tensor ``c``."""
    wd = group["weight_decay"]
    lams = [wd * s for s in scales]
    if group["decay_mode"] == "l2":
        return lams, None
    # floats in eager (a tensor lr gives a float lr's numbers); tensors under torch.compile
    f = decay_lr_factor(group["decay_mode"], C.scalar(group["lr"]), C.scalar(peak_lr(group)))
    return None, [f * lam for lam in lams]


def _rules_text(rules) -> str:
    return " * ".join(map(repr, rules)) or "none"


class DecayPlan:
    """``s(p)`` of every tensor of a list of param groups, computed once per layout, and the
    step plans of each group.

    Holds only caches; safe to drop and rebuild at any time (pickles and deep copies of an
    optimizer start with an empty one). ``changed()`` drops them: the owner calls it when
    groups are added or loaded.
    """

    def __init__(self):
        self._cache: tuple | None = None
        self.step_plans: dict[int, dict] = {}  # group index -> {plan key: step plan}
        # cautious decay: group index -> the last step's [(positions in the group, counts of
        # decayed coordinates (0-d device tensors)), ...], read only by report()
        self.decayed: dict[int, list | None] = {}

    def changed(self) -> None:
        self._cache = None
        self.step_plans.clear()
        self.decayed.clear()

    def scales(self, param_groups: Sequence[dict]) -> list[list[float]]:
        """s(p) of every tensor, per group; recomputed only when the groups' tensors (by
        identity: frameworks swap them, e.g. accelerate), rules or per-tensor lists change.
        While torch.compile traces, the cache is read but not checked or written (Dynamo
        2.11 cannot trace ``id()`` of a tensor; it guards on what the trace read)."""
        if torch.compiler.is_compiling():
            return self._cache[1] if self._cache is not None else self._compute(param_groups)
        key = tuple(
            (
                tuple(map(id, g["params"])),
                g["decay_scaling"],
                tuple(id(g.get(k)) for k in PER_TENSOR_KEYS),
            )
            for g in param_groups
        )
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._compute(param_groups))
        return self._cache[1]

    @staticmethod
    def _compute(param_groups: Sequence[dict]) -> list[list[float]]:
        for gi, g in enumerate(param_groups):
            try:
                check_per_tensor_keys(g)
            except ValueError as e:
                raise ValueError(f"param_groups[{gi}]: {e}") from None
        total = total_param_count(param_groups)
        return [
            [tensor_scale(g["decay_scaling"], info) for info in tensor_infos(g, total)]
            for g in param_groups
        ]

    def amounts(self, param_groups: Sequence[dict]):
        """(group, l2_lams, decay) for every group: this step's decay, per tensor (for
        ``with_scaled_decay``, whose decay is one op per group before the wrapped step).
        Validates every group's decay keys first (mid-run edits), before any is yielded."""
        check_groups_for_step(param_groups)
        for group, scales in zip(param_groups, self.scales(param_groups)):
            yield (group, *group_amounts(group, scales))

    def report(
        self, param_groups: Sequence[dict], l2_factor: Callable[[dict, float], float | None]
    ) -> DecayReport:
        """One row per parameter: name, shape, fan-in and its source, s(p), effective lam,
        lr, per-step factor, no-decay reason, EMA timescale in steps at the peak lr; and one
        :class:`GroupSummary` per group.
        ``l2_factor(group, lam)`` is the optimizer's per-step factor for mode "l2" (or None)."""
        check_groups_for_step(param_groups)
        rows = DecayReport()
        total = total_param_count(param_groups)
        for gi, (group, scales) in enumerate(zip(param_groups, self.scales(param_groups))):
            _, decay = group_amounts(group, scales)
            reasons = group.get("no_decay_reasons")
            mode = group["decay_mode"]
            eta0 = float(peak_lr(group)) if mode in PEAK_LR_MODES else None
            # per step at the peak lr: c = f(eta0) * lam, an EMA of timescale 1 / c steps
            f_peak = decay_lr_factor(mode, float(peak_lr(group)), float(peak_lr(group)))
            lams = []
            fractions = self._decayed_fractions(gi, group)
            for i, (info, s) in enumerate(zip(tensor_infos(group, total), scales)):
                lam = float(group["weight_decay"] * s)
                lams.append(lam)
                factor = (1.0 - decay[i]) if decay is not None else l2_factor(group, lam)
                dtype = group["params"][i].dtype
                shrink = None if factor is None else 1.0 - float(factor)
                survives = LP.survives(shrink, dtype)
                kept_by = group.get("low_precision") if dtype in LP.LOW_DTYPES else None
                rows.append(
                    DecayRow(
                        group=gi,
                        index=i,
                        name=info.name,
                        shape=info.shape,
                        fan_in=info.fan_in,
                        fan_in_source=info.fan_in_source,
                        scale=s,
                        weight_decay=float(group["weight_decay"]),
                        lam=lam,
                        decay_mode=group["decay_mode"],
                        lr=float(group["lr"]),
                        peak_lr=eta0,
                        decay_factor=None if factor is None else float(factor),
                        no_decay_reason=reasons[i] if reasons else None,
                        dtype=str(dtype),
                        decay_survives=survives,
                        compensated_by=kept_by if survives is not None else None,
                        decayed=fractions.get(i),
                        timescale=1.0 / (f_peak * lam) if f_peak * lam > 0 else None,
                    )
                )
            rows.groups.append(
                GroupSummary(
                    group=gi,
                    tensors=len(group["params"]),
                    elements=sum(p.numel() for p in group["params"]),
                    weight_decay=float(group["weight_decay"]),
                    decay_mode=group["decay_mode"],
                    decay_scaling=_rules_text(group["decay_scaling"]),
                    lr=float(group["lr"]),
                    peak_lr=eta0,
                    lam_min=min(lams, default=0.0),
                    lam_max=max(lams, default=0.0),
                )
            )
        return rows

    def _decayed_fractions(self, gi: int, group: dict) -> dict[int, float]:
        """Cautious decay: the fraction of each tensor's coordinates decayed on the group's
        last step ({position: fraction}; the counts are read here, one sync)."""
        record = self.decayed.get(gi) if group.get("cautious_decay", False) else None
        if not record:
            return {}
        positions, counts = [], []
        for idx, cs in record:  # cs: a 0-d count per tensor, or one 1-d tensor (Triton)
            if cs and all(c is not None for c in cs):  # (else a step GradScaler skipped)
                positions += idx
                counts += [c.detach().reshape(-1).float().cpu() for c in cs]
        if not counts:
            return {}
        values = torch.cat(counts).tolist()
        params = group["params"]
        return {
            i: n / max(params[i].numel(), 1) for i, n in zip(positions, values) if i < len(params)
        }
