"""The step plan of a param group: what a step needs that does not change between steps.

Built once per (group, its tensors and their layouts), reused while nothing it depends on
changed: which params have grads, which backend runs each tensor (``backends``), the layout
verdicts (``layouts``) and torch fused-op verdicts (``fused_guard``) behind that choice, the
local and real views of params and state, the tensors grouped by s(p) (so each decay op runs
once per distinct value), and the Triton kernels' tables. Nothing in it depends on the lr or
weight_decay: schedules of either rebuild nothing.

Checking that a plan still holds costs a few C-level passes over the group's lists per step
(``GroupPlan.grads_if_holds``): the params are the same objects at the same addresses and
strides, the grads have their params' strides (where a flat kernel runs), the state tensors
are the same objects. Anything else (``load_state_dict``, ``p.data = ...``, a new grad
layout, a param that gained or lost its grad) builds a new plan.
"""

from __future__ import annotations

import itertools
import operator

import torch

from . import compiling as C
from . import distributed as D
from . import fused_guard as G
from .backends import FUSED_BACKENDS, like_complex, real_view, resolve_backend, triton_package
from .group_keys import peak_lr
from .layouts import flat_layout_ok
from .modes import PEAK_LR_MODES
from .updates import low_precision as LP
from .updates.decay_ops import indices_by

GRAD = operator.attrgetter("grad")
STRIDE = torch.Tensor.stride
PTR = torch.Tensor.data_ptr
_is = operator.is_


class Batch:
    """Tensors one backend call takes each step: positions ``idx`` of the plan's lists (None:
    all of them), their views, and ``scale_groups`` ((s, positions in the batch or None), ...)."""

    def __init__(self, backend, idx, plan, scales, first=False):
        self.backend, self.idx, self.first = backend, idx, first
        take = (lambda lst: lst) if idx is None else (lambda lst: [lst[i] for i in idx])
        self.params = take(plan.param_views[backend in FUSED_BACKENDS])
        self.states = [take(lst) for lst in plan.state_views[backend in FUSED_BACKENDS]]
        # grads need real views where the params are: fused backends, and Adam everywhere
        self.real = plan.grad_views and (backend in FUSED_BACKENDS or plan.real_always)
        self.scales = take(scales)
        self.group_positions = take(plan.positions)  # in the group's params
        groups = indices_by(self.scales)
        self.scale_groups = tuple((s, None if len(groups) == 1 else i) for s, i in groups.items())
        self.n_update_states = plan.n_update_states
        self.new_buffers = any(
            b is None for lst in self.states[: self.n_update_states] for b in lst
        )
        self.device, self.dtype = self.params[0].device, self.params[0].dtype
        # (rounding, state_dtype) where loop/foreach run on upcast copies, else None
        self.wide = None
        if backend not in FUSED_BACKENDS and LP.needs_wide(self.dtype, plan.lp):
            self.wide = (plan.lp["low_precision"], plan.lp["state_dtype"])
        # the Triton kernels' store of p (kernels.rounding.NEAREST/KAHAN/STOCHASTIC)
        self.rounding = LP.kernel_rounding(self.dtype, plan.lp)
        self.state_dtype = plan.lp["state_dtype"]
        self.triton = None  # (package, tables, values table, rows, layout), made on first use
        self.eta0 = (None, None)  # a tensor peak lr and its value, read at the first launch
        self.counts = None  # cautious decay on Triton: the kernel's counts of decayed coords


