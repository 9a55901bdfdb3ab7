"""How the update kernels store a low-precision parameter: to nearest, with a Kahan
compensation, or stochastically rounded (``scaled_decay.updates.low_precision`` is the torch
twin; the ROUNDING codes are its ``kernel_rounding``). Only Triton builtins, as in
``elementwise``: the interpreted copy of the package must not call compiled functions.
"""

import triton
import triton.language as tl

from .elementwise import COMP_ELEM, st

# ROUNDING of the kernels: how p is stored
NEAREST, KAHAN, STOCHASTIC = 0, 1, 2


@triton.jit
def mix32(h):
    """A 32-bit hash of an int64 holding 32 bits (multipliers below 2**31: no overflow)."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & 0xFFFFFFFF
    h = h ^ (h >> 15)
    h = (h * 0x297A2D39) & 0xFFFFFFFF
    return h ^ (h >> 16)


@triton.jit
def uniform(count, ti, offs):
    """fp32 in [0, 1) (24 bits) from a counter hash of (step counter, tensor, element)."""
    key = mix32((count * 0x3C6EF372 + ti.to(tl.int64) * 0x1B873593 + 1) & 0xFFFFFFFF)
    h = mix32((offs * 0x2C1B3C6D + key) & 0xFFFFFFFF)
    return (h >> 8).to(tl.float32) * 5.9604644775390625e-08  # 2**-24


@triton.jit
def nearest(x, ELEM: tl.constexpr):
    """fp32 ``x`` rounded to nearest even in ELEM's format, as an fp32 value (bf16 by its
    bits, as ``st`` stores it; NaN stays NaN)."""
    if ELEM == 1:
        bits = x.to(tl.int32, bitcast=True)
        r = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16) << 16
        y = tl.where(x != x, x, r.to(tl.float32, bitcast=True))
    elif ELEM == 2:
        y = x.to(tl.float16).to(tl.float32)
    else:
        y = x
    return y


@triton.jit
def stochastic(x, u, ELEM: tl.constexpr):
    """``x`` rounded to ELEM up or down: to the neighbour ``n`` of the nearest value ``r``
    on x's side when ``u < (x - r) / (n - r)`` (unbiased). The neighbour is one step of the
    format's bit pattern away from zero (or toward it), which holds for either sign."""
    r = nearest(x, ELEM)
    d = x - r
    away = (r == 0) | ((d > 0) == (r > 0))
    if ELEM == 1:
        rb = r.to(tl.int32, bitcast=True)
        n = tl.where(away, rb + 65536, rb - 65536).to(tl.float32, bitcast=True)
    else:
        rb = r.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32)
        nb = tl.where(away, rb + 1, rb - 1).to(tl.int16)
        n = nb.to(tl.float16, bitcast=True).to(tl.float32)
    return tl.where(u < d / (n - r), n, r)


@triton.jit
def store_param(
    p_addr,
    comp_addr,
    offs,
    x,
    mask,
    count,
    ti,
    ELEM: tl.constexpr,
    ROUNDING: tl.constexpr,
    EVEN: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    """Store the step's fp32 result ``x`` into p: to nearest; or Kahan (``p = nearest(x)``,
    ``comp = x - p``); or stochastically rounded with counter ``count``."""
    if ROUNDING == 1:
        r = nearest(x, ELEM)
        st(p_addr, offs, r, mask, ELEM, EVEN, ALIGNED)
        st(comp_addr, offs, x - r, mask, COMP_ELEM, EVEN, ALIGNED)
    elif ROUNDING == 2:
        st(p_addr, offs, stochastic(x, uniform(count, ti, offs), ELEM), mask, ELEM, EVEN, ALIGNED)
    else:
        st(p_addr, offs, x, mask, ELEM, EVEN, ALIGNED)
