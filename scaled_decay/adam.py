"""sd.Adam and sd.AdamW: one update, two sets of defaults (torch.optim's Adam and AdamW)."""
from __future__ import annotations

from functools import partial
from typing import Dict, List

import torch

from . import backends as B
from . import compiling as C
from . import distributed as D
from . import fused_guard as G
from .errors import ArgumentIndexError, ArgumentRuntimeError, ArgumentTypeError
from .optimizer import ScaledDecayOptimizer
from .plan import check_non_negative


def adam_math(params: List[torch.Tensor], grads: List[torch.Tensor],
              exp_avgs: List[torch.Tensor], exp_avg_sqs: List[torch.Tensor],
              max_exp_avg_sqs: List[torch.Tensor], steps: List[torch.Tensor], *, l2_lams,
              decay, lr: float, beta1: float, beta2: float, eps: float, amsgrad: bool,
              maximize: bool) -> None:
    """One Adam step on lists of same-device, same-dtype tensors (SPEC "Update math" 1, 2, 4).

    ``l2_lams`` (mode "l2") or ``decay`` (the other modes) hold one value per tensor;
    ``max_exp_avg_sqs`` is empty unless amsgrad. Written with ``torch._foreach_*`` ops in
    torch.optim.Adam's operation order: "loop" calls it one tensor at a time, "foreach" once
    per batch, so both give torch's numbers.
    """
    if maximize:
        grads = torch._foreach_neg(grads)
    torch._foreach_add_(steps, 1.0)
    if l2_lams is not None:
        grads = B.add_decay_to_grads(grads, params, l2_lams)
    if decay is not None:
        B.apply_decoupled_decay(params, decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)           # m = b1*m + (1-b1)*g
    torch._foreach_mul_(exp_avg_sqs, beta2)                    # v = b2*v + (1-b2)*g*g
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    t = [C.scalar(s) for s in steps]  # floats; 0-d tensors under torch.compile
    step_size = [-lr / (1 - beta1 ** ti) for ti in t]          # -eta / bc1
    bc2_sqrt = [(1 - beta2 ** ti) ** 0.5 for ti in t]
    if amsgrad:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        denom = torch._foreach_sqrt(max_exp_avg_sqs)
    else:
        denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bc2_sqrt)                       # sqrt(v) / sqrt(bc2) + eps
    torch._foreach_add_(denom, eps)
    if C.is_compiling():  # tensor step sizes: fold them into denom (torch's capturable form)
        torch._foreach_div_(denom, step_size)
        torch._foreach_addcdiv_(params, exp_avgs, denom)
    else:
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)


def adam_reference(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, l2_lams,
                   decay, backend="foreach", grad_scale=None, found_inf=None, **hp) -> None:
    """``adam_math`` per ``backend`` batch ("loop": one tensor; else one (device, dtype)),
    with GradScaler handled as the unfused backends do: the step is skipped when
    ``found_inf`` is set (read on the host), else the grads are unscaled in place."""
    if B.found_inf_set(found_inf):
        return
    B.unscale_grads_(grads, grad_scale)
    lists = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps]
    for batch in B.batch_indices(backend, params):
        lams, c = B.take([l2_lams, decay], batch)
        adam_math(*B.take(lists, batch), l2_lams=lams, decay=c, **hp)


def adam_torch_fused(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *,
                     l2_lams, decay, lr, beta1, beta2, eps, amsgrad, maximize, grad_scale=None,
                     found_inf=None) -> None:
    """The same step through torch's fused kernels where they are right for the tensors
    (``fused_guard``: flat layouts, a probe per dtype and settings); the others go through
    ``adam_reference`` (foreach) in the same call."""
    lists = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps]
    hp = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, amsgrad=amsgrad, maximize=maximize)
    amp = dict(grad_scale=grad_scale, found_inf=found_inf)
    flat, slow = G.split_layouts(params, lists[1:5])
    wds = l2_lams if l2_lams is not None else decay
    fused = []
    keys = [(params[i].device, params[i].dtype, wds[i] != 0) for i in flat]
    for (device, dtype, has_wd), idx in B.indices_by(keys).items():
        flags = (l2_lams is None, amsgrad, maximize, has_wd, grad_scale is not None,
                 found_inf is not None)
        ok = G.trusted("_fused_adam_" if l2_lams is not None else "_fused_adamw_", device,
                       dtype, flags, partial(_probe, device, dtype, flags))
        (fused if ok else slow).extend(flat[j] for j in idx)
    for run, idx in ((adam_reference, sorted(slow)), (_adam_fused, fused)):
        if idx:
            lams, c = B.take([l2_lams, decay], idx)
            run(*B.take(lists, idx), l2_lams=lams, decay=c, **amp, **hp)


