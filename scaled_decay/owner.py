"""What sd's optimizers and ``sd.with_scaled_decay``'s classes share: the decay plan they own,
group edits, state dicts as plain data, loads that change nothing on error, the report.

The classes differ only in how a group is checked (``_check_group``), which keys a loaded
group keeps from the current one (``_merge_loaded_group``) and what ``decay_report`` says
for mode "l2" (``_l2_decay_factor``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from . import timescale as T
from .decay_plan import DecayPlan
from .group_keys import PER_TENSOR_KEYS, RESET_ON_LOAD, align_param_names
from .report import DecayReport
from .rules import rules_to_plain
from .updates import low_precision as LP


def _plain_rules(optimizer, state_dict: dict) -> None:
    """State-dict post hook: each group's ``decay_scaling`` as plain data, so
    ``torch.load(weights_only=True)`` reads it."""
    for group in state_dict["param_groups"]:  # fresh dicts, safe to change
        if "decay_scaling" in group:
            group["decay_scaling"] = rules_to_plain(group["decay_scaling"])


def optimizer_repr(optimizer) -> str:
    """torch.optim's ``repr`` with the per-tensor lists of ``sd.param_groups`` (names,
    fan-ins, ...) shown by their length: one short line per group key."""
    lines = [type(optimizer).__name__ + " ("]
    for i, group in enumerate(optimizer.param_groups):
        lines += [f"Parameter Group {i}", f"    params: {len(group['params'])} tensors"]
        lines += [
            f"    {key}: "
            + (
                f"<{len(group[key])} per-tensor values>"
                if key in PER_TENSOR_KEYS
                else str(group[key])
            )
            for key in sorted(group)
            if key != "params"
        ]
    return "\n".join([*lines, ")"])


if TYPE_CHECKING:  # the mixin's host class, so the checker knows what it extends
    from torch.optim import Optimizer as _Host
else:
    _Host = object


class DecayPlanOwner(_Host):
    """Mixin, before ``torch.optim.Optimizer`` (or the class it wraps) in the bases.

    ``self._plan`` is a cache (s(p) per tensor, step plans): torch's Optimizer pickles only
    defaults, state and groups, so a copy or an unpickled optimizer builds its own. It is made
    at construction and in ``__setstate__``, not lazily: torch 2.11's Dynamo cannot create it
    inside a compiled ``step()`` ("setattr on a user-defined object"). Adding or loading
    groups drops the cached plans (``DecayPlan.changed``).
    """

    def _new_plan(self) -> None:
        self.__dict__["_decay_plan"] = DecayPlan()
        if _plain_rules not in self._optimizer_state_dict_post_hooks.values():
            self.register_state_dict_post_hook(_plain_rules, prepend=True)  # user hooks last

    @property
    def _plan(self) -> DecayPlan:
        if "_decay_plan" not in self.__dict__:  # a subclass that skipped __init__
            self._new_plan()
        return self.__dict__["_decay_plan"]

    def _check_group(self, group: dict) -> None:
        """Validate (and normalize) one group in place; ValueError naming the key."""
        raise NotImplementedError

    def _merge_loaded_group(self, saved: dict, current: dict) -> dict:
        """A loaded group: keys it lacks keep the current group's values, except
        ``RESET_ON_LOAD`` (``initial_lr``/``peak_lr`` then follow its saved ``lr``)."""
        return {**{k: v for k, v in current.items() if k not in RESET_ON_LOAD}, **saved}

    # ---- group edits ----------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """As torch.optim's, plus: a group with ``timescale`` (its own or the default, where
        it has no ``weight_decay`` of its own) gets its ``weight_decay`` from it, once
        (``scaled_decay.timescale``)."""
        align_param_names(self.param_groups, param_group)  # named and unnamed groups may mix
        T.claim(param_group, self.defaults.get("timescale"))
        super().add_param_group(param_group)  # fills the defaults (torch's setdefault)
        try:
            self._check_group(self.param_groups[-1])
            T.derive_weight_decay(self.param_groups[-1])
            if "_decay_plan" in self.__dict__:  # after construction: rule errors now
                self._plan.changed()
                self._plan.scales(self.param_groups)
        except ValueError:
            self.param_groups.pop()
            self._plan.changed()
            raise

    # ---- state dicts ----------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict) -> None:
        """As torch.optim's (hooks included), plus: keys a saved group lacks keep their
        current values (``_merge_loaded_group``); state tensors must match their parameters'
        shapes; on any error nothing changes."""
        saved = state_dict.get("param_groups", [])
        if len(saved) == len(self.param_groups):
            state_dict = dict(
                state_dict,
                param_groups=[
                    self._merge_loaded_group(old, cur) for cur, old in zip(self.param_groups, saved)
                ],
            )
        before = (self.state, self.param_groups)
        try:
            super().load_state_dict(state_dict)
            for group in self.param_groups:
                self._check_group(group)
            self._check_state_shapes()
            self._restore_state_dtypes(state_dict)
        except Exception:
            self.state, self.param_groups = before
            raise
        finally:
            self._plan.changed()

    def _loaded_state_dtype(self, group: dict, p: torch.Tensor):
        """The dtype a loaded moment of ``p`` keeps (None: torch's cast to p's dtype)."""
        return group.get("state_dtype")

    def _restore_state_dtypes(self, state_dict: dict) -> None:
        """torch's load casts every floating state tensor but ``step`` to its parameter's
        dtype. Undone where that loses what the state holds: the stochastic-rounding counter
        keeps its int64 (a bf16 copy could not count on), a Kahan compensation its bf16 (an
        fp16 copy would underflow), and moments follow the group's
        ``state_dtype``; both are taken from the saved tensors, not from the cast copies."""
        saved = state_dict.get("state", {})
        ids = iter([i for g in state_dict.get("param_groups", []) for i in g["params"]])
        for group in self.param_groups:
            for p, pid in zip(group["params"], ids):
                want = self._loaded_state_dtype(group, p)
                for key, value in saved.get(pid, {}).items():
                    now = self.state[p].get(key)
                    if type(now) is not torch.Tensor or not isinstance(value, torch.Tensor):
                        continue
                    if key in (LP.COUNT, LP.COMP):
                        dtype = value.dtype
                    elif (
                        want is not None
                        and value.is_floating_point()
                        and key not in ("step", LP.COMP)
                    ):
                        dtype = want
                    else:
                        continue
                    if now.dtype != dtype:
                        self.state[p][key] = value.to(device=now.device, dtype=dtype)

    def _check_state_shapes(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                for key, value in self.state.get(p, {}).items():
                    if (
                        isinstance(value, torch.Tensor)
                        and value.dim() > 0
                        and value.shape != p.shape
                    ):
                        raise ValueError(
                            f"state_dict: state {key!r} has shape {tuple(value.shape)}, "
                            f"its parameter has shape {tuple(p.shape)}"
                        )

    # ---- the report -----------------------------------------------------------------------
    def _l2_decay_factor(self, group: dict, lam: float) -> float | None:
        """What one step multiplies the weights by in mode "l2" (None: not a fixed factor)."""
        return None

    def decay_report(self) -> DecayReport:
        """One row per parameter: name, shape, fan-in, s(p), effective lam, per-step factor."""
        return self._plan.report(self.param_groups, self._l2_decay_factor)

    def __repr__(self) -> str:
        return optimizer_repr(self)