class GroupPlan:
    """The plan of one group for one combination of the plan key (see ``plan_key``)."""

    def __init__(
        self,
        opt,
        update,
        group: dict,
        scales: list[float],
        grads_all: list,
        capturable: bool,
        amp: tuple,
    ):
        params_all = group["params"]
        self.params_all = list(params_all)
        self.rules = group["decay_scaling"]
        has = [g is not None for g in grads_all]
        self.select = None if all(has) else has
        self.positions = [i for i, h in enumerate(has) if h]
        params = [params_all[i] for i in self.positions]
        grads = [grads_all[i] for i in self.positions]
        opt._check_sparse(group, self.positions, grads)
        self.params = params
        self.lp = {k: group.get(k) for k in ("low_precision", "state_dtype")}
        self.n_update_states = len(update.state_keys(group))
        self.keys = update.state_keys(group) + LP.state_keys(group)
        requested = group["backend"]
        # complex: Adam always takes real views (as torch.optim.Adam); SGD's loop/foreach
        # compute in complex arithmetic (as torch.optim.SGD), its fused backends on real views
        real_always = self.real_always = update.real_views_always
        local = [D.local_view(p) for p in params]
        backends = [resolve_backend(requested, real_view(p), capturable) for p in local]
        for p, be in zip(params, backends):
            update.init_state(opt.state[p], p, group, be in FUSED_BACKENDS or capturable)
            LP.init_state(opt.state[p], p, group)
        # the per-param state dicts, looked up once (a lookup hashes the tensor in Python);
        # load_state_dict drops the plans, other replacements of opt.state show in its size
        self.state_obj, self.state_dicts = opt.state, [opt.state[p] for p in params]
        self.state_len = len(opt.state)
        states = [[d.get(k) for d in self.state_dicts] for k in self.keys]
        self.state_ids = states
        local_states = [[D.local_view(t) for t in lst] for lst in states]
        fused_views = (
            [real_view(p) for p in local],
            [[real_view(t) for t in lst] for lst in local_states],
        )
        plain_views = fused_views if real_always else (local, local_states)
        self.param_views = {False: plain_views[0], True: fused_views[0]}
        self.state_views = {False: plain_views[1], True: fused_views[1]}
        self.grad_views = any(p is not v for p, v in zip(params, fused_views[0]))
        local_grads = [real_view(D.local_view(g)) for g in grads]
        hp = update.hparams(group, group["lr"])
        wd = group["weight_decay"]
        self.scale_list = [scales[i] for i in self.positions]
        if not C.is_compiling():
            eta0 = peak_lr(group) if group["decay_mode"] in PEAK_LR_MODES else 1.0
            LP.warn_if_lost(opt, group, params, self.positions, self.scale_list, eta0)
        keys = []
        for i, be in enumerate(backends):
            pv = fused_views[0][i]
            first = any(lst[i] is None for lst in states[: self.n_update_states])
            if grads[i].is_sparse:
                be = "loop"  # torch's own sparse arithmetic, one tensor at a time
            elif be in FUSED_BACKENDS:
                state = [  # (step counts are 0-d: not walked)
                    lst[i]
                    for k, lst in zip(self.keys, fused_views[1])
                    if lst[i] is not None and k not in ("step", LP.COUNT)
                ]
                if (
                    not flat_layout_ok(pv, [local_grads[i]])
                    or not flat_layout_ok(pv, state, any_dtype=be == "triton")
                    or not self._kernel_takes(update, be, pv, group, wd, hp, amp, first)
                ):
                    be = "foreach"
            keys.append((be, pv.device, pv.dtype, first and be in FUSED_BACKENDS))
        self.batches = [
            Batch(k[0], None if len(idx) == len(keys) else idx, self, self.scale_list, first=k[3])
            for k, idx in indices_by(keys).items()
        ]
        self.check_layout = any(b.backend in FUSED_BACKENDS for b in self.batches)
        self.p_ptrs = list(map(PTR, params))
        self.p_strides = list(map(STRIDE, params))
        self.g_strides = list(map(STRIDE, grads)) if self.check_layout else None
        self.per_tensor = tuple(group.get(k) for k in ("fan_ins", "fan_in_references"))

    @staticmethod
    def _kernel_takes(update, backend, p, group, wd, hp, amp, first) -> bool:
        """Whether the fused backend may take tensor ``p`` (its layout already checked).
        Cautious decay: never torch's fused ops (they cannot mask the decay)."""
        cautious = group.get("cautious_decay", False) and wd != 0
        if cautious and backend == "torch_fused":
            return False
        if backend == "triton":  # (the kernels compute in fp32 and round as they store)
            ok = triton_package(p.device).launch.dtype_ok
            return ok(p.dtype) and ok(LP.moment_dtype(p, group))
        if LP.needs_wide(p.dtype, group):  # torch's fused ops store to nearest, in p's dtype
            return False
        from .updates.decay_ops import Decay

        decay = None if wd == 0 else Decay(group["decay_mode"], ((1.0, None),))
        flags = update.fused_flags(decay, wd, hp, *amp, first)
        op = update.fused_op_name(decay)
        return G.trusted(
            op, p.device, p.dtype, flags, lambda: update.probe(p.device, p.dtype, flags)
        )

    def grads_if_holds(self, group: dict, grads_all: list, opt_state) -> list | None:
        """This step's grads (of the params the plan updates) if the plan still holds, else
        None: C-level passes over the lists, no Python call per tensor. (Which grads are None
        is part of the plan's key, so the selected grads are never None.)"""
        params_all = group["params"]
        if (
            len(params_all) != len(self.params_all)
            or group["decay_scaling"] is not self.rules
            or not all(map(_is, params_all, self.params_all))
            or tuple(group.get(k) for k in ("fan_ins", "fan_in_references")) != self.per_tensor
        ):
            return None
        grads = (
            grads_all if self.select is None else list(itertools.compress(grads_all, self.select))
        )
        params = self.params
        if list(map(PTR, params)) != self.p_ptrs or list(map(STRIDE, params)) != self.p_strides:
            return None
        if self.check_layout:
            try:
                if list(map(STRIDE, grads)) != self.g_strides:
                    return None
            except RuntimeError:  # a sparse grad
                return None
        if not self.keys:
            return grads
        if opt_state is not self.state_obj:
            return None
        if len(opt_state) != self.state_len:
            # State was made or dropped: another group's (its first step), or ours. Look up
            # our params' own state dicts once (a Python hash per tensor) and go on if they
            # are still the plan's, rather than rebuilding every earlier group's plan.
            if not all(map(_is, map(opt_state.get, params), self.state_dicts)):
                return None
            self.state_len = len(opt_state)
        for key, known in zip(self.keys, self.state_ids):  # (fp32 params lack the LP keys)
            if not all(map(_is, map(dict.get, self.state_dicts, itertools.repeat(key)), known)):
                return None
        return grads

    def batch_grads(self, batch: Batch, grads: list) -> list:
        """This step's grads for ``batch``, as the views its backend takes."""
        if batch.idx is not None:
            grads = [grads[i] for i in batch.idx]
        if self.grad_views:
            grads = [D.local_view(g) for g in grads]
            if batch.real:
                grads = [real_view(g) for g in grads]
        return grads

    def store_new_buffers(self, opt, batch: Batch, key: str) -> None:
        """State the math made (SGD's first momentum buffers), as the params keep it."""
        k = self.keys.index(key)
        idx = range(len(self.params)) if batch.idx is None else batch.idx
        for j, i in enumerate(idx):
            buf, p = batch.states[k][j], self.params[i]
            if buf is not None and self.state_ids[k][i] is None:
                opt.state[p][key] = D.like_param(like_complex(buf, p), p, None)