def _adam_fused(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *,
                l2_lams, decay, lr, beta1, beta2, eps, amsgrad, maximize, grad_scale=None,
                found_inf=None) -> None:
    """Torch's fused kernels, one call per (device, dtype, decay).

    "l2" maps onto ``torch._fused_adam_`` with ``weight_decay=lam``; the multiplicative modes
    onto ``torch._fused_adamw_``, which multiplies by ``1 - lr * weight_decay``, with
    ``weight_decay = c / lr`` (c = 0 whenever lr = 0). GradScaler's ``grad_scale`` and
    ``found_inf`` go to the fused op, which unscales and skips on the device; the step counts
    are then taken back where ``found_inf`` is set, as torch's fused Adam does.
    """
    torch._foreach_add_(steps, 1.0)
    if l2_lams is not None:
        fused, wds = torch._fused_adam_, l2_lams
    else:
        fused, wds = torch._fused_adamw_, [c / lr if lr else 0.0 for c in decay]
    keys = [(p.device, p.dtype, wd) for p, wd in zip(params, wds)]
    for (_, _, wd), idx in B.indices_by(keys).items():
        _fused_adam_call(fused, *B.take(
            [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps], idx), wd=wd, lr=lr,
            beta1=beta1, beta2=beta2, eps=eps, amsgrad=amsgrad, maximize=maximize,
            grad_scale=grad_scale, found_inf=found_inf)


def _fused_adam_call(fused, p, g, m, v, vmax, s, *, wd, lr, beta1, beta2, eps, amsgrad,
                     maximize, grad_scale, found_inf) -> None:
    """One call of torch's ``fused`` op; steps already counted (taken back on found_inf)."""
    device = p[0].device
    amp = {k: t.to(device, non_blocking=True) for k, t in
           (("grad_scale", grad_scale), ("found_inf", found_inf)) if t is not None}
    fused(p, g, m, v, vmax, s, lr=lr, beta1=beta1, beta2=beta2, weight_decay=wd,
          eps=eps, amsgrad=amsgrad, maximize=maximize, **amp)
    if "found_inf" in amp:
        torch._foreach_sub_(s, [amp["found_inf"]] * len(s))


def _probe(device, dtype, flags) -> Dict[str, float]:
    """torch's fused Adam/AdamW with ``flags`` on probe tensors, against ``adam_math`` on
    fp32 (fp64 for fp64) copies: the worst error of each output in ulps of ``dtype``."""
    adamw, amsgrad, maximize, has_wd, has_scale, has_inf = flags
    hp = dict(lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8, amsgrad=amsgrad, maximize=maximize)
    wd = 0.05 if has_wd else 0.0
    ins = G.probe_inputs(5, dtype, device, positive=(3, 4))  # p, g, m, v, vmax
    out = [t.clone() for t in ins]
    if has_scale:
        out[1] = out[1] * 4
    _fused_adam_call(torch._fused_adamw_ if adamw else torch._fused_adam_,
                     *[[t] for t in out[:4]], [out[4]] if amsgrad else [],
                     [torch.tensor(3.0, device=device)], wd=wd,
                     grad_scale=torch.tensor(4.0, device=device) if has_scale else None,
                     found_inf=torch.zeros((), device=device) if has_inf else None, **hp)
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    ref = [t.to(wide, copy=True) for t in ins]  # a copy: ins must stay the values before
    adam_math(*[[t] for t in ref[:4]], [ref[4]] if amsgrad else [], [torch.tensor(2.0)],
              l2_lams=None if adamw else [wd], decay=[hp["lr"] * wd] if adamw else None, **hp)
    names = ["param", None, "exp_avg", "exp_avg_sq", "max_exp_avg_sq"][:5 if amsgrad else 4]
    return {name: G.ulps_off(out[i], ref[i], ins[i]) for i, name in enumerate(names) if name}


