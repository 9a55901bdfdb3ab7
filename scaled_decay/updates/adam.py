"""Adam/AdamW's update, once: the foreach math, torch's fused op, and the probe of that op.

The update of torch.optim.Adam/AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019), in
this order: ``g = -g`` if maximize; the decay (``"l2"``: ``g += lam * p``;
else ``p *= 1 - c``); ``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g*g``; with amsgrad
``vmax = max(vmax, v)`` used for v; ``p -= (lr / (1 - b1**t)) * m / (sqrt(v) / sqrt(1 - b2**t)
+ eps)``. With cautious decay (``decay.cautious``) the decay moves after the moments:
``p *= 1 - c * 1[m * p >= 0]`` (the sign of ``m`` is that of the update direction
``m_hat / (sqrt(v_hat) + eps)``; ``decay_ops.apply_cautious_decay``), then the update is
added as above. Kingma & Ba 2015 (Adam), Loshchilov & Hutter 2019 (AdamW), in torch.optim.Adam's
operation order, so "loop" (one tensor a call) and "foreach" (one list) give torch's numbers.
The Triton kernel (``scaled_decay.kernels.adam``) mirrors this order element by element.

Lists, in this order everywhere: params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs (empty
unless amsgrad), steps (0-d float32 tensors).
"""

from __future__ import annotations

import torch

from .. import fused_guard as G
from .decay_ops import (
    add_decay_to_grads,
    apply_cautious_decay,
    apply_decoupled_decay,
    decay_from_lists,
    pick,
)
from .low_precision import moment_dtype

name = "adam"
real_views_always = True  # complex params: real views of param, grad and state (as torch)
STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def state_keys(group: dict) -> tuple:
    """The state tensors one step reads, in list order (the step count last)."""
    return (*STATE_KEYS, "step") if group["amsgrad"] else (*STATE_KEYS[:2], "step")


def init_state(state: dict, p: torch.Tensor, group: dict, steps_on_device: bool) -> None:
    """torch.optim's lazy state, with its keys and dtypes (the moments in the group's
    ``state_dtype`` where set); the step count lives on the parameter's device where a fused
    or capturable step reads it there (as torch keeps it)."""
    dtype = moment_dtype(p, group)
    if "step" not in state:
        state["step"] = torch.zeros(
            (), dtype=torch.float32, device=p.device if steps_on_device else "cpu"
        )
        state["exp_avg"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
    if group["amsgrad"] and "max_exp_avg_sq" not in state:
        state["max_exp_avg_sq"] = torch.zeros_like(
            p, dtype=dtype, memory_format=torch.preserve_format
        )
    if steps_on_device and state["step"].device != p.device:
        state["step"] = state["step"].to(p.device)


def hparams(group: dict, lr) -> dict:
    beta1, beta2 = (float(b) for b in group["betas"])
    return dict(
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=group["eps"],
        amsgrad=group["amsgrad"],
        maximize=group["maximize"],
    )


def structure(group: dict) -> tuple:
    """The group keys that change which lists and kernels a step uses (a step plan's key)."""
    return group["amsgrad"], group["maximize"]


def state_lists(states: list, hp: dict, n: int) -> list:
    """The state lists the update functions take, from the plan's lists (``state_keys``
    order): exp_avgs, exp_avg_sqs, max_exp_avg_sqs (empty without amsgrad), steps."""
    m, v, *rest = states
    vmax, steps = rest if hp["amsgrad"] else ([], rest[0])
    return [m, v, vmax, steps]


def adam_math(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    max_exp_avg_sqs,
    steps,
    *,
    l2_lams,
    decay,
    lr,
    beta1,
    beta2,
    eps,
    amsgrad,
    maximize,
) -> None:
    """The reference, with per-tensor lists: ``l2_lams`` (mode "l2") or ``decay`` (the
    amounts ``c`` of the other modes), one value per tensor."""
    adam_foreach(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        steps,
        decay=decay_from_lists(l2_lams, decay),
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        amsgrad=amsgrad,
        maximize=maximize,
    )


def _host_values(steps: list[torch.Tensor]) -> list:
    """The step counts as floats with one sync for the list (torch reads them one by one)."""
    try:
        return torch.stack(steps).tolist()
    except RuntimeError:  # on different devices
        return [s.item() for s in steps]


def adam_foreach(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    max_exp_avg_sqs,
    steps,
    *,
    decay,
    lr,
    beta1,
    beta2,
    eps,
    amsgrad,
    maximize,
    tensor_math=False,
) -> None:
    """One Adam step on lists of same-device, same-dtype tensors (see module doc).

    ``decay``: a :class:`Decay` or None. ``tensor_math``: the step counts (and a tensor lr)
    stay tensors, no host sync (``capturable=True``, torch.compile): torch's capturable form.
    """
    if maximize:
        grads = torch._foreach_neg(grads)
    torch._foreach_add_(steps, 1.0)
    if decay is not None and decay.l2:
        grads = add_decay_to_grads(grads, params, decay)
    elif decay is not None and not decay.cautious:
        apply_decoupled_decay(params, decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # m = b1*m + (1-b1)*g
    torch._foreach_mul_(exp_avg_sqs, beta2)  # v = b2*v + (1-b2)*g*g
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    if amsgrad:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        denom = torch._foreach_sqrt(max_exp_avg_sqs)
    else:
        denom = torch._foreach_sqrt(exp_avg_sqs)
    if decay is not None and decay.cautious:  # u = m_hat / (sqrt(v_hat) + eps): sign(m)
        apply_cautious_decay(params, exp_avgs, decay)
    if tensor_math:
        bc1 = torch._foreach_pow(beta1, steps)  # b1**t
        bc2 = torch._foreach_pow(beta2, steps)
        torch._foreach_sub_(bc1, 1)  # b1**t - 1 = -bc1
        torch._foreach_sub_(bc2, 1)
        torch._foreach_neg_(bc2)  # bc2
        torch._foreach_div_(bc1, lr)
        torch._foreach_reciprocal_(bc1)  # -lr / bc1
        torch._foreach_sqrt_(bc2)
        torch._foreach_div_(denom, bc2)  # sqrt(v) / sqrt(bc2) + eps
        torch._foreach_add_(denom, eps)
        torch._foreach_div_(denom, bc1)  # step size folded into denom
        torch._foreach_addcdiv_(params, exp_avgs, denom)
        return
    ts = _host_values(steps)
    if len(set(ts)) == 1:  # the usual case: one step size for the list
        t = ts[0]
        torch._foreach_div_(denom, (1 - beta2**t) ** 0.5)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, -lr / (1 - beta1**t))
        return
    torch._foreach_div_(denom, [(1 - beta2**t) ** 0.5 for t in ts])
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, [-lr / (1 - beta1**t) for t in ts])


