"""SGD's update, once: the foreach math, torch's fused op, and the probe of that op.

The update of torch.optim.SGD, in this order: ``g = -g`` if maximize; the decay
(``"l2"``: ``g += lam * p``; else ``p *= 1 - c``, SGDW of Loshchilov & Hutter 2019); with
momentum ``mu``: ``buf = g`` at the first step, else ``buf = mu * buf + (1 - dampening) * g``,
then ``d = g + mu * buf`` (nesterov) or ``d = buf``; ``p -= lr * d``. With cautious decay
(``decay.cautious``) the decay moves after ``d``: ``p *= 1 - c * 1[d * p >= 0]``
(``decay_ops.apply_cautious_decay``), then ``p -= lr * d``. Operation order as
torch.optim.SGD: "loop" (one tensor a call) and "foreach" give torch's numbers; the Triton
kernel (``scaled_decay.kernels.sgd``) mirrors it element by element.

Lists: params, grads, bufs (each tensor's momentum buffer, None before its first step; new
buffers are written into the list).
"""

from __future__ import annotations

import torch

from .. import fused_guard as G
from .decay_ops import (
    Decay,
    add_decay_to_grads,
    apply_cautious_decay,
    apply_decoupled_decay,
    decay_from_lists,
    found_inf_set,
    pick,
)

name = "sgd"
# complex params: loop/foreach compute in complex arithmetic (as torch.optim.SGD), the fused
# backends on real views
real_views_always = False


def state_keys(group: dict) -> tuple:
    return ("momentum_buffer",) if group["momentum"] != 0 else ()


def init_state(state: dict, p: torch.Tensor, group: dict, steps_on_device: bool) -> None:
    """Nothing ahead of the step: the first step makes the momentum buffer from ``d``."""


def hparams(group: dict, lr) -> dict:
    return dict(
        lr=lr,
        momentum=group["momentum"],
        dampening=group["dampening"],
        nesterov=group["nesterov"],
        maximize=group["maximize"],
    )


def structure(group: dict) -> tuple:
    return group["momentum"] != 0, group["nesterov"], group["maximize"], group["dampening"] != 0


def state_lists(states: list, hp: dict, n: int) -> list:
    """The state lists the update functions take: the momentum buffers (Nones without
    momentum, which the math then ignores)."""
    return [states[0] if states else [None] * n]


def sgd_math(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    bufs: list[torch.Tensor | None],
    *,
    l2_lams,
    decay,
    lr,
    momentum,
    dampening,
    nesterov,
    maximize,
) -> None:
    """The reference, with per-tensor lists: ``l2_lams`` (mode "l2") or ``decay`` (the
    amounts ``c`` of the other modes), one value per tensor."""
    sgd_foreach(
        params,
        grads,
        bufs,
        decay=decay_from_lists(l2_lams, decay),
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        maximize=maximize,
    )


def sgd_foreach(
    params,
    grads,
    bufs,
    *,
    decay: Decay | None,
    lr,
    momentum,
    dampening,
    nesterov,
    maximize,
    tensor_math=False,
) -> None:
    """One SGD step on lists of same-device, same-dtype tensors (see module doc); new
    momentum buffers are written into ``bufs``. A tensor ``lr`` is used as a tensor (no host
    sync) when ``tensor_math``."""
    if maximize:
        grads = torch._foreach_neg(grads)
    if decay is not None and decay.l2:
        grads = add_decay_to_grads(grads, params, decay)
    elif decay is not None and not decay.cautious:
        apply_decoupled_decay(params, decay)
    if momentum != 0:
        old = [i for i, buf in enumerate(bufs) if buf is not None]
        if len(old) == len(bufs):
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads, alpha=1 - dampening)
        elif old:
            old_bufs = [bufs[i] for i in old]
            torch._foreach_mul_(old_bufs, momentum)
            torch._foreach_add_(old_bufs, [grads[i] for i in old], alpha=1 - dampening)
        if len(old) != len(bufs):
            for i, buf in enumerate(bufs):
                if buf is None:  # first step: buf = d
                    bufs[i] = torch.clone(grads[i]).detach()
        grads = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs
    if decay is not None and decay.cautious:  # the mask needs d, the step's direction
        apply_cautious_decay(params, grads, decay)
    if isinstance(lr, torch.Tensor):  # tensor_math: alpha must be a number
        torch._foreach_add_(params, torch._foreach_mul(grads, -lr))
    else:
        torch._foreach_add_(params, grads, alpha=-lr)


