"""A param group's decay keys: validation, normalization, and the peak lr eta0.

:func:`check_decay_group` validates and normalizes a param group's decay keys (``lr``,
``weight_decay``, ``decay_mode``, ``decay_scaling``, ``peak_lr``, ``initial_lr`` and the
per-tensor lists written by ``sd.param_groups``), at construction and in
``add_param_group``; :func:`check_decay_keys`, its cheap part, runs again at every step (per
group, never per tensor), so mid-run edits of these keys act at the next step, or raise
there. :func:`align_param_names` keeps ``add_param_group`` working when only some groups
have ``param_names`` (torch refuses the mix).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from . import compiling as C
from .errors import ArgumentTypeError
from .modes import PEAK_LR_MODES, check_decay_mode
from .rules import RULE_TYPES, as_rules

# Per-tensor metadata keys a group may carry (from sd.param_groups), aligned with params.
PER_TENSOR_KEYS = (
    "param_names",
    "fan_ins",
    "fan_in_sources",
    "fan_in_references",
    "no_decay_reasons",
)
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
    if (
        (isinstance(value, torch.Tensor) and value.numel() != 1)
        or not float(value) >= 0
        or math.isinf(float(value))
    ):
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


def check_decay_keys(group: dict, read_tensors: bool = True) -> None:
    """Validate the group keys a user may change mid-run, in place (ValueError naming the
    key and value): ``lr``, ``weight_decay``, ``decay_mode``, ``cautious_decay``,
    ``decay_scaling`` (becomes
    a tuple of rule objects), ``peak_lr`` (set if absent) and, for the modes that divide by
    it, ``eta0 = peak_lr(group)`` (positive, not below lr). Cheap: runs at every step.
    Tensor values are not read while torch.compile traces (a scheduler's in-place change),
    nor with ``read_tensors=False`` (a capturable step: reading one would sync the host)."""
    compiling = C.is_compiling() or not read_tensors
    for key in ("lr", "weight_decay"):
        if not (compiling and isinstance(group[key], torch.Tensor)):
            check_non_negative(key, group[key])
    check_decay_mode(group["decay_mode"])
    check_cautious(group)
    if not _is_rules(group["decay_scaling"]):
        group["decay_scaling"] = as_rules(group["decay_scaling"])
    if "peak_lr" not in group:
        group["peak_lr"] = _copy_lr(group.get("initial_lr", group["lr"]))
    mode, eta0 = group["decay_mode"], peak_lr(group)
    if mode not in PEAK_LR_MODES or (compiling and isinstance(eta0, torch.Tensor)):
        return
    source = "max_lr" if "max_lr" in group else "peak_lr"
    if not _number(eta0) or not math.isfinite(float(eta0)) or not float(eta0) > 0:
        raise ValueError(
            f"decay_mode={mode!r} divides by the peak lr, which must be a positive number: got "
            f"{source} = {eta0!r} (peak_lr is set at construction to initial_lr or lr)"
        )
    lr = group["lr"]
    if not (compiling and isinstance(lr, torch.Tensor)) and float(lr) > float(eta0) * (
        1 + _PEAK_TOLERANCE
    ):
        raise ValueError(
            f"lr = {float(lr)!r} is above the peak lr {source} = {float(eta0)!r} that "
            f"decay_mode={mode!r} measures decay against, so a step would decay more than "
            f"weight_decay * s(p): set group['peak_lr'] to the schedule's highest lr (e.g. "
            f"CyclicLR's max_lr), or build the optimizer with lr at the peak"
        )


def check_cautious(group: dict) -> None:
    """``cautious_decay``: a bool; True needs a multiplicative (decoupled) ``decay_mode``:
    the cautious mask chooses which coordinates of ``p *= 1 - c`` decay, and "l2" has no
    such step (its penalty goes through the gradient and the optimizer's preconditioner)."""
    cautious = group.get("cautious_decay", False)
    if cautious is False:
        return
    if not isinstance(cautious, bool):
        raise ValueError(f"cautious_decay must be a bool, got {cautious!r}")
    if group["decay_mode"] == "l2":
        raise ValueError(
            "cautious_decay=True needs decoupled decay: decay_mode 'decoupled', "
            "'independent' or 'corrected', got decay_mode='l2' (sd.Adam's default: pass "
            "decay_mode='decoupled', or use sd.AdamW)"
        )


def check_per_tensor_keys(group: dict) -> None:
    """The lists written by sd.param_groups must have one entry per parameter."""
    for key in PER_TENSOR_KEYS[1:]:
        if key in group and len(group[key]) != len(group["params"]):
            raise ValueError(
                f"param group key {key!r} must have one entry per parameter: "
                f"{len(group[key])} entries for {len(group['params'])} params"
            )
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


def check_groups_for_step(param_groups: Sequence[dict], read_tensors: bool = True) -> None:
    """:func:`check_decay_keys` on every group, the error naming the group."""
    for gi, group in enumerate(param_groups):
        try:
            check_decay_keys(group, read_tensors)
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
    for gi, group in enumerate([*param_groups, new_group]):
        named = new_named if group is new_group else "param_names" in group
        others_named = (
            any("param_names" in g for g in param_groups) if group is new_group else new_named
        )
        if not named and others_named:
            group["param_names"] = [f"param_groups[{gi}][{i}]" for i in range(len(group["params"]))]
