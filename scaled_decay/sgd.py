"""sd.SGD: torch.optim.SGD with decoupled, per-tensor scaled weight decay."""
from __future__ import annotations

from functools import partial
from typing import Dict, List, Optional

import torch

from . import backends as B
from . import compiling as C
from . import distributed as D
from . import fused_guard as G
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


def sgd_reference(params, grads, bufs, *, l2_lams, decay, backend="foreach", grad_scale=None,
                  found_inf=None, **hp) -> None:
    """``sgd_math`` per ``backend`` batch ("loop": one tensor; else one (device, dtype)),
    with GradScaler handled as the unfused backends do: the step is skipped when
    ``found_inf`` is set (read on the host), else the grads are unscaled in place. New
    momentum buffers are written into ``bufs``."""
    if B.found_inf_set(found_inf):
        return
    B.unscale_grads_(grads, grad_scale)
    for idx in B.batch_indices(backend, params):
        run_on(sgd_math, idx, params, grads, bufs, l2_lams, decay, **hp)


def run_on(fn, idx, params, grads, bufs, l2_lams, decay, **kw) -> None:
    """``fn`` on the tensors at positions ``idx``; new momentum buffers written back."""
    p, g, b, lams, c = B.take([params, grads, bufs, l2_lams, decay], idx)
    fn(p, g, b, l2_lams=lams, decay=c, **kw)
    for j, buf in zip(idx, b):
        bufs[j] = buf


class SGD(ScaledDecayOptimizer):
    """Stochastic gradient descent (optionally with momentum) with scaled weight decay.

    Update (SPEC): ``g = -g`` if maximize; decay by ``decay_mode`` (``"decoupled"`` default:
    ``p *= 1 - lr * lam``, i.e. SGDW of Loshchilov & Hutter 2019; ``"l2"``: ``g += lam * p``,
    which with ``decay_scaling=None`` is ``torch.optim.SGD`` step for step); then momentum
    ``buf = mu * buf + (1 - dampening) * g`` (``buf = g`` at the first step), ``d = g + mu*buf``
    if nesterov else ``buf``, and ``p -= lr * d``. ``lam = weight_decay * s(p)`` with ``s`` the
    product of the ``decay_scaling`` rules.

    As torch.optim.SGD: ``foreach``/``fused``/``differentiable`` choose the backend
    (``backends.backend_for_torch_kwargs``); sparse gradients (``nn.Embedding(sparse=True)``)
    are taken, one tensor at a time with torch's numerics; coupled decay (``"l2"``) with a
    non-zero ``lam`` refuses them (RuntimeError) as torch does, while the multiplicative modes
    scale the whole parameter (``p *= 1 - c``: a dense pass) before the sparse update.
    Complex parameters are updated in complex arithmetic, as torch.optim.SGD does (it takes
    no real view, unlike Adam), by the ``loop`` and ``foreach`` backends; the fused backends
    update their real views (the same math, rounded differently: within 1 ulp).
    """

    _sparse_grads_ok = True

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, decay_mode="decoupled", decay_scaling=None,
                 backend="auto", foreach=None, differentiable=False, fused=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        decay_mode=decay_mode, decay_scaling=decay_scaling, backend=backend)
        super().__init__(params, defaults, foreach=foreach, fused=fused,
                         differentiable=differentiable)

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
        sparse = [j for j, g in enumerate(grads) if g.is_sparse]
        for j in sparse:  # torch.optim.SGD: grad.add(param) fails for a sparse grad
            if l2_lams is not None and l2_lams[j] != 0:
                raise RuntimeError(
                    f"SGD: decay_mode='l2' with weight decay {l2_lams[j]!r} cannot take the "
                    f"sparse gradient of parameter {self._param_label(group, idx[j])}, as "
                    f"torch.optim.SGD cannot; use a multiplicative decay_mode or put it in "
                    f"a group with weight_decay=0")
        # DTensor (FSDP2): update the local shards in place; ``dparams`` keeps the state keys.
        dparams, dbufs = params, bufs
        params, grads, bufs = D.local_lists([params, grads, bufs])
        hp = dict(lr=C.scalar(group["lr"]), momentum=group["momentum"],
                  dampening=group["dampening"], nesterov=group["nesterov"],
                  maximize=group["maximize"])
        amp = dict(zip(("grad_scale", "found_inf"), self._amp_tensors()))
        if sparse:  # one tensor at a time, torch's own sparse arithmetic
            run_on(sgd_reference, sparse, params, grads, bufs, l2_lams, decay, backend="loop",
                   **amp, **hp)
        dense = [j for j, g in enumerate(grads) if not g.is_sparse] if sparse \
            else list(range(len(params)))
        if dense:
            # Complex tensors: torch.optim.SGD updates them in complex arithmetic, and so do
            # loop and foreach (bit for bit); the fused kernels take their real views.
            backend = B.resolve_backend(group["backend"], B.real_view(params[dense[0]]))
            if backend in B.FUSED_BACKENDS:
                params, grads, bufs = B.real_views([params, grads, bufs])
            if backend == "triton":  # skips on found_inf on the device
                from .kernels import sgd_triton as run
            elif backend == "torch_fused":
                run = sgd_torch_fused
            else:
                run = partial(sgd_reference, backend=backend)
            run_on(run, dense, params, grads, bufs, l2_lams, decay, **amp, **hp)
        if use_momentum:
            for p, old, buf in zip(dparams, dbufs, bufs):
                if buf is not None:  # None: a first step GradScaler skipped
                    self.state[p]["momentum_buffer"] = D.like_param(B.like_complex(buf, p),
                                                                    p, old)


