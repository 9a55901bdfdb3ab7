"""The decay plan: rules -> per-tensor amount of decay for one step, for any optimizer.

Shared by sd.SGD, sd.Adam, sd.AdamW and by optimizers given the package's decay from
outside (one place, so every optimizer decays a tensor by the same number):

- :func:`check_decay_group` validates and normalizes a param group's decay keys
  (``lr``, ``weight_decay``, ``decay_mode``, ``decay_scaling``, ``initial_lr`` and the
  per-tensor lists written by ``sd.param_groups``).
- :class:`DecayPlan` computes ``s(p)`` of every tensor once (cached until the groups or
  their rules change) and, each step, ``lam = weight_decay * s(p)`` (mode ``"l2"``) or the
  multiplicative amount ``c`` with ``p *= 1 - c`` (the other modes); ``report`` gives the
  table of ``decay_report()``.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from . import compiling as C
from .modes import check_decay_mode, decay_lr_factor
from .report import DecayReport, DecayRow
from .rules import TensorInfo, as_rules, fan_in_from_shape, tensor_scale

# Per-tensor metadata keys a group may carry (from sd.param_groups), aligned with params.
PER_TENSOR_KEYS = ("param_names", "fan_ins", "fan_in_references")


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, torch.Tensor))


def check_non_negative(name: str, value) -> None:
    if not _number(value) or (isinstance(value, torch.Tensor) and value.numel() != 1) \
            or not float(value) >= 0 or math.isinf(float(value)):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")


def check_decay_group(group: dict) -> None:
    """Validate a group's decay keys in place (ValueError naming the key and value);
    ``decay_scaling`` becomes a tuple of rule objects, ``initial_lr`` is set if absent."""
    check_non_negative("lr", group["lr"])
    check_non_negative("weight_decay", group["weight_decay"])
    check_decay_mode(group["decay_mode"])
    group["decay_scaling"] = as_rules(group["decay_scaling"])
    # a tensor lr is changed in place by LR schedulers: initial_lr must not alias it
    lr = group["lr"]
    group.setdefault("initial_lr", lr.clone() if isinstance(lr, torch.Tensor) else lr)
    if group["decay_mode"] in ("independent", "corrected") \
            and not float(group["initial_lr"]) > 0:
        raise ValueError(
            f"decay_mode={group['decay_mode']!r} divides by the initial lr, which must be "
            f"positive: got lr (initial_lr) = {group['initial_lr']!r}")
    for key in PER_TENSOR_KEYS[1:]:
        if key in group and len(group[key]) != len(group.get("params", group[key])):
            raise ValueError(f"param group key {key!r} must have one entry per parameter: "
                             f"{len(group[key])} entries for {len(group['params'])} params")
    for f in group.get("fan_ins", ()):
        if not f > 0:
            raise ValueError(f"fan_ins must be positive, got {f!r}")


def total_param_count(param_groups: Sequence[dict]) -> int:
    """N for ParamCount: all elements of all parameters held (global shapes)."""
    return sum(p.numel() for g in param_groups for p in g["params"])


def tensor_infos(group: dict, total: int) -> List[TensorInfo]:
    """What the rules may know of each tensor of ``group``."""
    names = group.get("param_names")
    fan_ins = group.get("fan_ins")
    refs = group.get("fan_in_references")
    return [TensorInfo(shape=tuple(p.shape),
                       fan_in=fan_ins[i] if fan_ins else fan_in_from_shape(p.shape),
                       total_count=total,
                       fan_in_reference=refs[i] if refs else None,
                       name=names[i] if names else None)
            for i, p in enumerate(group["params"])]


def group_amounts(group: dict, scales: Sequence[float]) -> Tuple[Optional[list], Optional[list]]:
    """(l2_lams, decay) for a group: per-tensor ``lam`` for "l2", else per-tensor ``c``."""
    wd = group["weight_decay"]
    lams = [wd * s for s in scales]
    if group["decay_mode"] == "l2":
        return lams, None
    # floats in eager (a tensor lr gives a float lr's numbers); tensors under torch.compile
    f = decay_lr_factor(group["decay_mode"], C.scalar(group["lr"]), C.scalar(group["initial_lr"]))
    return None, [f * lam for lam in lams]


class DecayPlan:
    """``s(p)`` of every tensor of a list of param groups, computed once per layout.

    Holds only a cache; safe to drop and rebuild at any time (pickles and deep copies of an
    optimizer start with an empty one).
    """

    def __init__(self):
        self._cache: Optional[Tuple] = None

    def scales(self, param_groups: Sequence[dict]) -> List[List[float]]:
        """s(p) of every tensor, per group; recomputed only when groups or rules change."""
        key = tuple((id(g["params"]), len(g["params"]), g["decay_scaling"],
                     id(g.get("fan_ins")), id(g.get("fan_in_references")))
                    for g in param_groups)
        if self._cache is None or self._cache[0] != key:
            total = total_param_count(param_groups)
            scales = [[tensor_scale(g["decay_scaling"], info)
                       for info in tensor_infos(g, total)] for g in param_groups]
            self._cache = (key, scales)
        return self._cache[1]

    def amounts(self, param_groups: Sequence[dict]):
        """(group, l2_lams, decay) for every group: this step's decay, per tensor."""
        for group, scales in zip(param_groups, self.scales(param_groups)):
            yield (group, *group_amounts(group, scales))

    def report(self, param_groups: Sequence[dict],
               l2_factor: Callable[[dict, float], Optional[float]]) -> DecayReport:
        """One row per parameter: name, shape, fan-in, s(p), effective lam, per-step factor.
        ``l2_factor(group, lam)`` is the optimizer's per-step factor for mode "l2" (or None)."""
        rows = DecayReport()
        total = total_param_count(param_groups)
        for gi, (group, scales) in enumerate(zip(param_groups, self.scales(param_groups))):
            _, decay = group_amounts(group, scales)
            for i, (info, s) in enumerate(zip(tensor_infos(group, total), scales)):
                lam = group["weight_decay"] * s
                factor = (1.0 - decay[i]) if decay is not None else l2_factor(group, lam)
                rows.append(DecayRow(group=gi, index=i, name=info.name, shape=info.shape,
                                     fan_in=info.fan_in, scale=s,
                                     weight_decay=float(group["weight_decay"]), lam=float(lam),
                                     decay_mode=group["decay_mode"], lr=float(group["lr"]),
                                     decay_factor=None if factor is None else float(factor)))
        return rows
