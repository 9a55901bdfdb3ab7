"""The shared base of sd.SGD, sd.Adam and sd.AdamW: validation, group keys, decay per tensor.

Subclasses add their own hyperparameter checks (``_check_hparams``), their lazy state and
their update (``_step_group``). Everything about *how much* decay a tensor gets lives in
``plan`` (shared with every optimizer the package decays): per tensor, either the coupled
``lam`` (mode ``"l2"``) or the multiplicative amount ``c`` (other modes).
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch.optim import Optimizer

from .backends import check_backend
from .plan import RESET_ON_LOAD, DecayPlan, align_param_names, check_decay_group, optimizer_repr
from .report import DecayReport
from .rules import rules_to_plain


class ScaledDecayOptimizer(Optimizer):
    """Base class: a ``torch.optim.Optimizer`` whose weight decay is scaled per tensor."""

    def __init__(self, params, defaults: dict):
        self._check_group(dict(defaults, initial_lr=defaults["lr"]))
        super().__init__(params, defaults)

    @property
    def _plan(self) -> DecayPlan:
        # created on first use: torch's Optimizer pickles only defaults, state and groups,
        # so a copy or an unpickled optimizer builds its own (the plan is only a cache)
        plan = self.__dict__.get("_decay_plan")
        if plan is None:
            plan = self.__dict__["_decay_plan"] = DecayPlan()
        return plan

    # ---- validation -------------------------------------------------------------------
    def _check_hparams(self, group: dict) -> None:
        """Optimizer-specific checks; raise ValueError naming the argument."""

    def _check_group(self, group: dict) -> None:
        check_decay_group(group)
        check_backend(group["backend"])
        if not isinstance(group["maximize"], bool):
            raise ValueError(f"maximize must be a bool, got {group['maximize']!r}")
        self._check_hparams(group)

    def add_param_group(self, param_group: dict) -> None:
        align_param_names(self.param_groups, param_group)  # named and unnamed groups may mix
        super().add_param_group(param_group)  # fills the defaults (torch's setdefault)
        try:
            self._check_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            self._check_group(group)

    # ---- state dicts: plain data both ways, torch.optim-compatible ----------------------
    def state_dict(self) -> dict:
        sd = super().state_dict()
        for group in sd["param_groups"]:  # fresh dicts, safe to change
            group["decay_scaling"] = rules_to_plain(group["decay_scaling"])
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """As torch.optim's, plus: keys a saved group lacks (a torch.optim state dict has no
        ``decay_mode``, ``decay_scaling`` or ``fan_ins``) keep their current values, except
        ``initial_lr`` and ``peak_lr``, which then follow the saved ``lr``; state
        tensors must match their parameters' shapes; on any error nothing changes."""
        saved = state_dict.get("param_groups", [])
        if len(saved) == len(self.param_groups):
            state_dict = dict(state_dict, param_groups=[
                {**{k: v for k, v in cur.items() if k not in RESET_ON_LOAD}, **old}
                for cur, old in zip(self.param_groups, saved)])
        before = (self.state, self.param_groups)
        try:
            super().load_state_dict(state_dict)
            self._check_state_shapes()
        except Exception:
            self.state, self.param_groups = before
            raise

    def _check_state_shapes(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                for key, value in self.state.get(p, {}).items():
                    if isinstance(value, torch.Tensor) and value.dim() > 0 \
                            and value.shape != p.shape:
                        raise ValueError(
                            f"state_dict: state {key!r} has shape {tuple(value.shape)}, "
                            f"its parameter has shape {tuple(p.shape)}")

    # ---- the step ---------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, l2_lams, decay in self._plan.amounts(self.param_groups):
            self._step_group(group, l2_lams, decay)
        return loss

    def _step_group(self, group: dict, l2_lams, decay) -> None:
        raise NotImplementedError

    # GradScaler.step(opt) sees this, sets ``opt.grad_scale`` and ``opt.found_inf`` (device
    # tensors) and calls step() without unscaling first, as for torch's fused optimizers:
    # every backend then unscales the grads and skips the step when found_inf is set.
    _step_supports_amp_scaling = True

    def _amp_tensors(self):
        """(grad_scale, found_inf) set by GradScaler for this step, else None."""
        return getattr(self, "grad_scale", None), getattr(self, "found_inf", None)

    def _with_grads(self, group: dict) -> List[int]:
        """Positions of the group's params that have a gradient; sparse ones are refused."""
        idx = []
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                names = group.get("param_names")
                name = names[i] if names else f"param_groups[{self.param_groups.index(group)}]" \
                                                f"['params'][{i}]"
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients "
                                   f"(parameter {name})")
            idx.append(i)
        return idx

    def _l2_decay_factor(self, group: dict, lam: float) -> Optional[float]:
        return None

    def __repr__(self) -> str:
        return optimizer_repr(self)

    def decay_report(self) -> DecayReport:
        """One row per parameter: name, shape, fan-in, s(p), effective lam, per-step factor."""
        return self._plan.report(self.param_groups, self._l2_decay_factor)
