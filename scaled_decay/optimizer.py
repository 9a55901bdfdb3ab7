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

from .backends import backend_for_torch_kwargs, check_backend
from .plan import (RESET_ON_LOAD, DecayPlanOwner, align_param_names, check_decay_group,
                   optimizer_repr)
from .report import DecayReport
from .rules import rules_to_plain


# torch.optim's keyword arguments that choose how a step runs; here they choose ``backend``
# at construction and are not group keys (a torch.optim state dict's copies are dropped).
TORCH_EXECUTION_KEYS = ("foreach", "fused", "capturable", "differentiable",
                        "decoupled_weight_decay")


def _tensors_in(params: list) -> List[torch.Tensor]:
    """The tensors of a materialized ``params`` argument (tensors, (name, tensor) pairs or
    group dicts); one-shot iterables inside group dicts are materialized in place."""
    out = []
    for k, item in enumerate(params):
        if isinstance(item, dict):
            ps = item.get("params", [])
            if isinstance(ps, torch.Tensor):
                ps = [ps]
            elif not isinstance(ps, (list, tuple, set)):
                ps = list(ps)
                params[k] = dict(item, params=ps)
            out.extend(p[1] if isinstance(p, tuple) else p for p in ps)
        else:
            out.append(item[1] if isinstance(item, tuple) else item)
    return [t for t in out if isinstance(t, torch.Tensor)]


def _plain_rules(optimizer, state_dict: dict) -> None:
    """State-dict post hook: each group's ``decay_scaling`` as plain data."""
    for group in state_dict["param_groups"]:  # fresh dicts, safe to change
        group["decay_scaling"] = rules_to_plain(group["decay_scaling"])


class ScaledDecayOptimizer(DecayPlanOwner, Optimizer):
    """Base class: a ``torch.optim.Optimizer`` whose weight decay is scaled per tensor."""

    def __init__(self, params, defaults: dict, **torch_kwargs):
        """``torch_kwargs``: torch.optim's ``foreach``, ``fused``, ``capturable``,
        ``differentiable``, mapped onto ``defaults["backend"]``
        (``backends.backend_for_torch_kwargs``)."""
        if not isinstance(params, torch.Tensor):  # torch.optim raises TypeError for a tensor
            params = list(params)
            defaults["backend"] = backend_for_torch_kwargs(
                check_backend(defaults["backend"]), _tensors_in(params), **torch_kwargs)
        self._check_group(dict(defaults, initial_lr=defaults["lr"]))
        super().__init__(params, defaults)
        self._new_plan()
        self._register_plain_rules_hook()

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

    # ---- copies: copy.deepcopy, pickle, torch.save of the whole optimizer -----------------
    def __getstate__(self) -> dict:
        """torch.optim's pickled state (defaults, state, param_groups); derived caches such
        as the per-tensor scales are not saved, they are rebuilt on first use."""
        return super().__getstate__()

    def __setstate__(self, state: dict) -> None:
        """Restores a pickled optimizer, and is what ``load_state_dict`` ends with (as in
        torch.optim, after its hooks): group keys a saved group lacks keep the current
        group's values when loading (a torch.optim state dict has no ``decay_mode``,
        ``decay_scaling`` or ``fan_ins``), else come from the defaults; torch's execution
        keys (``TORCH_EXECUTION_KEYS``) are dropped, ``backend``/``decay_mode`` stay; a
        Python-number ``step`` of an old checkpoint becomes a tensor, as torch converts it."""
        current = self.__dict__.get("param_groups")  # None when unpickling
        super().__setstate__(state)  # (torch adds "differentiable" to self.defaults here)
        self._new_plan()  # per-tensor scales are rebuilt on first use
        if current is None or len(current) != len(self.param_groups):
            current = [self.defaults] * len(self.param_groups)
        for group, source in zip(self.param_groups, current):
            for key in TORCH_EXECUTION_KEYS:
                group.pop(key, None)
            for key, value in {**self.defaults, **source}.items():
                if key not in RESET_ON_LOAD and key not in TORCH_EXECUTION_KEYS:
                    group.setdefault(key, value)
            self._check_group(group)
            for p in group["params"]:
                p_state = self.state.get(p, {})
                if "step" in p_state and not isinstance(p_state["step"], torch.Tensor):
                    p_state["step"] = torch.tensor(float(p_state["step"]), dtype=torch.float32)
        self._register_plain_rules_hook()

    # ---- state dicts: plain data both ways, torch.optim-compatible ----------------------
    def _register_plain_rules_hook(self) -> None:
        """Rules go into state dicts as plain data (``torch.load(weights_only=True)`` reads
        them): a state-dict post hook, first in line, so user hooks see the final dict."""
        if _plain_rules not in self._optimizer_state_dict_post_hooks.values():
            self.register_state_dict_post_hook(_plain_rules, prepend=True)

    def load_state_dict(self, state_dict: dict) -> None:
        """As torch.optim's (hooks included), plus: keys a saved group lacks keep their
        current values, except ``initial_lr`` and ``peak_lr``, which then follow the saved
        ``lr``, and torch's execution keys are dropped (``__setstate__``); state tensors must
        match their parameters' shapes; on any error nothing changes. ``state_dict()`` after a
        load gives back the loaded dict (same keys and values)."""
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

    # Whether sparse gradients are taken (torch.optim.SGD: yes; Adam/AdamW: no).
    _sparse_grads_ok = False

    def _param_label(self, group: dict, i: int) -> str:
        """The parameter's name where the group has names, else its position."""
        names = group.get("param_names")
        if names:
            return names[i]
        # (by identity: comparing group dicts with == would compare their tensors)
        g = next(k for k, other in enumerate(self.param_groups) if other is group)
        return f"param_groups[{g}]['params'][{i}]"

    def _with_grads(self, group: dict) -> List[int]:
        """Positions of the group's params that have a gradient; sparse gradients raise
        RuntimeError (torch.optim's type) naming the parameter unless the class takes them."""
        idx = []
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse and not self._sparse_grads_ok:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients (parameter "
                    f"{self._param_label(group, i)}), as torch.optim.{type(self).__name__}; "
                    f"torch.optim.SparseAdam takes them")
            idx.append(i)
        return idx

    def _l2_decay_factor(self, group: dict, lam: float) -> Optional[float]:
        return None

    def __repr__(self) -> str:
        return optimizer_repr(self)

    def decay_report(self) -> DecayReport:
        """One row per parameter: name, shape, fan-in, s(p), effective lam, per-step factor."""
        return self._plan.report(self.param_groups, self._l2_decay_factor)
