"""The shared base of sd.SGD, sd.Adam and sd.AdamW: a thin ``torch.optim.Optimizer``.

A step goes optimizer -> decay plan (``decay_plan``: s(p) of every tensor) -> the one
dispatcher (``dispatch.step_group``) -> the backend its step plan chose. Subclasses add their
hyperparameter checks (``_check_hparams``) and name their update module
(``scaled_decay.updates.adam`` or ``.sgd``); what they share with ``sd.with_scaled_decay``'s
classes (state dicts, loads, group edits, the report) is ``owner.DecayPlanOwner``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from . import dispatch
from .backends import backend_for_torch_kwargs, check_backend
from .group_keys import check_decay_group, check_groups_for_step
from .owner import DecayPlanOwner
from .timescale import check_arguments
from .updates import low_precision as LP

# torch.optim's keyword arguments that choose how a step runs; here they choose ``backend``
# at construction and are not group keys (a torch.optim state dict's copies are dropped).
TORCH_EXECUTION_KEYS = (
    "foreach",
    "fused",
    "capturable",
    "differentiable",
    "decoupled_weight_decay",
)


def _tensors_in(params: list) -> list[torch.Tensor]:
    """The tensors of a materialized ``params`` argument (tensors, (name, tensor) pairs or
    group dicts); one-shot iterables inside group dicts are materialized in place."""
    out: list = []
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


class ScaledDecayOptimizer(DecayPlanOwner, Optimizer):
    """Base class: a ``torch.optim.Optimizer`` whose weight decay is scaled per tensor."""

    _update: Any = None  # the update module (scaled_decay.updates.adam / .sgd)

    def __init__(self, params, defaults: dict, **torch_kwargs):
        """``defaults`` hold ``weight_decay`` and ``timescale`` (at most one given:
        ``scaled_decay.timescale``).
        ``torch_kwargs``: torch.optim's ``foreach``, ``fused``, ``capturable``,
        ``differentiable``, mapped onto ``defaults["backend"]``
        (``backends.backend_for_torch_kwargs``); ``capturable``, where the class takes it
        (Adam/AdamW, as torch's), is also a group key that each step reads."""
        defaults["weight_decay"] = check_arguments(defaults["weight_decay"], defaults["timescale"])
        if not isinstance(params, torch.Tensor):  # torch.optim raises TypeError for a tensor
            params = list(params)
            defaults["backend"] = backend_for_torch_kwargs(
                check_backend(defaults["backend"]), _tensors_in(params), **torch_kwargs
            )
        if "capturable" in torch_kwargs:
            defaults["capturable"] = bool(torch_kwargs["capturable"])
        self._check_group(dict(defaults, initial_lr=defaults["lr"]))
        super().__init__(params, defaults)
        self._new_plan()

    # ---- validation -------------------------------------------------------------------
    def _check_hparams(self, group: dict) -> None:
        """Optimizer-specific checks; raise ValueError naming the argument."""

    def _check_group(self, group: dict) -> None:
        check_decay_group(group)
        check_backend(group["backend"])
        LP.check_keys(group)
        if not isinstance(group["maximize"], bool):
            raise ValueError(f"maximize must be a bool, got {group['maximize']!r}")
        if not isinstance(group.get("capturable", False), bool):
            raise ValueError(f"capturable must be a bool, got {group['capturable']!r}")
        self._check_hparams(group)

    def _merge_loaded_group(self, saved: dict, current: dict) -> dict:
        """torch's execution keys of a loaded group are dropped (``backend`` stays), except
        ``capturable``, which a step reads; other keys as ``DecayPlanOwner``'s."""
        merged = super()._merge_loaded_group(saved, current)
        for key in TORCH_EXECUTION_KEYS:
            if key in current:
                merged[key] = current[key]
            else:
                merged.pop(key, None)
        return merged

    # ---- copies: copy.deepcopy, pickle, torch.save of the whole optimizer -----------------
    def __setstate__(self, state: dict) -> None:
        """Restores a pickled optimizer, and is what ``load_state_dict`` ends with (as in
        torch.optim, after its hooks): keys a group lacks come from the defaults; a
        Python-number ``step`` of an old checkpoint becomes a tensor, as torch converts it."""
        super().__setstate__(state)  # (torch adds "differentiable" to self.defaults here)
        self._new_plan()
        for group in self.param_groups:
            for key in TORCH_EXECUTION_KEYS:
                if key != "capturable":
                    group.pop(key, None)
            for key, value in self.defaults.items():
                if key not in TORCH_EXECUTION_KEYS or key == "capturable":
                    group.setdefault(key, value)
            self._check_group(group)
            for p in group["params"]:
                p_state = self.state.get(p, {})
                if "step" in p_state and not isinstance(p_state["step"], torch.Tensor):
                    p_state["step"] = torch.tensor(float(p_state["step"]), dtype=torch.float32)

    # ---- the step ---------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        capturable = [g.get("capturable", False) for g in groups]
        check_groups_for_step(groups, read_tensors=not any(capturable))
        scales = self._plan.scales(groups)
        grad_scale, found_inf = self._amp_tensors()
        for gi, (group, cap) in enumerate(zip(groups, capturable)):
            dispatch.step_group(
                self,
                self._update,
                gi,
                group,
                scales[gi],
                capturable=cap,
                grad_scale=grad_scale,
                found_inf=found_inf,
            )
        return loss

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

    def _check_sparse(self, group: dict, positions: list[int], grads: list) -> None:
        """Sparse gradients raise RuntimeError (torch.optim's type) naming the parameter
        unless the class takes them (checked when a step plan is built)."""
        for i, g in zip(positions, grads):
            if g.is_sparse and not self._sparse_grads_ok:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients (parameter "
                    f"{self._param_label(group, i)}), as torch.optim.{type(self).__name__}; "
                    f"torch.optim.SparseAdam takes them"
                )
