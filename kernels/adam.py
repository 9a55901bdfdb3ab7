"""Fused Adam/AdamW: the whole step for every tensor of a (device, dtype) group in one launch.

``adam_triton`` has the signature of the reference ``scaled_decay.adam.adam_math`` (plus
GradScaler's ``grad_scale``/``found_inf``) and the same operation order; each element's p, g,
m, v (and vmax) are read once and written once, the math in fp32 and one round-to-nearest-even
per store. Two launches per group: ``_adam_steps_kernel`` adds 1 to every tensor's ``step``
(done apart, because the programs of one tensor read it), then ``_adam_kernel``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import launch, tables
from .elementwise import (
    cautious_decay,
    decay_scale,
    f32,
    grad_and_decayed_param,
    inv_scale,
    ld,
    not_skipped,
    powi,
    read_lr,
    st,
    tensor_block,
)
from .launch import L2, MULTIPLY, NO_DECAY, KernelDecay, elem_code, lr_args, split64
from .rounding import store_param

# rows of the address table (constexpr: the only globals a Triton kernel may read)
# (COMP: Kahan compensations, COUNT: stochastic rounding's step counters; zeros when unused)
P, G, M, V, VMAX, STEP, COMP, COUNT, NUMEL = (tl.constexpr(i) for i in range(9))


@triton.jit
def _adam_steps_kernel(
    table, n_tensors, found_inf_ptr, HAS_INF: tl.constexpr, BLOCK_T: tl.constexpr
):
    offs = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    # found_inf set: no tensor is in range, so no step moves
    mask = offs < n_tensors * not_skipped(found_inf_ptr, HAS_INF)
    addrs = tl.load(table + STEP * n_tensors + offs, mask=mask, other=0)
    ptrs = addrs.to(tl.pointer_type(tl.float32))
    steps = tl.load(ptrs, mask=mask, other=0.0)
    tl.store(ptrs, steps + 1.0, mask=mask)


@triton.jit
def _adam_chunk(
    table,
    n_tensors,
    ti,
    offs,
    mask,
    lam,
    keep,
    step_size,
    bc2_sqrt,
    scale,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    eps,
    counts,
    ELEM: tl.constexpr,
    STATE_ELEM: tl.constexpr,
    DECAY_KIND: tl.constexpr,
    AMSGRAD: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    ROUNDING: tl.constexpr,
    EVEN: tl.constexpr,
    ALIGNED: tl.constexpr,
    CAUTIOUS: tl.constexpr,
):
    p_addr = tl.load(table + P * n_tensors + ti)
    g_addr = tl.load(table + G * n_tensors + ti)
    m_addr = tl.load(table + M * n_tensors + ti)
    v_addr = tl.load(table + V * n_tensors + ti)
    comp_addr = tl.load(table + COMP * n_tensors + ti)
    p, g = grad_and_decayed_param(
        p_addr,
        g_addr,
        comp_addr,
        offs,
        mask,
        lam,
        keep,
        scale,
        ELEM,
        DECAY_KIND,
        MAXIMIZE,
        HAS_SCALE,
        ROUNDING,
        EVEN,
        ALIGNED,
        CAUTIOUS,
    )
    m = ld(m_addr, offs, mask, STATE_ELEM, EVEN, ALIGNED)
    # torch.lerp(m, g, w): the form it uses depends on |w| < 0.5, each one fused multiply-add
    # (as torch's CPU and CUDA lerp kernels compute it)
    m = tl.where(
        one_minus_beta1 < 0.5,
        tl.fma(one_minus_beta1, g - m, m),
        tl.fma(m - g, 1.0 - one_minus_beta1, g),
    )
    v = ld(v_addr, offs, mask, STATE_ELEM, EVEN, ALIGNED)
    v = v * beta2
    v = tl.fma(one_minus_beta2 * g, g, v)
    st(m_addr, offs, m, mask, STATE_ELEM, EVEN, ALIGNED)
    st(v_addr, offs, v, mask, STATE_ELEM, EVEN, ALIGNED)
    if AMSGRAD:
        vmax_addr = tl.load(table + VMAX * n_tensors + ti)
        vmax = ld(vmax_addr, offs, mask, STATE_ELEM, EVEN, ALIGNED)
        vmax = tl.maximum(vmax, v, propagate_nan=tl.PropagateNan.ALL)
        st(vmax_addr, offs, vmax, mask, STATE_ELEM, EVEN, ALIGNED)
        v = vmax
    denom = tl.div_rn(tl.sqrt_rn(v), bc2_sqrt) + eps
    p = cautious_decay(p, m, keep, counts, ti, mask, DECAY_KIND, CAUTIOUS)  # sign(u) = sign(m)
    p = p + tl.div_rn(step_size * m, denom)  # addcdiv: p + (value * m) / denom
    count = 0
    if ROUNDING == 2:
        count = tl.load(tl.load(table + COUNT * n_tensors + ti).to(tl.pointer_type(tl.int64)))
    store_param(p_addr, comp_addr, offs, p, mask, count, ti, ELEM, ROUNDING, EVEN, ALIGNED)


@triton.jit
def _adam_kernel(
    table,
    values,
    work,
    n_tensors,
    n_programs,
    lr,
    lr_lo,
    wd_hi,
    wd_lo,
    eta0_hi,
    eta0_lo,
    consts,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    eps,
    grad_scale_ptr,
    found_inf_ptr,
    counts,
    ELEM: tl.constexpr,
    STATE_ELEM: tl.constexpr,
    DECAY_KIND: tl.constexpr,
    LR_POW: tl.constexpr,
    DIV_ETA0: tl.constexpr,
    AMSGRAD: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    LR_IS_PTR: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_INF: tl.constexpr,
    ROUNDING: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
    CAUTIOUS: tl.constexpr,
):
    one_minus_beta1 = f32(one_minus_beta1)
    beta2 = f32(beta2)
    one_minus_beta2 = f32(one_minus_beta2)
    eps = f32(eps)
    if not_skipped(found_inf_ptr, HAS_INF) != 0:
        lr64 = read_lr(lr, lr_lo, LR_IS_PTR)
        wd, f = decay_scale(lr64, wd_hi, wd_lo, eta0_hi, eta0_lo, LR_POW, DIV_ETA0)
        ti, offs, mask, full, lam, keep = tensor_block(
            table, values, work, n_tensors, n_programs, wd, f, NUMEL, BLOCK
        )
        t = tl.load(tl.load(table + STEP * n_tensors + ti).to(tl.pointer_type(tl.float32)))
        beta1_64 = tl.load(consts)
        beta2_64 = tl.load(consts + 1)
        step_size = (-lr64 / (1.0 - powi(beta1_64, t))).to(tl.float32)
        bc2_sqrt = tl.sqrt(1.0 - powi(beta2_64, t)).to(tl.float32)  # fp64 sqrt is exact-rounded
        scale = 1.0
        if HAS_SCALE:
            scale = inv_scale(grad_scale_ptr)
        if full:
            _adam_chunk(
                table,
                n_tensors,
                ti,
                offs,
                mask,
                lam,
                keep,
                step_size,
                bc2_sqrt,
                scale,
                one_minus_beta1,
                beta2,
                one_minus_beta2,
                eps,
                counts,
                ELEM,
                STATE_ELEM,
                DECAY_KIND,
                AMSGRAD,
                MAXIMIZE,
                HAS_SCALE,
                ROUNDING,
                True,
                ALIGNED,
                CAUTIOUS,
            )
        else:
            _adam_chunk(
                table,
                n_tensors,
                ti,
                offs,
                mask,
                lam,
                keep,
                step_size,
                bc2_sqrt,
                scale,
                one_minus_beta1,
                beta2,
                one_minus_beta2,
                eps,
                counts,
                ELEM,
                STATE_ELEM,
                DECAY_KIND,
                AMSGRAD,
                MAXIMIZE,
                HAS_SCALE,
                ROUNDING,
                False,
                ALIGNED,
                CAUTIOUS,
            )


def adam_triton(
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
    grad_scale=None,
    found_inf=None,
) -> None:
    """One Adam step, as ``scaled_decay.updates.adam.adam_math`` (same signature: per-tensor
    ``l2_lams`` or amounts ``decay``), for same-device, same-dtype lists (see module doc).

    The tensors must be fp32/bf16/fp16 and flat: p dense, its grad and state with p's shape
    and strides (``scaled_decay.layouts.flat_layout_ok``; the optimizers route others to the
    foreach math). ``steps``: 0-d float32 tensors on the parameters' device (as torch's fused
    Adam keeps them); ``lr``: a float or a 0-d tensor on that device.
    """
    if not params:
        return
    for t in steps:
        if t.dtype != torch.float32 or t.device != params[0].device or t.dim() != 0:
            raise ValueError(
                f"adam_triton: steps must be 0-d float32 tensors on "
                f"{params[0].device}, got {t.dtype} on {t.device}"
            )
    per_tensor = l2_lams if l2_lams is not None else decay
    kind = L2 if l2_lams is not None else MULTIPLY if decay is not None else NO_DECAY
    device = params[0].device
    vmax = max_exp_avg_sqs if amsgrad else []
    adam_launch(
        tables.shared,
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        vmax,
        steps,
        values=tables.shared.values(
            per_tensor if per_tensor is not None else [0.0] * len(params), [0] * len(params), device
        ),
        kernel_decay=KernelDecay(kind),
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        amsgrad=amsgrad,
        maximize=maximize,
        grad_scale=grad_scale,
        found_inf=found_inf,
    )


def adam_rows(p, g, m, v, vmax, s, comps=(), counts=()) -> list:
    """The address table's rows (P, G, M, V, VMAX, STEP, COMP, COUNT) for these lists
    (``comps``/``counts``: Kahan compensations or rounding counters, where used)."""
    ptr = torch.Tensor.data_ptr
    none = [0] * len(p)
    return [
        list(map(ptr, p)),
        list(map(ptr, g)),
        list(map(ptr, m)),
        list(map(ptr, v)),
        list(map(ptr, vmax)) if vmax else none,
        list(map(ptr, s)),
        list(map(ptr, comps)) if comps else none,
        list(map(ptr, counts)) if counts else none,
    ]


def adam_launch(
    cache: tables.Tables,
    p,
    g,
    m,
    v,
    vmax,
    s,
    *,
    values,
    kernel_decay,
    lr,
    beta1,
    beta2,
    eps,
    amsgrad,
    maximize,
    grad_scale,
    found_inf,
    rows=None,
    layout=None,
    rounding=0,
    decayed=None,
) -> None:
    """Launch the step on flat lists with tables from ``cache`` (``values``: the value
    table). ``rows``/``layout``: the caller's addresses and address table when it has them
    already (a step plan whose tensors did not move). ``rounding``: how p is stored
    (``rounding.NEAREST``/``KAHAN``/``STOCHASTIC``; the last two need the COMP or COUNT
    row); the moments may have another dtype than p. ``decayed``: with a cautious
    ``kernel_decay``, an int32 tensor (one zeroed slot per tensor) that gets each tensor's
    count of decayed coordinates."""
    device = p[0].device
    if layout is None:
        layout = cache.layout(
            rows or adam_rows(p, g, m, v, vmax, s),
            list(map(torch.Tensor.numel, p)),
            launch.BLOCK,
            device,
        )
    consts = cache.scalars((beta1, beta2), device)
    grad_scale = tables.on_device(grad_scale, device)
    found_inf = tables.on_device(found_inf, device)
    lr_is_ptr = isinstance(lr, torch.Tensor)
    lr, lr_lo = lr_args(tables.on_device(lr, device) if lr_is_ptr else lr)
    wd_hi, wd_lo = split64(kernel_decay.weight_decay)
    eta0_hi, eta0_lo = split64(kernel_decay.eta0)
    block_t = 1024
    _adam_steps_kernel[(triton.cdiv(layout.n_tensors, block_t),)](
        layout.table, layout.n_tensors, found_inf, HAS_INF=found_inf is not None, BLOCK_T=block_t
    )
    if layout.n_programs == 0:
        return
    _adam_kernel[(layout.n_programs,)](
        layout.table,
        values,
        layout.work,
        layout.n_tensors,
        layout.n_programs,
        lr,
        lr_lo,
        wd_hi,
        wd_lo,
        eta0_hi,
        eta0_lo,
        consts,
        1 - beta1,
        beta2,
        1 - beta2,
        eps,
        grad_scale,
        found_inf,
        decayed if kernel_decay.cautious else values,
        ELEM=elem_code(p[0].dtype),
        STATE_ELEM=elem_code(m[0].dtype),
        ROUNDING=rounding,
        DECAY_KIND=kernel_decay.kind,
        LR_POW=kernel_decay.lr_pow,
        DIV_ETA0=kernel_decay.div_eta0,
        AMSGRAD=amsgrad,
        MAXIMIZE=maximize,
        LR_IS_PTR=lr_is_ptr,
        HAS_SCALE=grad_scale is not None,
        HAS_INF=found_inf is not None,
        ALIGNED=layout.aligned,
        BLOCK=launch.BLOCK,
        CAUTIOUS=kernel_decay.cautious,
        num_warps=launch.NUM_WARPS,
        enable_fp_fusion=launch.FP_FUSION,
    )
