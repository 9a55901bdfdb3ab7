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
from .elementwise import (f32, grad_and_decayed_param, inv_scale, ld, not_skipped, read_lr,
                          st, tensor_block)
from .launch import decay_kind, elem_code, lr_args, split_flat

# rows of the address table (constexpr: the only globals a Triton kernel may read)
P, G, BUF, NUMEL = (tl.constexpr(i) for i in range(4))


@triton.jit
def _sgd_chunk(table, n_tensors, ti, offs, mask, lam, keep, first, neg_lr, momentum,
               one_minus_dampening, scale, ELEM: tl.constexpr, DECAY_KIND: tl.constexpr,
               MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr,
               HAS_SCALE: tl.constexpr, EVEN: tl.constexpr, ALIGNED: tl.constexpr):
    p_addr = tl.load(table + P * n_tensors + ti)
    g_addr = tl.load(table + G * n_tensors + ti)
    p, g = grad_and_decayed_param(p_addr, g_addr, offs, mask, lam, keep, scale, ELEM,
                                  DECAY_KIND, MAXIMIZE, HAS_SCALE, EVEN, ALIGNED)
    d = g
    if MOMENTUM:
        buf_addr = tl.load(table + BUF * n_tensors + ti)
        if first != 0:  # first step: buf = d (the buffer's memory is not read)
            buf = g
        else:
            buf = ld(buf_addr, offs, mask, ELEM, EVEN, ALIGNED)
            buf = buf * momentum
            buf = tl.fma(one_minus_dampening, g, buf)
        st(buf_addr, offs, buf, mask, ELEM, EVEN, ALIGNED)
        if NESTEROV:
            d = tl.fma(momentum, buf, g)
        else:
            d = buf
    p = tl.fma(neg_lr, d, p)
    st(p_addr, offs, p, mask, ELEM, EVEN, ALIGNED)


@triton.jit
def _sgd_kernel(table, values, work, n_tensors, n_programs, lr, lr_lo, momentum,
                one_minus_dampening, grad_scale_ptr, found_inf_ptr, ELEM: tl.constexpr,
                DECAY_KIND: tl.constexpr, MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
                MAXIMIZE: tl.constexpr, LR_IS_PTR: tl.constexpr, HAS_SCALE: tl.constexpr,
                HAS_INF: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    momentum = f32(momentum)
    one_minus_dampening = f32(one_minus_dampening)
    if not_skipped(found_inf_ptr, HAS_INF) != 0:
        ti, offs, mask, full, lam, keep = tensor_block(table, values, work, n_tensors,
                                                       n_programs, NUMEL, BLOCK)
        first = tl.load(values + n_tensors + ti)
        neg_lr = -(read_lr(lr, lr_lo, LR_IS_PTR).to(tl.float32))
        scale = 1.0
        if HAS_SCALE:
            scale = inv_scale(grad_scale_ptr)
        if full:
            _sgd_chunk(table, n_tensors, ti, offs, mask, lam, keep, first, neg_lr, momentum,
                       one_minus_dampening, scale, ELEM, DECAY_KIND, MOMENTUM, NESTEROV,
                       MAXIMIZE, HAS_SCALE, True, ALIGNED)
        else:
            _sgd_chunk(table, n_tensors, ti, offs, mask, lam, keep, first, neg_lr, momentum,
                       one_minus_dampening, scale, ELEM, DECAY_KIND, MOMENTUM, NESTEROV,
                       MAXIMIZE, HAS_SCALE, False, ALIGNED)


def sgd_triton(params, grads, bufs, *, l2_lams, decay, lr, momentum, dampening, nesterov,
               maximize, grad_scale=None, found_inf=None) -> None:
    """One SGD step, as ``sgd_math``, for same-device, same-dtype lists (see module doc).

    ``bufs`` holds each tensor's momentum buffer, None before its first step; new buffers are
    written into the list. ``lr`` is a float or a 0-d tensor on the parameters' device. A new
    buffer must start from a real gradient, so when some are new and ``found_inf`` is given,
    it is read on the host (once in a parameter's life); otherwise nothing syncs. Tensors the
    kernel cannot address flat go through ``sgd_math``, with the same GradScaler handling.
    """
    if not params:
        return
    from scaled_decay import backends as B
    use_momentum = momentum != 0
    if use_momentum and found_inf is not None and any(b is None for b in bufs):
        if B.found_inf_set(found_inf):
            return
        found_inf = None  # just read: zero
    hp = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
              maximize=maximize)
    fast, slow = split_flat(params, [grads, bufs if use_momentum else []])
    if slow:
        from scaled_decay.sgd import run_on, sgd_reference
        run_on(sgd_reference, slow, params, grads, bufs, l2_lams, decay, grad_scale=grad_scale,
            found_inf=found_inf, **hp)
    if fast:
        first = [0] * len(fast)
        if use_momentum:
            for j, i in enumerate(fast):
                if bufs[i] is None:  # sgd_math would clone d: same layout, filled by the kernel
                    bufs[i] = torch.empty_like(params[i], memory_format=torch.preserve_format)
                    first[j] = 1
        p, g, b, lams, c = B.take([params, grads, bufs if use_momentum else [], l2_lams, decay],
                                  fast)
        _launch(p, g, b, first, per_tensor=lams if lams is not None else c,
                kind=decay_kind(lams, c), grad_scale=grad_scale, found_inf=found_inf, **hp)


def _launch(p, g, b, first, *, per_tensor, kind, lr, momentum, dampening, nesterov, maximize,
            grad_scale, found_inf) -> None:
    device = p[0].device
    rows = [[t.data_ptr() for t in p], [t.data_ptr() for t in g],
            [t.data_ptr() for t in b] if b else [0] * len(p)]
    lay = tables.layout(rows, [t.numel() for t in p], launch.BLOCK, device)
    if lay.n_programs == 0:
        return
    vals = tables.values(per_tensor if per_tensor is not None else [0.0] * len(p), first, device)
    grad_scale = tables.on_device(grad_scale, device)
    found_inf = tables.on_device(found_inf, device)
    lr_is_ptr = isinstance(lr, torch.Tensor)
    lr, lr_lo = lr_args(tables.on_device(lr, device) if lr_is_ptr else lr)
    _sgd_kernel[(lay.n_programs,)](
        lay.table, vals, lay.work, lay.n_tensors, lay.n_programs, lr, lr_lo, momentum,
        1 - dampening,
        grad_scale, found_inf, ELEM=elem_code(p[0].dtype), DECAY_KIND=kind,
        MOMENTUM=momentum != 0, NESTEROV=nesterov, MAXIMIZE=maximize, LR_IS_PTR=lr_is_ptr,
        HAS_SCALE=grad_scale is not None, HAS_INF=found_inf is not None, ALIGNED=lay.aligned,
        BLOCK=launch.BLOCK, num_warps=launch.NUM_WARPS)
