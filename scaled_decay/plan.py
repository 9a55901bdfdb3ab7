"""The decay plan: rules -> per-tensor amount of decay for one step, for any optimizer.

Shared by sd.SGD, sd.Adam, sd.AdamW and by optimizers given the package's decay from
outside (one place, so every optimizer decays a tensor by the same number):

- :func:`check_decay_group` validates and normalizes a param group's decay keys
  (``lr``, ``weight_decay``, ``decay_mode``, ``decay_scaling``, ``peak_lr``,
  ``initial_lr`` and the per-tensor lists written by ``sd.param_groups``), at construction
  and in ``add_param_group``; :func:`check_decay_keys`, its cheap part, runs again at
  every step, so mid-run edits of these keys act at the next step, or raise there.
- :func:`peak_lr` is ``eta0`` of the modes ``"independent"``/``"corrected"``.
- :class:`DecayPlan` computes ``s(p)`` of every tensor once (cached until the groups or
  their rules change) and, each step, ``lam = weight_decay * s(p)`` (mode ``"l2"``) or the
  multiplicative amount ``c`` with ``p *= 1 - c`` (the other modes); ``report`` gives the
  table of ``decay_report()``.
- :func:`align_param_names` keeps ``add_param_group`` working when only some groups have
  ``param_names`` (torch refuses the mix).
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from . import compiling as C
from .errors import ArgumentTypeError
from .modes import PEAK_LR_MODES, check_decay_mode, decay_lr_factor
from .report import DecayReport, DecayRow, GroupSummary
from .rules import RULE_TYPES, TensorInfo, as_rules, fan_in_from_shape, tensor_scale

# Per-tensor metadata keys a group may carry (from sd.param_groups), aligned with params.
PER_TENSOR_KEYS = ("param_names", "fan_ins", "fan_in_sources", "fan_in_references",
                   "no_decay_reasons")
# Group keys load_state_dict does not carry over: a saved group lacking initial_lr or
# peak_lr derives them from its own lr (a torch.optim state dict), as torch does.
RESET_ON_LOAD = ("params", "initial_lr", "peak_lr")
# lr may exceed the peak by float rounding of a scheduler's arithmetic, no more
_PEAK_TOLERANCE = 1e-6


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, torch.Tensor))


def check_non_negative(name: str, value) -> None:
    """A non-negative finite number (or 1-element tensor); ValueError naming it otherwise
    (also a TypeError for a non-number, as torch.optim raises there)."""
    if not _number(value):
        raise ArgumentTypeError(f"{name} must be a non-negative finite number, got {value!r}")
    if (isinstance(value, torch.Tensor) and value.numel() != 1) \
            or not float(value) >= 0 or math.isinf(float(value)):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")


def peak_lr(group: dict):
    """``eta0`` of ``decay_mode="independent"``/``"corrected"``: the peak lr of the schedule.

    The group's ``max_lr`` where a scheduler keeps one there (OneCycleLR), else its
    ``peak_lr``: set at construction to the group's ``initial_lr`` if given, else its
    ``lr`` -- the peak for every torch and transformers scheduler whose lr never exceeds
    the lr the optimizer was built with (warmups, cosine, linear, step, polynomial, ...).
    CyclicLR keeps its ``max_lr`` to itself: build the optimizer with ``lr=max_lr`` or set
    ``group["peak_lr"]``. An lr above ``eta0`` in these modes is an error at the step.
    """
    return group["max_lr"] if "max_lr" in group else group["peak_lr"]


def _is_rules(value) -> bool:
    return type(value) is tuple and all(isinstance(r, RULE_TYPES) for r in value)


def _copy_lr(lr):
    # a tensor lr is changed in place by LR schedulers: what records it must not alias it
    return lr.clone() if isinstance(lr, torch.Tensor) else lr


def check_decay_keys(group: dict) -> None:
    """Validate the group keys a user may change mid-run, in place (ValueError naming the
    key and value): ``lr``, ``weight_decay``, ``decay_mode``, ``decay_scaling`` (becomes
    a tuple of rule objects), ``peak_lr`` (set if absent) and, for the modes that divide by
    it, ``eta0 = peak_lr(group)`` (positive, not below lr). Cheap: runs at every step.
    Tensor values are not read while torch.compile traces (a scheduler's in-place change)."""
    compiling = C.is_compiling()
    for key in ("lr", "weight_decay"):
        if not (compiling and isinstance(group[key], torch.Tensor)):
            check_non_negative(key, group[key])
    check_decay_mode(group["decay_mode"])
    if not _is_rules(group["decay_scaling"]):
        group["decay_scaling"] = as_rules(group["decay_scaling"])
    if "peak_lr" not in group:
        group["peak_lr"] = _copy_lr(group.get("initial_lr", group["lr"]))
    mode, eta0 = group["decay_mode"], peak_lr(group)
    if mode not in PEAK_LR_MODES or compiling and isinstance(eta0, torch.Tensor):
        return
    source = "max_lr" if "max_lr" in group else "peak_lr"
    if not _number(eta0) or not math.isfinite(float(eta0)) or not float(eta0) > 0:
        raise ValueError(
            f"decay_mode={mode!r} divides by the peak lr, which must be a positive number: got "
            f"{source} = {eta0!r} (peak_lr is set at construction to initial_lr or lr)")
    lr = group["lr"]
    if not (compiling and isinstance(lr, torch.Tensor)) \
            and float(lr) > float(eta0) * (1 + _PEAK_TOLERANCE):
        raise ValueError(
            f"lr = {float(lr)!r} is above the peak lr {source} = {float(eta0)!r} that "
            f"decay_mode={mode!r} measures decay against, so a step would decay more than "
            f"weight_decay * s(p): set group['peak_lr'] to the schedule's highest lr (e.g. "
            f"CyclicLR's max_lr), or build the optimizer with lr at the peak")


def check_per_tensor_keys(group: dict) -> None:
    """The lists written by sd.param_groups must have one entry per parameter."""
    for key in PER_TENSOR_KEYS[1:]:
        if key in group and len(group[key]) != len(group["params"]):
            raise ValueError(f"param group key {key!r} must have one entry per parameter: "
                             f"{len(group[key])} entries for {len(group['params'])} params")
    for f in group.get("fan_ins", ()):
        if not f > 0:
            raise ValueError(f"fan_ins must be positive, got {f!r}")


def check_decay_group(group: dict) -> None:
    """Validate a group's decay keys in place (ValueError naming the key and value);
    ``decay_scaling`` becomes a tuple of rule objects, ``initial_lr`` and ``peak_lr`` are
    set if absent (to copies of ``lr``)."""
    check_decay_keys(group)
    group.setdefault("initial_lr", _copy_lr(group["lr"]))
    check_per_tensor_keys(group)


def check_groups_for_step(param_groups: Sequence[dict]) -> None:
    """:func:`check_decay_keys` on every group, the error naming the group."""
    for gi, group in enumerate(param_groups):
        try:
            check_decay_keys(group)
        except ValueError as e:
            raise ValueError(f"param_groups[{gi}]: {e}") from None


def align_param_names(param_groups: Sequence[dict], new_group: dict) -> None:
    """Before ``add_param_group``: give names to whichever side lacks them.

    torch refuses to mix groups with and without ``param_names`` (as written by
    ``sd.param_groups`` or named parameters); a group of plain tensors added to such an
    optimizer (progressive unfreezing) gets the names ``"param_groups[g][i]"``, and so do
    unnamed existing groups when a named group is added. ``new_group["params"]`` becomes
    a list (a generator is read once here).
    """
    params = new_group["params"]
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    new_group["params"] = params
    new_named = "param_names" in new_group or any(isinstance(p, tuple) for p in params)
    for gi, group in enumerate(list(param_groups) + [new_group]):
        named = new_named if group is new_group else "param_names" in group
        others_named = any("param_names" in g for g in param_groups) \
            if group is new_group else new_named
        if not named and others_named:
            group["param_names"] = [f"param_groups[{gi}][{i}]" for i in range(len(group["params"]))]


def total_param_count(param_groups: Sequence[dict]) -> int:
    """N for ParamCount: all elements of all parameters held (global shapes)."""
    return sum(p.numel() for g in param_groups for p in g["params"])


def tensor_infos(group: dict, total: int) -> List[TensorInfo]:
    """What the rules may know of each tensor of ``group``."""
    names = group.get("param_names")
    fan_ins = group.get("fan_ins")
    sources = group.get("fan_in_sources")
    refs = group.get("fan_in_references")
    return [TensorInfo(shape=tuple(p.shape),
                       fan_in=fan_ins[i] if fan_ins else fan_in_from_shape(p.shape),
                       total_count=total,
                       fan_in_reference=refs[i] if refs else None,
                       name=names[i] if names else None,
                       fan_in_source=sources[i] if sources else
                       "given" if fan_ins else "1-d" if p.dim() <= 1 else "shape")
            for i, p in enumerate(group["params"])]


def group_amounts(group: dict, scales: Sequence[float]) -> Tuple[Optional[list], Optional[list]]:
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
    """``s(p)`` of every tensor of a list of param groups, computed once per layout.

    Holds only a cache; safe to drop and rebuild at any time (pickles and deep copies of an
    optimizer start with an empty one).
    """

    def __init__(self):
        self._cache: Optional[Tuple] = None

    def scales(self, param_groups: Sequence[dict]) -> List[List[float]]:
        """s(p) of every tensor, per group; recomputed only when the groups' tensors (by
        identity: frameworks swap them, e.g. accelerate), rules or per-tensor lists change."""
        key = tuple((tuple(map(id, g["params"])), g["decay_scaling"],
                     tuple(id(g.get(k)) for k in PER_TENSOR_KEYS))
                    for g in param_groups)
        if self._cache is None or self._cache[0] != key:
            for gi, g in enumerate(param_groups):
                try:
                    check_per_tensor_keys(g)
                except ValueError as e:
                    raise ValueError(f"param_groups[{gi}]: {e}") from None
            total = total_param_count(param_groups)
            scales = [[tensor_scale(g["decay_scaling"], info)
                       for info in tensor_infos(g, total)] for g in param_groups]
            self._cache = (key, scales)
        return self._cache[1]

    def amounts(self, param_groups: Sequence[dict]):
        """(group, l2_lams, decay) for every group: this step's decay, per tensor.
        Validates every group's decay keys first (mid-run edits), before any is yielded."""
        check_groups_for_step(param_groups)
        for group, scales in zip(param_groups, self.scales(param_groups)):
            yield (group, *group_amounts(group, scales))

    def report(self, param_groups: Sequence[dict],
               l2_factor: Callable[[dict, float], Optional[float]]) -> DecayReport:
        """One row per parameter: name, shape, fan-in and its source, s(p), effective lam,
        lr, per-step factor, no-decay reason; and one :class:`GroupSummary` per group.
        ``l2_factor(group, lam)`` is the optimizer's per-step factor for mode "l2" (or None)."""
        check_groups_for_step(param_groups)
        rows = DecayReport()
        total = total_param_count(param_groups)
        for gi, (group, scales) in enumerate(zip(param_groups, self.scales(param_groups))):
            _, decay = group_amounts(group, scales)
            reasons = group.get("no_decay_reasons")
            eta0 = float(peak_lr(group)) if group["decay_mode"] in PEAK_LR_MODES else None
            lams = []
            for i, (info, s) in enumerate(zip(tensor_infos(group, total), scales)):
                lam = float(group["weight_decay"] * s)
                lams.append(lam)
                factor = (1.0 - decay[i]) if decay is not None else l2_factor(group, lam)
                rows.append(DecayRow(group=gi, index=i, name=info.name, shape=info.shape,
                                     fan_in=info.fan_in, fan_in_source=info.fan_in_source,
                                     scale=s, weight_decay=float(group["weight_decay"]),
                                     lam=lam, decay_mode=group["decay_mode"],
                                     lr=float(group["lr"]), peak_lr=eta0,
                                     decay_factor=None if factor is None else float(factor),
                                     no_decay_reason=reasons[i] if reasons else None))
            rows.groups.append(GroupSummary(
                group=gi, tensors=len(group["params"]),
                elements=sum(p.numel() for p in group["params"]),
                weight_decay=float(group["weight_decay"]), decay_mode=group["decay_mode"],
                decay_scaling=_rules_text(group["decay_scaling"]), lr=float(group["lr"]),
                peak_lr=eta0, lam_min=min(lams, default=0.0), lam_max=max(lams, default=0.0)))
        return rows


def optimizer_repr(optimizer) -> str:
    """torch.optim's ``repr`` with the per-tensor lists of ``sd.param_groups`` (names,
    fan-ins, ...) shown by their length: one short line per group key."""
    lines = [type(optimizer).__name__ + " ("]
    for i, group in enumerate(optimizer.param_groups):
        lines += [f"Parameter Group {i}", f"    params: {len(group['params'])} tensors"]
        lines += [f"    {key}: " + (f"<{len(group[key])} per-tensor values>"
                                    if key in PER_TENSOR_KEYS else str(group[key]))
                  for key in sorted(group) if key != "params"]
    return "\n".join(lines + [")"])


class DecayPlanOwner:
    """Mixin for an optimizer that decays through a :class:`DecayPlan` (sd's optimizers and
    ``with_scaled_decay``'s classes): ``self._plan``. torch's Optimizer pickles only
    defaults, state and groups, so a copy or an unpickled optimizer builds its own (the plan
    is only a cache). Owners call ``_new_plan()`` when constructed and in ``__setstate__``:
    torch 2.11's Dynamo cannot create the plan inside a compiled ``step()`` ("setattr on a
    user-defined object")."""

    def _new_plan(self) -> None:
        self.__dict__["_decay_plan"] = DecayPlan()

    @property
    def _plan(self) -> DecayPlan:
        if "_decay_plan" not in self.__dict__:  # a subclass that skipped __init__
            self._new_plan()
        return self.__dict__["_decay_plan"]
