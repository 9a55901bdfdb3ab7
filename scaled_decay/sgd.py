"""sd.SGD: torch.optim.SGD with decoupled, per-tensor scaled weight decay."""
from __future__ import annotations

from typing import List, Optional

import torch

from . import backends as B
from . import compiling as C
from . import distributed as D
from .optimizer import ScaledDecayOptimizer
from .plan import check_non_negative


def sgd_math(params: List[torch.Tensor], grads: List[torch.Tensor],
             bufs: List[Optional[torch.Tensor]], *, l2_lams, decay, lr: float, momentum: float,
             dampening: float, nesterov: bool, maximize: bool) -> None:
    """One SGD step on lists of same-device, same-dtype tensors (SPEC "Update math" 1-3).

    ``bufs`` holds each tensor's momentum buffer (None before its first step); new buffers
    are written into the list. ``l2_lams`` (mode "l2") or ``decay`` (the other modes) hold one
    value per tensor. Written with ``torch._foreach_*`` ops: the "loop" backend calls it one
    tensor at a time, "foreach" once per batch. Operation order follows torch.optim.SGD.
    """
    if maximize:
        grads = torch._foreach_neg(grads)
    if l2_lams is not None:
        grads = B.add_decay_to_grads(grads, params, l2_lams)
    if decay is not None:
        B.apply_decoupled_decay(params, decay)
    if momentum != 0:
        old = [i for i, buf in enumerate(bufs) if buf is not None]
        if old:
            old_bufs = [bufs[i] for i in old]
            torch._foreach_mul_(old_bufs, momentum)
            torch._foreach_add_(old_bufs, [grads[i] for i in old], alpha=1 - dampening)
        for i, buf in enumerate(bufs):
            if buf is None:  # first step: buf = d
                bufs[i] = torch.clone(grads[i]).detach()
        grads = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs
    if isinstance(lr, torch.Tensor):  # only under torch.compile: alpha must be a number
        torch._foreach_add_(params, torch._foreach_mul(grads, -lr))
    else:
        torch._foreach_add_(params, grads, alpha=-lr)


class SGD(ScaledDecayOptimizer):
    """Stochastic gradient descent (optionally with momentum) with scaled weight decay.

    Update (SPEC): ``g = -g`` if maximize; decay by ``decay_mode`` (``"decoupled"`` default:
    ``p *= 1 - lr * lam``, i.e. SGDW of Loshchilov & Hutter 2019; ``"l2"``: ``g += lam * p``,
    which with ``decay_scaling=None`` is ``torch.optim.SGD`` step for step); then momentum
    ``buf = mu * buf + (1 - dampening) * g`` (``buf = g`` at the first step), ``d = g + mu*buf``
    if nesterov else ``buf``, and ``p -= lr * d``. ``lam = weight_decay * s(p)`` with ``s`` the
    product of the ``decay_scaling`` rules.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, decay_mode="decoupled", decay_scaling=None,
                 backend="auto"):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        decay_mode=decay_mode, decay_scaling=decay_scaling, backend=backend)
        super().__init__(params, defaults)

    def _check_hparams(self, group: dict) -> None:
        check_non_negative("momentum", group["momentum"])
        check_non_negative("dampening", group["dampening"])
        if not isinstance(group["nesterov"], bool):
            raise ValueError(f"nesterov must be a bool, got {group['nesterov']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"nesterov=True requires momentum > 0 and dampening = 0, got "
                f"momentum={group['momentum']!r}, dampening={group['dampening']!r}")

    def _l2_decay_factor(self, group: dict, lam: float) -> Optional[float]:
        return 1.0 - float(group["lr"]) * lam

    def _step_group(self, group: dict, l2_lams, decay) -> None:
        idx = self._with_grads(group)
        if not idx:
            return
        params = [group["params"][i] for i in idx]
        grads = [p.grad for p in params]
        use_momentum = group["momentum"] != 0
        bufs = [self.state[p].get("momentum_buffer") for p in params] if use_momentum \
            else [None] * len(params)
        l2_lams, decay = B.take([l2_lams, decay], idx)
        backend = B.resolve_backend(group["backend"], params[0])
        # DTensor (FSDP2): update the local shards in place; ``dparams`` keeps the state keys
        dparams, dbufs = params, bufs
        params, grads, bufs = D.local_lists([params, grads, bufs])
        hp = dict(lr=C.scalar(group["lr"]), momentum=group["momentum"],
                  dampening=group["dampening"], nesterov=group["nesterov"],
                  maximize=group["maximize"])
        grad_scale, found_inf = self._amp_tensors()
        if backend in ("torch_fused", "triton"):  # both skip on found_inf on the device
            if backend == "triton":
                from .kernels import sgd_triton as fused
            else:
                fused = sgd_torch_fused
            fused(params, grads, bufs, l2_lams=l2_lams, decay=decay, grad_scale=grad_scale,
                  found_inf=found_inf, **hp)
        elif not B.found_inf_set(found_inf):  # else GradScaler found inf/NaN: skip the step
            B.unscale_grads_(grads, grad_scale)
            for idx in B.batch_indices(backend, params):
                p, g, b, lams, c = B.take([params, grads, bufs, l2_lams, decay], idx)
                sgd_math(p, g, b, l2_lams=lams, decay=c, **hp)
                for j, buf in zip(idx, b):
                    bufs[j] = buf
        if use_momentum:
            for p, old, buf in zip(dparams, dbufs, bufs):
                if buf is not None:  # None: a first step GradScaler skipped
                    self.state[p]["momentum_buffer"] = D.like_param(buf, p, old)


def sgd_torch_fused(params, grads, bufs, *, l2_lams, decay, lr, momentum, dampening,
                    nesterov, maximize, grad_scale=None, found_inf=None) -> None:
    """The same step through ``torch._fused_sgd_``: one call per (device, dtype, lam, first
    step or not). Its weight decay is coupled, so "l2" passes ``lam`` through and the other
    modes apply ``p *= 1 - c`` first (one extra pass over p) and call it with no decay.
    GradScaler's tensors go to the fused op; the decay outside it multiplies by 1 where
    ``found_inf`` is set. A new momentum buffer must start from a real gradient, so with new
    buffers ``found_inf`` is read on the host (once in a parameter's life)."""
    if found_inf is not None and momentum != 0 and any(b is None for b in bufs):
        if B.found_inf_set(found_inf):
            return
        found_inf = None  # just read: zero
    if decay is not None:
        for idx in B.batch_indices("foreach", params):
            B.apply_decoupled_decay(*B.take([params, decay], idx), found_inf=found_inf)
    lams = l2_lams if l2_lams is not None else [0.0] * len(params)
    first = [b is None for b in bufs]
    if momentum != 0:
        for i, b in enumerate(bufs):
            if b is None:
                bufs[i] = torch.empty_like(grads[i])
    keys = [(p.device, p.dtype, lam, f) for p, lam, f in zip(params, lams, first)]
    for (_, _, lam, is_first), idx in B.indices_by(keys).items():
        p, g, b = B.take([params, grads, bufs], idx)
        device = p[0].device
        amp = {k: t.to(device, non_blocking=True) for k, t in
               (("grad_scale", grad_scale), ("found_inf", found_inf)) if t is not None}
        torch._fused_sgd_(p, g, b if momentum != 0 else [], weight_decay=lam,
                          momentum=momentum, lr=lr, dampening=dampening, nesterov=nesterov,
                          maximize=maximize, is_first_step=is_first and momentum != 0, **amp)
