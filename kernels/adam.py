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
from .elementwise import (f32, grad_and_decayed_param, inv_scale, ld, not_skipped, powi, read_lr,
                          st, tensor_block)
from .launch import decay_kind, elem_code, lr_args, split_flat

# rows of the address table (constexpr: the only globals a Triton kernel may read)
P, G, M, V, VMAX, STEP, NUMEL = (tl.constexpr(i) for i in range(7))


@triton.jit
def _adam_steps_kernel(table, n_tensors, found_inf_ptr, HAS_INF: tl.constexpr,
                       BLOCK_T: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    # found_inf set: no tensor is in range, so no step moves
    mask = offs < n_tensors * not_skipped(found_inf_ptr, HAS_INF)
    addrs = tl.load(table + STEP * n_tensors + offs, mask=mask, other=0)
    ptrs = addrs.to(tl.pointer_type(tl.float32))
    steps = tl.load(ptrs, mask=mask, other=0.0)
    tl.store(ptrs, steps + 1.0, mask=mask)


@triton.jit
def _adam_chunk(table, n_tensors, ti, offs, mask, lam, keep, step_size, bc2_sqrt, scale,
                one_minus_beta1, beta2, one_minus_beta2, eps, ELEM: tl.constexpr,
                DECAY_KIND: tl.constexpr, AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
                HAS_SCALE: tl.constexpr, EVEN: tl.constexpr, ALIGNED: tl.constexpr):
    p_addr = tl.load(table + P * n_tensors + ti)
    g_addr = tl.load(table + G * n_tensors + ti)
    m_addr = tl.load(table + M * n_tensors + ti)
    v_addr = tl.load(table + V * n_tensors + ti)
    p, g = grad_and_decayed_param(p_addr, g_addr, offs, mask, lam, keep, scale, ELEM,
                                  DECAY_KIND, MAXIMIZE, HAS_SCALE, EVEN, ALIGNED)
    m = ld(m_addr, offs, mask, ELEM, EVEN, ALIGNED)
    # torch.lerp(m, g, w): the form it uses depends on |w| < 0.5, each one fused multiply-add
    # (as torch's CPU and CUDA lerp kernels compute it)
    m = tl.where(one_minus_beta1 < 0.5, tl.fma(one_minus_beta1, g - m, m),
                 tl.fma(m - g, 1.0 - one_minus_beta1, g))
    v = ld(v_addr, offs, mask, ELEM, EVEN, ALIGNED)
    v = v * beta2
    v = tl.fma(one_minus_beta2 * g, g, v)
    st(m_addr, offs, m, mask, ELEM, EVEN, ALIGNED)
    st(v_addr, offs, v, mask, ELEM, EVEN, ALIGNED)
    if AMSGRAD:
        vmax_addr = tl.load(table + VMAX * n_tensors + ti)
        vmax = ld(vmax_addr, offs, mask, ELEM, EVEN, ALIGNED)
        vmax = tl.maximum(vmax, v, propagate_nan=tl.PropagateNan.ALL)
        st(vmax_addr, offs, vmax, mask, ELEM, EVEN, ALIGNED)
        v = vmax
    denom = tl.div_rn(tl.sqrt_rn(v), bc2_sqrt) + eps
    p = p + tl.div_rn(step_size * m, denom)  # addcdiv: p + (value * m) / denom
    st(p_addr, offs, p, mask, ELEM, EVEN, ALIGNED)


@triton.jit
def _adam_kernel(table, values, work, n_tensors, n_programs, lr, lr_lo, consts, one_minus_beta1,
                 beta2, one_minus_beta2, eps, grad_scale_ptr, found_inf_ptr, ELEM: tl.constexpr,
                 DECAY_KIND: tl.constexpr, AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
                 LR_IS_PTR: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_INF: tl.constexpr,
                 ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    one_minus_beta1 = f32(one_minus_beta1)
    beta2 = f32(beta2)
    one_minus_beta2 = f32(one_minus_beta2)
    eps = f32(eps)
    if not_skipped(found_inf_ptr, HAS_INF) != 0:
        ti, offs, mask, full, lam, keep = tensor_block(table, values, work, n_tensors,
                                                       n_programs, NUMEL, BLOCK)
        t = tl.load(tl.load(table + STEP * n_tensors + ti).to(tl.pointer_type(tl.float32)))
        beta1_64 = tl.load(consts)
        beta2_64 = tl.load(consts + 1)
        lr64 = read_lr(lr, lr_lo, LR_IS_PTR)
        step_size = (-lr64 / (1.0 - powi(beta1_64, t))).to(tl.float32)
        bc2_sqrt = tl.sqrt(1.0 - powi(beta2_64, t)).to(tl.float32)  # fp64 sqrt is exact-rounded
        scale = 1.0
        if HAS_SCALE:
            scale = inv_scale(grad_scale_ptr)
        if full:
            _adam_chunk(table, n_tensors, ti, offs, mask, lam, keep, step_size, bc2_sqrt, scale,
                        one_minus_beta1, beta2, one_minus_beta2, eps, ELEM, DECAY_KIND, AMSGRAD,
                        MAXIMIZE, HAS_SCALE, True, ALIGNED)
        else:
            _adam_chunk(table, n_tensors, ti, offs, mask, lam, keep, step_size, bc2_sqrt, scale,
                        one_minus_beta1, beta2, one_minus_beta2, eps, ELEM, DECAY_KIND, AMSGRAD,
                        MAXIMIZE, HAS_SCALE, False, ALIGNED)


def adam_triton(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, l2_lams,
                decay, lr, beta1, beta2, eps, amsgrad, maximize, grad_scale=None,
                found_inf=None) -> None:
    """One Adam step, as ``adam_math``, for same-device, same-dtype lists (see module doc).

    ``steps`` must be 0-d float32 tensors on the parameters' device (as torch's fused Adam
    keeps them); ``lr`` a float or a 0-d tensor on that device. Tensors the kernel cannot
    address flat (not dense, strides unlike their parameter's, or a dtype other than
    fp32/bf16/fp16) go through ``adam_math``, with the same GradScaler handling.
    """
    if not params:
        return
    for s in steps:
        if s.dtype != torch.float32 or s.device != params[0].device or s.dim() != 0:
            raise ValueError(f"adam_triton: steps must be 0-d float32 tensors on "
                             f"{params[0].device}, got {s.dtype} on {s.device}")
    from scaled_decay import backends as B
    lists = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else [], steps]
    fast, slow = split_flat(params, lists[1:5])
    hp = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, amsgrad=amsgrad, maximize=maximize)
    if slow:
        lams, c = B.take([l2_lams, decay], slow)
        from scaled_decay.adam import adam_reference
        adam_reference(*B.take(lists, slow), l2_lams=lams, decay=c, grad_scale=grad_scale,
                       found_inf=found_inf, **hp)
    if fast:
        lams, c = B.take([l2_lams, decay], fast)
        _launch(*B.take(lists, fast), per_tensor=lams if lams is not None else c,
                kind=decay_kind(lams, c), grad_scale=grad_scale, found_inf=found_inf, **hp)