# ---- torch's fused kernels ---------------------------------------------------------------------
def fused_op_name(decay) -> str:
    return "_fused_adam_" if decay is not None and decay.l2 else "_fused_adamw_"


def fused_flags(decay, weight_decay, hp: dict, grad_scale, found_inf, first=False) -> tuple:
    """The settings that select a code path of torch's fused op (what a probe is run for)."""
    return (
        not (decay is not None and decay.l2),
        hp["amsgrad"],
        hp["maximize"],
        decay is not None and weight_decay != 0,
        grad_scale is not None,
        found_inf is not None,
    )


def adam_torch_fused(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    max_exp_avg_sqs,
    steps,
    *,
    decay,
    lr,
    beta1,
    beta2,
    eps,
    amsgrad,
    maximize,
    grad_scale=None,
    found_inf=None,
    first=False,
) -> None:
    """Torch's fused kernels on lists the step plan has checked (flat layouts, a trusted op),
    one call per decay group. "l2" maps onto ``torch._fused_adam_`` with ``weight_decay=lam``,
    the other modes onto ``torch._fused_adamw_`` (``Decay.fused_weight_decay``). GradScaler's
    tensors go to the op, which unscales and skips on the device; the step counts are then
    taken back where ``found_inf`` is set, as torch's fused Adam does. (``first``: SGD's
    flag, unused here.)"""
    torch._foreach_add_(steps, 1.0)
    fused = getattr(torch, fused_op_name(decay))
    groups = decay.groups if decay is not None else ((0.0, None),)
    for lam, idx in groups:
        wd = 0.0 if decay is None else lam if decay.l2 else decay.fused_weight_decay(lam)
        _fused_adam_call(
            fused,
            *[
                pick(lst, idx) if lst else lst
                for lst in (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps)
            ],
            wd=wd,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            amsgrad=amsgrad,
            maximize=maximize,
            grad_scale=grad_scale,
            found_inf=found_inf,
        )


def _fused_adam_call(
    fused,
    p,
    g,
    m,
    v,
    vmax,
    s,
    *,
    wd,
    lr,
    beta1,
    beta2,
    eps,
    amsgrad,
    maximize,
    grad_scale,
    found_inf,
) -> None:
    """One call of torch's ``fused`` op; steps already counted (taken back on found_inf)."""
    device = p[0].device
    amp = {
        k: t.to(device, non_blocking=True)
        for k, t in (("grad_scale", grad_scale), ("found_inf", found_inf))
        if t is not None
    }
    fused(
        p,
        g,
        m,
        v,
        vmax,
        s,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=wd,
        eps=eps,
        amsgrad=amsgrad,
        maximize=maximize,
        **amp,
    )
    if "found_inf" in amp:
        torch._foreach_sub_(s, [amp["found_inf"]] * len(s))


def probe(device, dtype, flags) -> dict[str, float]:
    """torch's fused Adam/AdamW with ``flags`` on probe tensors, against ``adam_math`` on
    fp32 (fp64 for fp64) copies: the worst error of each output in ulps of ``dtype``."""
    adamw, amsgrad, maximize, has_wd, has_scale, has_inf = flags
    hp = dict(lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8, amsgrad=amsgrad, maximize=maximize)
    wd = 0.05 if has_wd else 0.0
    ins = G.probe_inputs(5, dtype, device, positive=(3, 4))  # p, g, m, v, vmax
    out = [t.clone() for t in ins]
    if has_scale:
        out[1] = out[1] * 4
    _fused_adam_call(
        torch._fused_adamw_ if adamw else torch._fused_adam_,
        [out[0]],
        [out[1]],
        [out[2]],
        [out[3]],
        [out[4]] if amsgrad else [],
        [torch.tensor(3.0, device=device)],
        wd=wd,
        grad_scale=torch.tensor(4.0, device=device) if has_scale else None,
        found_inf=torch.zeros((), device=device) if has_inf else None,
        **hp,
    )
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    ref = [t.to(wide, copy=True) for t in ins]  # a copy: ins must stay the values before
    adam_math(
        [ref[0]],
        [ref[1]],
        [ref[2]],
        [ref[3]],
        [ref[4]] if amsgrad else [],
        [torch.tensor(2.0)],
        l2_lams=None if adamw else [wd],
        decay=[hp["lr"] * wd] if adamw else None,
        **hp,
    )
    names = ["param", None, "exp_avg", "exp_avg_sq", "max_exp_avg_sq"][: 5 if amsgrad else 4]
    return {name: G.ulps_off(out[i], ref[i], ins[i]) for i, name in enumerate(names) if name}


# what the dispatcher calls, by role
foreach = adam_foreach
torch_fused = adam_torch_fused