def sgd_torch_fused(params, grads, bufs, *, l2_lams, decay, lr, momentum, dampening,
                    nesterov, maximize, grad_scale=None, found_inf=None) -> None:
    """The same step through ``torch._fused_sgd_`` where torch's kernel is right for the
    tensors (``fused_guard``: flat layouts, a probe per dtype and settings); the others go
    through ``sgd_reference`` (foreach) in the same call."""
    hp = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
              maximize=maximize)
    lams = l2_lams if l2_lams is not None else [0.0] * len(params)
    flat, slow = G.split_layouts(params, [grads, bufs])
    fused = []
    keys = [(params[i].device, params[i].dtype, lams[i] != 0, bufs[i] is None) for i in flat]
    for (device, dtype, has_lam, new), idx in B.indices_by(keys).items():
        flags = (momentum != 0, new and momentum != 0, nesterov, maximize, has_lam,
                 dampening != 0, grad_scale is not None, found_inf is not None)
        ok = G.trusted("_fused_sgd_", device, dtype, flags, partial(_probe, device, dtype, flags))
        (fused if ok else slow).extend(flat[j] for j in idx)
    amp = dict(grad_scale=grad_scale, found_inf=found_inf)
    if slow:
        run_on(sgd_reference, sorted(slow), params, grads, bufs, l2_lams, decay, **amp, **hp)
    if fused:
        run_on(_sgd_fused, fused, params, grads, bufs, l2_lams, decay, **amp, **hp)


def _sgd_fused(params, grads, bufs, *, l2_lams, decay, lr, momentum, dampening, nesterov,
               maximize, grad_scale, found_inf) -> None:
    """One ``torch._fused_sgd_`` call per (device, dtype, lam, first step or not). Its weight
    decay is coupled, so "l2" passes ``lam`` through and the other modes apply ``p *= 1 - c``
    first (one extra pass over p) and call it with no decay. GradScaler's tensors go to the
    fused op; the decay outside it multiplies by 1 where ``found_inf`` is set. A new momentum
    buffer must start from a real gradient, so with new buffers ``found_inf`` is read on the
    host (once in a parameter's life)."""
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
        _fused_sgd_call(p, g, b, lam=lam, first=is_first, lr=lr, momentum=momentum,
                        dampening=dampening, nesterov=nesterov, maximize=maximize,
                        grad_scale=grad_scale, found_inf=found_inf)


def _fused_sgd_call(p, g, b, *, lam, first, lr, momentum, dampening, nesterov, maximize,
                    grad_scale, found_inf) -> None:
    device = p[0].device
    amp = {k: t.to(device, non_blocking=True) for k, t in
           (("grad_scale", grad_scale), ("found_inf", found_inf)) if t is not None}
    torch._fused_sgd_(p, g, b if momentum != 0 else [], weight_decay=lam, momentum=momentum,
                      lr=lr, dampening=dampening, nesterov=nesterov, maximize=maximize,
                      is_first_step=first and momentum != 0, **amp)


def _probe(device, dtype, flags) -> Dict[str, float]:
    """torch's fused SGD with ``flags`` on probe tensors, against ``sgd_math`` on fp32 (fp64
    for fp64) copies: the worst error of each output in ulps of ``dtype``."""
    has_momentum, first, nesterov, maximize, has_lam, damped, has_scale, has_inf = flags
    hp = dict(lr=0.05, momentum=0.9 if has_momentum else 0.0,
              dampening=0.25 if damped else 0.0, nesterov=nesterov, maximize=maximize)
    lam = 0.01 if has_lam else 0.0
    p, g, b = G.probe_inputs(3, dtype, device)
    out_p, out_b = p.clone(), b.clone()
    scale = torch.tensor(4.0, device=device) if has_scale else None
    _fused_sgd_call([out_p], [g * 4 if has_scale else g.clone()], [out_b], lam=lam, first=first,
                    grad_scale=scale, found_inf=torch.zeros((), device=device) if has_inf
                    else None, **hp)
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    # copies: p and b must stay the values before the step (the error's scale)
    ref_p, ref_g = p.to(wide, copy=True), g.to(wide, copy=True)
    ref_b = [None if first or not has_momentum else b.to(wide, copy=True)]
    sgd_math([ref_p], [ref_g], ref_b, l2_lams=[lam], decay=None, **hp)
    worst = {"param": G.ulps_off(out_p, ref_p, p)}
    if has_momentum:
        worst["momentum_buffer"] = G.ulps_off(out_b, ref_b[0], b)
    return worst