def _launch(p, g, m, v, vmax, s, *, per_tensor, kind, lr, beta1, beta2, eps, amsgrad, maximize,
            grad_scale, found_inf) -> None:
    device = p[0].device
    rows = [[t.data_ptr() for t in lst] for lst in (p, g, m, v)]
    rows.append([t.data_ptr() for t in vmax] if amsgrad else [0] * len(p))
    rows.append([t.data_ptr() for t in s])
    lay = tables.layout(rows, [t.numel() for t in p], launch.BLOCK, device)
    vals = tables.values(per_tensor if per_tensor is not None else [0.0] * len(p),
                         [0] * len(p), device)
    consts = tables.scalars((beta1, beta2), device)
    grad_scale = tables.on_device(grad_scale, device)
    found_inf = tables.on_device(found_inf, device)
    lr_is_ptr = isinstance(lr, torch.Tensor)
    lr, lr_lo = lr_args(tables.on_device(lr, device) if lr_is_ptr else lr)
    block_t = 1024
    _adam_steps_kernel[(triton.cdiv(lay.n_tensors, block_t),)](
        lay.table, lay.n_tensors, found_inf, HAS_INF=found_inf is not None, BLOCK_T=block_t)
    if lay.n_programs == 0:
        return
    _adam_kernel[(lay.n_programs,)](
        lay.table, vals, lay.work, lay.n_tensors, lay.n_programs, lr, lr_lo, consts,
        1 - beta1, beta2, 1 - beta2, eps, grad_scale, found_inf,
        ELEM=elem_code(p[0].dtype), DECAY_KIND=kind, AMSGRAD=amsgrad, MAXIMIZE=maximize,
        LR_IS_PTR=lr_is_ptr, HAS_SCALE=grad_scale is not None, HAS_INF=found_inf is not None,
        ALIGNED=lay.aligned, BLOCK=launch.BLOCK, num_warps=launch.NUM_WARPS)
