"""Triton helpers shared by the update kernels: typed loads/stores and scalar math.

Values are loaded into fp32 right away and stored with one round-to-nearest-even. bf16 goes
through its bit pattern (int16): the shift up is exact, and the rounding on store is done by
hand, because the Triton interpreter (``TRITON_INTERPRET=1``) has no bf16 arithmetic and its
fp32->bf16 ``.to()`` truncates; done this way the kernels give the same bits compiled or
interpreted. Only Triton builtins are used (no ``tl.math``/standard-library jit functions), so
the interpreted copy of this package never calls into a compiled function.
"""

import triton
import triton.language as tl

# Element codes (constexpr): what a table address points to.
FP32, BF16, FP16 = 0, 1, 2
# Kahan compensations are bf16 for bf16 and fp16 weights alike (fp32's exponent range: an
# fp16 weight's residuals would underflow in fp16); the caller allocates them so
COMP_ELEM: tl.constexpr = tl.constexpr(BF16)


@triton.jit
def _typed(addr, DTYPE: tl.constexpr, ALIGNED: tl.constexpr):
    """A pointer to DTYPE from an integer address; ``ALIGNED`` tells the compiler it is a
    multiple of 16 bytes (the hint must sit on the pointer, not the integer, to give 16-byte
    vector loads: checked in the PTX by tests/kernels/test_triton_compile.py)."""
    ptr = addr.to(tl.pointer_type(DTYPE))
    if ALIGNED:
        ptr = tl.multiple_of(ptr, 16)
    return ptr


@triton.jit
def ld(addr, offs, mask, ELEM: tl.constexpr, EVEN: tl.constexpr, ALIGNED: tl.constexpr):
    """Elements ``offs`` of the tensor at integer address ``addr``, as fp32.

    ``EVEN``: the whole block is in bounds (no mask, so loads can be vectorized);
    ``ALIGNED``: the address is a multiple of 16 bytes (the host checked).
    """
    if ELEM == 1:
        ptr = _typed(addr, tl.int16, ALIGNED) + offs
        if EVEN:
            bits = tl.load(ptr)
        else:
            bits = tl.load(ptr, mask=mask, other=0)
        x = (bits.to(tl.int32) << 16).to(tl.float32, bitcast=True)
    elif ELEM == 2:
        ptr = _typed(addr, tl.float16, ALIGNED) + offs
        if EVEN:
            x = tl.load(ptr).to(tl.float32)
        else:
            x = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    else:
        ptr = _typed(addr, tl.float32, ALIGNED) + offs
        if EVEN:
            x = tl.load(ptr)
        else:
            x = tl.load(ptr, mask=mask, other=0.0)
    return x


@triton.jit
def st(addr, offs, x, mask, ELEM: tl.constexpr, EVEN: tl.constexpr, ALIGNED: tl.constexpr):
    """Store fp32 ``x`` into the tensor at ``addr``, rounded to nearest even."""
    if ELEM == 1:
        bits = x.to(tl.int32, bitcast=True)
        # add 0x7FFF plus the lowest kept bit, then drop 16 bits: round half to even
        # (signed arithmetic is fine: the sign bit just rides along); NaN stays a quiet NaN
        rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        rounded = tl.where(x != x, 0x7FC0, rounded)
        ptr = _typed(addr, tl.int16, ALIGNED) + offs
        if EVEN:
            tl.store(ptr, rounded.to(tl.int16))
        else:
            tl.store(ptr, rounded.to(tl.int16), mask=mask)
    elif ELEM == 2:
        ptr = _typed(addr, tl.float16, ALIGNED) + offs
        if EVEN:
            tl.store(ptr, x.to(tl.float16))
        else:
            tl.store(ptr, x.to(tl.float16), mask=mask)
    else:
        ptr = _typed(addr, tl.float32, ALIGNED) + offs
        if EVEN:
            tl.store(ptr, x)
        else:
            tl.store(ptr, x, mask=mask)


@triton.jit
def powi(base, t):
    """``base ** t`` for a scalar fp64 ``base`` and a whole-number step count ``t``, by
    repeated squaring in fp64: a few fp64 roundings, far below the fp32 it is cast to, and
    no transcendental function (which the interpreter and the compiler would do apart)."""
    e = t.to(tl.int64)
    result = base * 0.0 + 1.0
    while e > 0:
        result = tl.where((e & 1) == 1, result * base, result)
        base = base * base
        e = e >> 1
    return result


@triton.jit
def f32(x):
    """A float kernel argument as an fp32 scalar: compiled kernels receive Python floats as
    fp32; the interpreter passes them through as Python floats, so cast to match."""
    return tl.cast(x, tl.float32)


@triton.jit
def inv_scale(grad_scale_ptr):
    """GradScaler's unscale factor, ``float32(1 / float64(scale))``, as it computes it."""
    return (1.0 / tl.load(grad_scale_ptr).to(tl.float64)).to(tl.float32)


@triton.jit
def read_lr(lr, lr_lo, LR_IS_PTR: tl.constexpr):
    """The learning rate in fp64: from a 0-d device tensor, or from two fp32 runtime scalars
    ``lr + lr_lo`` (a float argument reaches a compiled kernel as fp32; the split carries the
    double the reference computes with, so no recompile and no rounding of lr)."""
    if LR_IS_PTR:
        value = tl.load(lr).to(tl.float64)
    else:
        value = pair64(lr, lr_lo)
    return value