class _AdamBase(ScaledDecayOptimizer):
    """Adam with scaled weight decay. ``sd.Adam`` and ``sd.AdamW`` differ only in defaults.

    Update (SPEC): ``g = -g`` if maximize; decay by ``decay_mode`` (``"l2"``: ``g += lam*p``,
    Kingma & Ba 2015's Adam as in torch.optim.Adam; ``"decoupled"``: ``p *= 1 - lr*lam``,
    AdamW of Loshchilov & Hutter 2019; ``"independent"``/``"corrected"``: see
    ``scaled_decay.modes``); then ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g*g``
    (``vmax = max(vmax, v)`` used for v with amsgrad), and
    ``p -= (lr / (1 - b1**t)) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)``.
    ``lam = weight_decay * s(p)`` with ``s`` the product of the ``decay_scaling`` rules.

    As torch.optim's Adam/AdamW: complex parameters are updated as their real view
    (``torch.view_as_real`` of param, grad and state: ``v`` holds ``re**2`` and ``im**2``
    apart); sparse gradients raise RuntimeError naming the parameter; ``foreach``,
    ``fused``, ``capturable``, ``differentiable`` choose the backend
    (``backends.backend_for_torch_kwargs``).
    """

    def __init__(self, params, lr, betas, eps, weight_decay, amsgrad, maximize, decay_mode,
                 decay_scaling, backend, **torch_kwargs):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, decay_mode=decay_mode,
                        decay_scaling=decay_scaling, backend=backend)
        super().__init__(params, defaults, **torch_kwargs)

    def _check_hparams(self, group: dict) -> None:
        check_non_negative("eps", group["eps"])
        betas = group["betas"]
        # (the exception types are torch.optim's for the same input, see errors.py)
        if not isinstance(betas, (tuple, list)):
            raise ArgumentTypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        if len(betas) != 2:
            error = ArgumentIndexError if len(betas) < 2 else ValueError
            raise error(f"betas must be a pair (beta1, beta2), got {betas!r}")
        for i, b in enumerate(betas):
            if isinstance(b, bool) or not isinstance(b, (int, float, torch.Tensor)):
                raise ArgumentTypeError(f"betas[{i}] must be a number in [0, 1), got {b!r}")
            if isinstance(b, torch.Tensor) and b.numel() != 1:
                raise ArgumentRuntimeError(f"betas[{i}] must be a number in [0, 1), got {b!r}")
            if not 0.0 <= float(b) < 1.0:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {b!r}")
        if not isinstance(group["amsgrad"], bool):
            raise ValueError(f"amsgrad must be a bool, got {group['amsgrad']!r}")

    def _step_group(self, group: dict, l2_lams, decay) -> None:
        """One step for the group's params with grads; complex ones as their real views."""
        idx = self._with_grads(group)
        if not idx:
            return
        params = [group["params"][i] for i in idx]
        amsgrad = group["amsgrad"]
        for p in params:  # lazy state, with torch.optim's keys and dtypes
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        lists = [params, [p.grad for p in params], [s["exp_avg"] for s in states],
                 [s["exp_avg_sq"] for s in states],
                 [s["max_exp_avg_sq"] for s in states] if amsgrad else [],
                 [s["step"] for s in states]]
        lists = D.local_lists(lists)  # DTensor (FSDP2): update the local shards in place
        lists[:5] = B.real_views(lists[:5])  # complex: the real views (as torch.optim)
        l2_lams, decay = B.take([l2_lams, decay], idx)
        beta1, beta2 = (float(b) for b in group["betas"])
        hp = dict(lr=C.scalar(group["lr"]), beta1=beta1, beta2=beta2, eps=group["eps"],
                  amsgrad=amsgrad, maximize=group["maximize"])
        backend = B.resolve_backend(group["backend"], lists[0][0])
        grad_scale, found_inf = self._amp_tensors()
        if backend in ("torch_fused", "triton"):  # both skip on found_inf on the device
            self._steps_to_param_device(params, states)
            lists[-1] = [s["step"] for s in states]
            if backend == "triton":
                from .kernels import adam_triton as run
            else:
                run = adam_torch_fused
        else:
            run = partial(adam_reference, backend=backend)
        run(*lists, l2_lams=l2_lams, decay=decay, grad_scale=grad_scale, found_inf=found_inf,
            **hp)

    @staticmethod
    def _steps_to_param_device(params, states) -> None:
        """torch's fused kernels read ``step`` on the parameter's device (as torch keeps it)."""
        for p, s in zip(params, states):
            if s["step"].device != p.device:
                s["step"] = s["step"].to(p.device)


class Adam(_AdamBase):
    __doc__ = _AdamBase.__doc__ + """
    Defaults as ``torch.optim.Adam``: ``weight_decay=0``, ``decay_mode="l2"``.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False, decay_mode="l2", decay_scaling=None,
                 backend="auto", foreach=None, capturable=False, differentiable=False,
                 fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize, decay_mode,
                         decay_scaling, backend, foreach=foreach, capturable=capturable,
                         differentiable=differentiable, fused=fused)


class AdamW(_AdamBase):
    __doc__ = _AdamBase.__doc__ + """
    Defaults as ``torch.optim.AdamW``: ``weight_decay=1e-2``, ``decay_mode="decoupled"``.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, decay_mode="decoupled", decay_scaling=None,
                 backend="auto", foreach=None, capturable=False, differentiable=False,
                 fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize, decay_mode,
                         decay_scaling, backend, foreach=foreach, capturable=capturable,
                         differentiable=differentiable, fused=fused)
