"""Fused SGD (momentum, dampening, nesterov, maximize): one launch per (device, dtype) group.

``sgd_triton`` has the signature of the reference ``scaled_decay.sgd.sgd_math`` (plus
GradScaler's ``grad_scale``/``found_inf``) and its operation order; each element's p, g and
momentum buffer are read once and written once, math in fp32, one rounding per store.
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
    read_lr,
    st,
    tensor_block,
)
from .launch import L2, MULTIPLY, NO_DECAY, KernelDecay, elem_code, lr_args, split64
from .rounding import store_param

# rows of the address table (constexpr: the only globals a Triton kernel may read)
# (COMP: Kahan compensations, COUNT: stochastic rounding's step counters; zeros when unused)
P, G, BUF, COMP, COUNT, NUMEL = (tl.constexpr(i) for i in range(6))


@triton.jit
def _sgd_chunk(
    table,
    n_tensors,
    ti,
    offs,
    mask,
    lam,
    keep,
    first,
    neg_lr,
    momentum,
    one_minus_dampening,
    scale,
    counts,
    ELEM: tl.constexpr,
    STATE_ELEM: tl.constexpr,
    DECAY_KIND: tl.constexpr,
    MOMENTUM: tl.constexpr,
    NESTEROV: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    ROUNDING: tl.constexpr,
    EVEN: tl.constexpr,
    ALIGNED: tl.constexpr,
    CAUTIOUS: tl.constexpr,
):
    p_addr = tl.load(table + P * n_tensors + ti)
    g_addr = tl.load(table + G * n_tensors + ti)
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
    d = g
    if MOMENTUM:
        buf_addr = tl.load(table + BUF * n_tensors + ti)
        if first != 0:  # first step: buf = d (the buffer's memory is not read)
            buf = g
        else:
            buf = ld(buf_addr, offs, mask, STATE_ELEM, EVEN, ALIGNED)
            buf = buf * momentum
            buf = tl.fma(one_minus_dampening, g, buf)
        st(buf_addr, offs, buf, mask, STATE_ELEM, EVEN, ALIGNED)
        if NESTEROV:
            d = tl.fma(momentum, buf, g)
        else:
            d = buf
    p = cautious_decay(p, d, keep, counts, ti, mask, DECAY_KIND, CAUTIOUS)
    p = tl.fma(neg_lr, d, p)
    count = 0
    if ROUNDING == 2:
        count = tl.load(tl.load(table + COUNT * n_tensors + ti).to(tl.pointer_type(tl.int64)))
    store_param(p_addr, comp_addr, offs, p, mask, count, ti, ELEM, ROUNDING, EVEN, ALIGNED)


@triton.jit
def _sgd_kernel(
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
    momentum,
    one_minus_dampening,
    grad_scale_ptr,
    found_inf_ptr,
    counts,
    ELEM: tl.constexpr,
    STATE_ELEM: tl.constexpr,
    DECAY_KIND: tl.constexpr,
    LR_POW: tl.constexpr,
    DIV_ETA0: tl.constexpr,
    MOMENTUM: tl.constexpr,
    NESTEROV: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    LR_IS_PTR: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_INF: tl.constexpr,
    ROUNDING: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
    CAUTIOUS: tl.constexpr,
):
    momentum = f32(momentum)
    one_minus_dampening = f32(one_minus_dampening)
    if not_skipped(found_inf_ptr, HAS_INF) != 0:
        lr64 = read_lr(lr, lr_lo, LR_IS_PTR)
        wd, f = decay_scale(lr64, wd_hi, wd_lo, eta0_hi, eta0_lo, LR_POW, DIV_ETA0)
        ti, offs, mask, full, lam, keep = tensor_block(
            table, values, work, n_tensors, n_programs, wd, f, NUMEL, BLOCK
        )
        first = tl.load(values + n_tensors + ti)
        neg_lr = -(lr64.to(tl.float32))
        scale = 1.0
        if HAS_SCALE:
            scale = inv_scale(grad_scale_ptr)
        if full:
            _sgd_chunk(
                table,
                n_tensors,
                ti,
                offs,
                mask,
                lam,
                keep,
                first,
                neg_lr,
                momentum,
                one_minus_dampening,
                scale,
                counts,
                ELEM,
                STATE_ELEM,
                DECAY_KIND,
                MOMENTUM,
                NESTEROV,
                MAXIMIZE,
                HAS_SCALE,
                ROUNDING,
                True,
                ALIGNED,
                CAUTIOUS,
            )
        else:
            _sgd_chunk(
                table,
                n_tensors,
                ti,
                offs,
                mask,
                lam,
                keep,
                first,
                neg_lr,
                momentum,
                one_minus_dampening,
                scale,
                counts,
                ELEM,
                STATE_ELEM,
                DECAY_KIND,
                MOMENTUM,
                NESTEROV,
                MAXIMIZE,
                HAS_SCALE,
                ROUNDING,
                False,
                ALIGNED,
                CAUTIOUS,
            )


def sgd_triton(
    params,
    grads,
    bufs,
    *,
    l2_lams,
    decay,
    lr,
    momentum,
    dampening,
    nesterov,
    maximize,
    grad_scale=None,
    found_inf=None,
) -> None:
    """One SGD step, as ``scaled_decay.updates.sgd.sgd_math`` (same signature), for
    same-device, same-dtype lists (see module doc). The tensors must be fp32/bf16/fp16 and flat
    (as for ``adam_triton``). ``bufs`` holds each tensor's momentum buffer, None before its
    first step; new buffers are written into the list. ``lr`` is a float or a 0-d tensor on
    the parameters' device. A new buffer must start from a real gradient, so when some are
    new and ``found_inf`` is given, it is read on the host (once in a parameter's life);
    otherwise nothing syncs."""
    if not params:
        return
    per_tensor = l2_lams if l2_lams is not None else decay
    kind = L2 if l2_lams is not None else MULTIPLY if decay is not None else NO_DECAY
    if momentum != 0 and found_inf is not None and any(b is None for b in bufs):
        if found_inf.item() != 0:  # skipped: no buffer may start from this gradient
            return
        found_inf = None  # just read: zero
    first = new_buffers(params, bufs, momentum)
    device = params[0].device
    sgd_launch(
        tables.shared,
        params,
        grads,
        bufs if momentum != 0 else [],
        values=tables.shared.values(
            per_tensor if per_tensor is not None else [0.0] * len(params), first, device
        ),
        kernel_decay=KernelDecay(kind),
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        maximize=maximize,
        grad_scale=grad_scale,
        found_inf=found_inf,
    )


def new_buffers(params, bufs, momentum, dtype=None) -> list:
    """Makes the missing momentum buffers (filled by the kernel: ``buf = d``; ``dtype``: the
    params' when None), written into ``bufs``; returns each tensor's first-step flag."""
    first = [0] * len(params)
    if momentum != 0:
        for i, p in enumerate(params):
            if bufs[i] is None:  # sgd_math would clone d: same layout, filled by the kernel
                bufs[i] = torch.empty_like(p, dtype=dtype, memory_format=torch.preserve_format)
                first[i] = 1
    return first


def sgd_rows(p, g, b, comps=(), counts=()) -> list:
    """The address table's rows (P, G, BUF, COMP, COUNT) for these lists."""
    ptr = torch.Tensor.data_ptr
    none = [0] * len(p)
    return [
        list(map(ptr, p)),
        list(map(ptr, g)),
        list(map(ptr, b)) if b else none,
        list(map(ptr, comps)) if comps else none,
        list(map(ptr, counts)) if counts else none,
    ]


def sgd_launch(
    cache: tables.Tables,
    p,
    g,
    b,
    *,
    values,
    kernel_decay,
    lr,
    momentum,
    dampening,
    nesterov,
    maximize,
    grad_scale,
    found_inf,
    rows=None,
    layout=None,
    rounding=0,
    decayed=None,
) -> None:
    """Launch the step on flat lists (``b`` empty without momentum) with tables from
    ``cache``; ``values`` holds each tensor's decay value and first-step flag; ``rounding``
    and ``decayed`` (cautious decay's counts) as for ``adam_launch``."""
    device = p[0].device
    if layout is None:
        layout = cache.layout(
            rows or sgd_rows(p, g, b), list(map(torch.Tensor.numel, p)), launch.BLOCK, device
        )
    if layout.n_programs == 0:
        return
    grad_scale = tables.on_device(grad_scale, device)
    found_inf = tables.on_device(found_inf, device)
    lr_is_ptr = isinstance(lr, torch.Tensor)
    lr, lr_lo = lr_args(tables.on_device(lr, device) if lr_is_ptr else lr)
    wd_hi, wd_lo = split64(kernel_decay.weight_decay)
    eta0_hi, eta0_lo = split64(kernel_decay.eta0)
    _sgd_kernel[(layout.n_programs,)](
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
        momentum,
        1 - dampening,
        grad_scale,
        found_inf,
        decayed if kernel_decay.cautious else values,
        ELEM=elem_code(p[0].dtype),
        STATE_ELEM=elem_code(b[0].dtype if b else p[0].dtype),
        ROUNDING=rounding,
        DECAY_KIND=kernel_decay.kind,
        LR_POW=kernel_decay.lr_pow,
        DIV_ETA0=kernel_decay.div_eta0,
        MOMENTUM=momentum != 0,
        NESTEROV=nesterov,
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