@triton.jit
def not_skipped(found_inf_ptr, HAS_INF: tl.constexpr):
    """1 unless GradScaler's ``found_inf`` is set (then the whole step is skipped)."""
    if HAS_INF:
        ok = (tl.load(found_inf_ptr) == 0).to(tl.int32)
    else:
        ok = tl.full([], 1, tl.int32)
    return ok


@triton.jit
def pair64(hi, lo):
    """A double passed as two fp32 runtime scalars ``hi + lo`` (``launch.split64``)."""
    return f32(hi).to(tl.float64) + f32(lo).to(tl.float64)


@triton.jit
def decay_scale(lr64, wd_hi, wd_lo, eta0_hi, eta0_lo, LR_POW: tl.constexpr, DIV_ETA0: tl.constexpr):
    """What each tensor's table value ``v`` is multiplied by: ``(v * weight_decay) * f`` with
    ``f`` = 1, lr, lr / eta0 or lr * lr / eta0 (the decay modes' lr factor, ``LR_POW`` and
    ``DIV_ETA0``), computed in fp64 in the reference's order. Returned as (weight_decay, f):
    the table holds s(p) and the lr schedule never rebuilds it."""
    wd = pair64(wd_hi, wd_lo)
    f = lr64 * 0.0 + 1.0
    if LR_POW >= 1:
        f = lr64
    if LR_POW == 2:
        f = f * lr64
    if DIV_ETA0:
        f = f / pair64(eta0_hi, eta0_lo)
    return wd, f


@triton.jit
def tensor_block(
    table, values, work, n_tensors, n_programs, wd, f, NUMEL_ROW: tl.constexpr, BLOCK: tl.constexpr
):
    """This program's work item (shared by the Adam and SGD kernels).

    Returns the tensor's index ``ti``; the block's element offsets (int64: tensors over 2**31
    elements) and mask; whether the block is full (no mask needed); and the tensor's decay as
    (lam, keep): ``(v * wd) * f`` in fp64 (torch computes these in Python floats) from its
    table value ``v``, and ``1 - `` that, each rounded once to fp32.
    """
    pid = tl.program_id(0)
    ti = tl.load(work + pid)
    chunk = tl.load(work + n_programs + pid)
    numel = tl.load(table + NUMEL_ROW * n_tensors + ti)
    start = chunk.to(tl.int64) * BLOCK
    offs = start + tl.arange(0, BLOCK)
    mask = offs < numel
    decay = (tl.load(values + ti).to(tl.float64, bitcast=True) * wd) * f
    return (
        ti,
        offs,
        mask,
        start + BLOCK <= numel,
        decay.to(tl.float32),
        (1.0 - decay).to(tl.float32),
    )


@triton.jit
def grad_and_decayed_param(
    p_addr,
    g_addr,
    comp_addr,
    offs,
    mask,
    lam,
    keep,
    scale,
    ELEM: tl.constexpr,
    DECAY_KIND: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    ROUNDING: tl.constexpr,
    EVEN: tl.constexpr,
    ALIGNED: tl.constexpr,
    CAUTIOUS: tl.constexpr = False,
):
    """The first two steps of every update (gradient, then decay), shared by the Adam and SGD
    kernels: load g (unscaled in place, as
    GradScaler.unscale_ would leave it; negated for maximize) and p (plus its Kahan
    compensation with ROUNDING 1: the step works on ``p + comp``), then apply the decay:
    "l2" (DECAY_KIND 1) ``g = g + lam * p`` as one fused multiply-add (torch's add-with-alpha),
    multiplicative modes (2) ``p = p * (1 - c)`` before the update (with CAUTIOUS the caller
    decays later, ``cautious_decay``, once it knows the update's direction). Returns (p, g)
    in fp32."""
    g = ld(g_addr, offs, mask, ELEM, EVEN, ALIGNED)
    if HAS_SCALE:
        g = g * scale
        st(g_addr, offs, g, mask, ELEM, EVEN, ALIGNED)
    if MAXIMIZE:
        g = -g
    p = ld(p_addr, offs, mask, ELEM, EVEN, ALIGNED)
    if ROUNDING == 1:
        p = p + ld(comp_addr, offs, mask, COMP_ELEM, EVEN, ALIGNED)
    if DECAY_KIND == 1:
        g = tl.fma(lam, p, g)
    elif DECAY_KIND == 2:
        if not CAUTIOUS:
            p = p * keep
    return p, g


@triton.jit
def cautious_decay(
    p, u, keep, counts_ptr, ti, mask, DECAY_KIND: tl.constexpr, CAUTIOUS: tl.constexpr
):
    """Cautious weight decay (Chen et al. 2025), the twin of
    ``scaled_decay.updates.decay_ops.apply_cautious_decay``: ``p * (1 - c)`` (the product of
    the plain decay, same rounding) where ``u * p >= 0`` for ``u`` of the update direction's
    sign, else ``p``, compared by sign (no product to underflow). Adds the block's count of
    decayed coordinates (in bounds: ``mask``) to ``counts_ptr[ti]``."""
    if CAUTIOUS:
        if DECAY_KIND == 2:
            disagree = ((u > 0) & (p < 0)) | ((u < 0) & (p > 0))
            p = tl.where(disagree, p, p * keep)
            decayed = tl.where(mask & (disagree == 0), 1, 0)
            # (tl.reduce with this module's combine: tl.sum is a standard-library jit function)
            tl.atomic_add(counts_ptr + ti, tl.reduce(decayed, 0, _add))
    return p


@triton.jit
def _add(a, b):
    return a + b
