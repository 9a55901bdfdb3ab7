"""The shared base of sd.SGD, sd.Adam and sd.AdamW: validation, group keys, decay per tensor.

Subclasses add their own hyperparameter checks (``_check_hparams``), their lazy state and
their update (``_step_group``). Everything about *how much* decay a tensor gets lives here
and in ``rules``/``modes``: ``_group_decay`` returns, per tensor, either the coupled
``lam`` (mode ``"l2"``) or the multiplicative amount ``c`` (other modes).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch.optim import Optimizer

from . import compiling as C
from .backends import backend_for_torch_kwargs, check_backend
from .errors import ArgumentTypeError
from .modes import check_decay_mode, decay_lr_factor
from .report import DecayReport, DecayRow
from .rules import TensorInfo, as_rules, fan_in_from_shape, rules_to_plain, tensor_scale


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


class ScaledDecayOptimizer(Optimizer):
    """Base class: a ``torch.optim.Optimizer`` whose weight decay is scaled per tensor."""

    # Per-tensor metadata keys a group may carry (from sd.param_groups), aligned with params.
    _PER_TENSOR_KEYS = ("param_names", "fan_ins", "fan_in_references")

    def __init__(self, params, defaults: dict, **torch_kwargs):
        """``torch_kwargs``: torch.optim's ``foreach``, ``fused``, ``capturable``,
        ``differentiable``, mapped onto ``defaults["backend"]``
        (``backends.backend_for_torch_kwargs``)."""
        self._scale_cache: Optional[Tuple] = None
        if not isinstance(params, torch.Tensor):  # torch.optim raises TypeError for a tensor
            params = list(params)
            defaults["backend"] = backend_for_torch_kwargs(
                check_backend(defaults["backend"]), _tensors_in(params), **torch_kwargs)
        self._check_group(dict(defaults, initial_lr=defaults["lr"]))
        super().__init__(params, defaults)
        self._register_plain_rules_hook()

    # ---- validation -------------------------------------------------------------------
    def _check_hparams(self, group: dict) -> None:
        """Optimizer-specific checks; raise ValueError naming the argument."""

    def _check_group(self, group: dict) -> None:
        check_non_negative("lr", group["lr"])
        check_non_negative("weight_decay", group["weight_decay"])
        check_decay_mode(group["decay_mode"])
        group["decay_scaling"] = as_rules(group["decay_scaling"])
        check_backend(group["backend"])
        if not isinstance(group["maximize"], bool):
            raise ValueError(f"maximize must be a bool, got {group['maximize']!r}")
        # a tensor lr is changed in place by LR schedulers: initial_lr must not alias it
        lr = group["lr"]
        group.setdefault("initial_lr", lr.clone() if isinstance(lr, torch.Tensor) else lr)
        if group["decay_mode"] in ("independent", "corrected") \
                and not float(group["initial_lr"]) > 0:
            raise ValueError(
                f"decay_mode={group['decay_mode']!r} divides by the initial lr, which must be "
                f"positive: got lr (initial_lr) = {group['initial_lr']!r}")
        for key in self._PER_TENSOR_KEYS[1:]:
            if key in group and len(group[key]) != len(group.get("params", group[key])):
                raise ValueError(f"param group key {key!r} must have one entry per parameter: "
                                 f"{len(group[key])} entries for {len(group['params'])} params")
        for f in group.get("fan_ins", ()):
            if not f > 0:
                raise ValueError(f"fan_ins must be positive, got {f!r}")
        self._check_hparams(group)

    def add_param_group(self, param_group: dict) -> None:
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
        self._scale_cache = None
        super().__setstate__(state)  # (torch adds "differentiable" to self.defaults here)
        if current is None or len(current) != len(self.param_groups):
            current = [self.defaults] * len(self.param_groups)
        for group, source in zip(self.param_groups, current):
            for key in TORCH_EXECUTION_KEYS:
                group.pop(key, None)
            for key, value in {**self.defaults, **source}.items():
                if key != "params" and key not in TORCH_EXECUTION_KEYS:
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
        current values and torch's execution keys are dropped (``__setstate__``); state
        tensors must match their parameters' shapes; on any error nothing changes.
        ``state_dict()`` after a load gives back the loaded dict (same keys and values)."""
        before = (self.state, self.param_groups, self._scale_cache)
        try:
            super().load_state_dict(state_dict)
            self._check_state_shapes()
        except Exception:
            self.state, self.param_groups, self._scale_cache = before
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

    # ---- decay per tensor -----------------------------------------------------------------
    def _total_param_count(self) -> int:
        """N for ParamCount: all elements of all parameters held (global shapes)."""
        return sum(p.numel() for g in self.param_groups for p in g["params"])

    def _tensor_infos(self, group: dict, total: int) -> List[TensorInfo]:
        names = group.get("param_names")
        fan_ins = group.get("fan_ins")
        refs = group.get("fan_in_references")
        return [TensorInfo(shape=tuple(p.shape),
                           fan_in=fan_ins[i] if fan_ins else fan_in_from_shape(p.shape),
                           total_count=total,
                           fan_in_reference=refs[i] if refs else None,
                           name=names[i] if names else None)
                for i, p in enumerate(group["params"])]

    def _scales(self) -> List[List[float]]:
        """s(p) of every tensor, per group; recomputed only when groups or rules change."""
        key = tuple((id(g["params"]), len(g["params"]), g["decay_scaling"],
                     id(g.get("fan_ins")), id(g.get("fan_in_references")))
                    for g in self.param_groups)
        if self._scale_cache is None or self._scale_cache[0] != key:
            total = self._total_param_count()
            scales = [[tensor_scale(g["decay_scaling"], info)
                       for info in self._tensor_infos(g, total)] for g in self.param_groups]
            self._scale_cache = (key, scales)
        return self._scale_cache[1]

    @staticmethod
    def _group_decay(group: dict, scales: List[float]) -> Tuple[Optional[list], Optional[list]]:
        """(l2_lams, decay) for a group: per-tensor ``lam`` for "l2", else per-tensor ``c``."""
        wd = group["weight_decay"]
        lams = [wd * s for s in scales]
        if group["decay_mode"] == "l2":
            return lams, None
        # floats in eager (a tensor lr gives a float lr's numbers); tensors under torch.compile
        f = decay_lr_factor(group["decay_mode"], C.scalar(group["lr"]),
                            C.scalar(group["initial_lr"]))
        return None, [f * lam for lam in lams]

    # ---- the step ---------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, scales in zip(self.param_groups, self._scales()):
            l2_lams, decay = self._group_decay(group, scales)
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

    def decay_report(self) -> DecayReport:
        """One row per parameter: name, shape, fan-in, s(p), effective lam, per-step factor."""
        rows = DecayReport()
        total = self._total_param_count()
        for gi, (group, scales) in enumerate(zip(self.param_groups, self._scales())):
            _, decay = self._group_decay(group, scales)
            for i, (info, s) in enumerate(zip(self._tensor_infos(group, total), scales)):
                lam = group["weight_decay"] * s
                factor = (1.0 - decay[i]) if decay is not None else self._l2_decay_factor(group, lam)
                rows.append(DecayRow(group=gi, index=i, name=info.name, shape=info.shape,
                                     fan_in=info.fan_in, scale=s,
                                     weight_decay=float(group["weight_decay"]), lam=float(lam),
                                     decay_mode=group["decay_mode"], lr=float(group["lr"]),
                                     decay_factor=None if factor is None else float(factor)))
        return rows