# ---- torch's fused kernel ----------------------------------------------------------------------
def fused_op_name(decay) -> str:
    return "_fused_sgd_"


def fused_flags(decay, weight_decay, hp: dict, grad_scale, found_inf, first: bool) -> tuple:
    momentum = hp["momentum"] != 0
    return (
        momentum,
        first and momentum,
        hp["nesterov"],
        hp["maximize"],
        decay is not None and decay.l2 and weight_decay != 0,
        hp["dampening"] != 0,
        grad_scale is not None,
        found_inf is not None,
    )


def sgd_torch_fused(
    params,
    grads,
    bufs,
    *,
    decay,
    lr,
    momentum,
    dampening,
    nesterov,
    maximize,
    first,
    grad_scale=None,
    found_inf=None,
) -> None:
    """``torch._fused_sgd_`` on lists the step plan has checked (flat layouts, a trusted op)
    whose buffers are all new (``first``) or all there. Its weight decay is coupled, so "l2"
    passes ``lam`` through (one call per decay group) and the other modes apply ``p *= 1 - c``
    first (one extra pass over p) and call it with no decay. GradScaler's tensors go to the
    fused op; the decay outside it multiplies by 1 where ``found_inf`` is set. New buffers
    are made here and written into ``bufs``; they must start from a real gradient, so with
    new buffers ``found_inf`` is read on the host (once in a parameter's life)."""
    use_momentum = momentum != 0
    if use_momentum and first and found_inf is not None:
        if found_inf_set(found_inf):  # no buffer may start from this step's gradients
            return
        found_inf = None  # just read: zero
    if decay is not None and not decay.l2:
        apply_decoupled_decay(params, decay, found_inf=found_inf)
    if use_momentum and first:
        for i in range(len(params)):
            bufs[i] = torch.empty_like(grads[i])
    device = params[0].device
    amp = {
        k: t.to(device, non_blocking=True)
        for k, t in (("grad_scale", grad_scale), ("found_inf", found_inf))
        if t is not None
    }
    groups = decay.groups if decay is not None and decay.l2 else ((0.0, None),)
    for lam, idx in groups:
        torch._fused_sgd_(
            pick(params, idx),
            pick(grads, idx),
            pick(bufs, idx) if use_momentum else [],
            weight_decay=lam,
            momentum=momentum,
            lr=lr,
            dampening=dampening,
            nesterov=nesterov,
            maximize=maximize,
            is_first_step=first and use_momentum,
            **amp,
        )


def probe(device, dtype, flags) -> dict[str, float]:
    """torch's fused SGD with ``flags`` on probe tensors, against ``sgd_math`` on fp32 (fp64
    for fp64) copies: the worst error of each output in ulps of ``dtype``."""
    has_momentum, first, nesterov, maximize, has_lam, damped, has_scale, has_inf = flags
    hp = dict(
        lr=0.05,
        momentum=0.9 if has_momentum else 0.0,
        dampening=0.25 if damped else 0.0,
        nesterov=nesterov,
        maximize=maximize,
    )
    lam = 0.01 if has_lam else 0.0
    p, g, b = G.probe_inputs(3, dtype, device)
    out_p, out_b = p.clone(), [None if first else b.clone()]
    scale = torch.tensor(4.0, device=device) if has_scale else None
    sgd_torch_fused(
        [out_p],
        [g * 4 if has_scale else g.clone()],
        out_b,
        decay=Decay("l2", ((lam, None),)),
        first=first,
        grad_scale=scale,
        found_inf=torch.zeros((), device=device) if has_inf else None,
        **hp,
    )
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    # copies: p and b must stay the values before the step (the error's scale)
    ref_p, ref_g = p.to(wide, copy=True), g.to(wide, copy=True)
    ref_b = [None if first or not has_momentum else b.to(wide, copy=True)]
    sgd_math([ref_p], [ref_g], ref_b, l2_lams=[lam], decay=None, **hp)
    worst = {"param": G.ulps_off(out_p, ref_p, p)}
    if has_momentum:
        # (both buffers exist with momentum: the step made out_b[0], sgd_math ref_b[0])
        worst["momentum_buffer"] = G.ulps_off(out_b[0], ref_b[0], b)  # type: ignore[arg-type]
    return worst


# what the dispatcher calls, by role
foreach = sgd_foreach
torch_fused = sgd_torch_fused
