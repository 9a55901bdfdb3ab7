"""Weights stored narrower than the math: compensated (Kahan) and stochastic rounding.

A bf16 weight keeps 8 significant bits. A step that changes it by less than half an ulp
(2**-9 of it, 2**-12 for fp16) is rounded away: AdamW's shrink ``lr * lam * s(p)`` (1e-4 at
lr 1e-3 and weight decay 0.1) is lost at every step, in torch.optim as in any optimizer that
rounds to nearest (``survives``). Two ways keep it (group key ``low_precision``):

- ``"kahan"``: a compensation buffer ``kahan_comp`` per bf16/fp16 parameter, in bf16
  (``COMP_DTYPE``), holds what rounding took away. The step's working value is
  ``x = p + comp`` in fp32; the
  whole step (decay and update) runs on ``x``; then ``p = round(x)`` and
  ``comp = round(x - p)``. The pair carries ~16 significant bits, so a shrink of 1e-4 per step
  accumulates (compensated summation: Kahan 1965; the error of each store is carried to the
  next step instead of dropped).
- ``"stochastic"``: the fp32 result rounds up or down with probability proportional to its
  distance to either neighbour (unbiased: E[round(x)] = x; Gupta et al. 2015, Zamirai et al.
  2020), from a counter hash of (``rounding_step``, position), so a run restarted from a
  checkpoint draws the same bits. One 0-d int64 counter per parameter, advanced each step.

``state_dtype`` stores the moments in another dtype than the parameter (fp32 moments for
bf16 weights, or bf16 moments to halve their memory). Whenever a step's storage differs from
its math (``needs_wide``), the "loop" and "foreach" backends upcast params, grads and state,
run the optimizer's one foreach math in fp32, and store back once (``wide_step``): the order
the Triton kernel computes in. fp32/fp64 parameters are never rounded here.
"""

from __future__ import annotations

from itertools import repeat

import torch

LOW_DTYPES = (torch.bfloat16, torch.float16)
ROUNDINGS = (None, "kahan", "stochastic")
COMP, COUNT = "kahan_comp", "rounding_step"
# The compensation's dtype: 2 bytes, and fp32's exponent range, so that the residuals of an
# fp16 weight (below 2**-11 of it) do not underflow into fp16's subnormals; 8 bits of them
# are kept, which keeps p + comp within an ulp of the exact sum
# (tests/optimizers/test_low_precision.py)
COMP_DTYPE = torch.bfloat16
_M32 = 0xFFFFFFFF


def check_keys(group: dict) -> None:
    """``low_precision`` and ``state_dtype`` of a group (ValueError naming the key)."""
    mode = group.get("low_precision")
    if mode not in ROUNDINGS:
        raise ValueError(f"low_precision must be one of None, 'kahan', 'stochastic', got {mode!r}")
    dtype = group.get("state_dtype")
    if dtype is not None and not (
        isinstance(dtype, torch.dtype) and dtype.is_floating_point and not dtype.is_complex
    ):
        raise ValueError(
            f"state_dtype must be None or a floating torch.dtype (e.g. "
            f"torch.float32), got {dtype!r}"
        )


def state_keys(group: dict) -> tuple:
    """The extra state a group's low-precision parameters keep (none for fp32/fp64 ones)."""
    mode = group.get("low_precision")
    return (COMP,) if mode == "kahan" else (COUNT,) if mode == "stochastic" else ()


def init_state(state: dict, p: torch.Tensor, group: dict) -> None:
    if p.dtype not in LOW_DTYPES:
        return
    mode = group.get("low_precision")
    if mode == "kahan" and COMP not in state:
        state[COMP] = torch.zeros_like(p, dtype=COMP_DTYPE, memory_format=torch.preserve_format)
    elif mode == "stochastic" and COUNT not in state:
        # on the parameter's device: the kernels and a captured step read it there
        state[COUNT] = torch.zeros((), dtype=torch.int64, device=p.device)


def moment_dtype(p: torch.Tensor, group: dict) -> torch.dtype:
    """The dtype of a new moment buffer of ``p``: the group's ``state_dtype``, else p's."""
    return group.get("state_dtype") or p.dtype


def needs_wide(dtype: torch.dtype, group: dict) -> bool:
    """Whether a (loop/foreach) step of ``dtype`` params runs on upcast copies: a rounding
    mode on low-precision params, or moments stored in another dtype."""
    if group.get("low_precision") is not None and dtype in LOW_DTYPES:
        return True
    state = group.get("state_dtype")
    return state is not None and state != dtype


def kernel_rounding(dtype: torch.dtype, group: dict) -> int:
    """How the Triton kernels store params of ``dtype``: 0 to nearest, 1 Kahan, 2
    stochastic (``kernels.rounding``'s codes)."""
    if dtype not in LOW_DTYPES:
        return 0
    return {None: 0, "kahan": 1, "stochastic": 2}[group.get("low_precision")]


def half_ulp(dtype: torch.dtype) -> float:
    """Half the smallest relative spacing of ``dtype``: a multiplicative change below it is
    rounded away from every value."""
    return torch.finfo(dtype).eps / 4


def survives(amount: float | None, dtype: torch.dtype) -> bool | None:
    """Whether a shrink ``p *= 1 - amount`` changes a stored ``dtype`` value (None: no
    multiplicative decay)."""
    if amount is None or amount == 0:
        return None
    return dtype not in LOW_DTYPES or amount >= half_ulp(dtype)


def warn_if_lost(opt, group: dict, params: list, positions: list, scales: list, eta0) -> None:
    """Warns once per optimizer, naming ``low_precision``, when a group that rounds to nearest
    has bf16/fp16 params whose per-step shrink (at the current lr) is below half an ulp:
    their decay is then a no-op. Runs when a step plan is built, not per step."""
    from .decay_ops import Decay  # (decay_ops imports nothing from here)

    if (
        group.get("low_precision") is not None
        or group["decay_mode"] == "l2"
        or opt.__dict__.get("_sd_lost_decay_warned")
        or not any(p.dtype in LOW_DTYPES for p in params)
        or any(isinstance(v, torch.Tensor) for v in (group["lr"], group["weight_decay"], eta0))
    ):
        return  # (a tensor lr is a capturable or compiled step's: reading it would sync)
    wd, lr = float(group["weight_decay"]), float(group["lr"])
    decay = Decay(group["decay_mode"], (), lr, float(eta0), wd)
    lost = [
        (i, p.dtype, float(decay.amount(wd * s)))
        for i, p, s in zip(positions, params, scales)
        if p.dtype in LOW_DTYPES
    ]
    lost = [(i, dtype, c) for i, dtype, c in lost if 0 < c < half_ulp(dtype)]
    if not lost:
        return
    import warnings

    names = group.get("param_names")
    i, dtype, c = lost[0]
    first = repr(names[i]) if names else f"params[{i}]"
    warnings.warn(
        f"scaled_decay: the weight decay of {len(lost)} {str(dtype)[6:]} tensor(s) (e.g. "
        f"{first}: a shrink of {c:.3g} per step) is below half an ulp of their dtype "
        f"({half_ulp(dtype):.3g}) and is rounded away at every step: set "
        f"low_precision='kahan' or 'stochastic' to keep it (decay_report() lists them)",
        UserWarning,
        stacklevel=2,
    )
    opt.__dict__["_sd_lost_decay_warned"] = True


# ---- the step -------------------------------------------------------------------------------
def _wide(lst: list, dtype: torch.dtype) -> list:
    """Upcast copies (the tensor itself where it has ``dtype`` already; None stays)."""
    if all(t is not None for t in lst):
        return list(map(torch.Tensor.to, lst, repeat(dtype)))
    return [None if t is None else t.to(dtype) for t in lst]


def wide_step(
    foreach, lists: list, lp_states: list, *, rounding, state_dtype, salt=0, **kwargs
) -> None:
    """``foreach(*lists, **kwargs)`` on fp32 copies (fp64 for fp64 params), then one store:
    state rounded to nearest into its dtype, params by ``rounding`` (see module doc).

    ``lists``: params, grads, then the update's state lists; ``lp_states``: the
    ``state_keys`` lists (compensation buffers or counters of these params); ``salt``: what
    tells this call's random stream from other calls of the same step (the loop backend's
    tensor index). New state the math made (SGD's first buffer) is written into its list in
    ``state_dtype`` (the params' dtype when None).
    """
    params = lists[0]
    dtype = params[0].dtype
    compute = torch.promote_types(dtype, torch.float32)
    low = dtype in LOW_DTYPES
    rounding = rounding if low else None
    work = [_wide(lst, compute) if lst else lst for lst in lists]
    wp = work[0]
    if rounding == "kahan":
        torch._foreach_add_(wp, lp_states[0])  # x = p + comp
    foreach(*work, **kwargs)
    for orig, new in zip(lists[2:], work[2:]):  # state: back into its own dtype
        pairs = [(i, o, n) for i, (o, n) in enumerate(zip(orig, new)) if o is not n]
        made = [(i, n) for i, o, n in pairs if o is None]
        for i, n in made:
            orig[i] = n.to(state_dtype or dtype)
        old = [(o, n) for i, o, n in pairs if o is not None]
        if old:
            torch._foreach_copy_([o for o, _ in old], [n for _, n in old])
    if wp is not params:
        store_(params, wp, rounding, lp_states, salt, on_device=kwargs["tensor_math"])


@torch.compiler.disable  # (see the docstring)
def store_(
    params: list, work: list, rounding, lp_states: list, salt: int = 0, on_device: bool = False
) -> None:
    """``params`` from their step's fp32 results ``work`` (overwritten): to nearest, Kahan
    (``lp_states[0]``: the compensations) or stochastic (``lp_states[0]``: the counters,
    advanced here; ``on_device``: no host read of them, for a capturable step). Never
    compiled: Inductor keeps values in fp32 across a fused
    ``x.to(bf16)`` (it does not emulate the cast's rounding), so ``x - round(x)`` would be 0
    and the compensation and the rounding choice lost; run eagerly, the casts round."""
    if rounding == "stochastic":
        counts = lp_states[0]
        torch._foreach_add_(counts, 1)
        stochastic_round_(params, work, counts[0], salt, on_device)
        return
    torch._foreach_copy_(params, work)  # round to nearest
    if rounding == "kahan":
        torch._foreach_sub_(work, params)  # exact in fp32: what rounding took away
        torch._foreach_copy_(lp_states[0], work)


# ---- stochastic rounding ---------------------------------------------------------------------
def _mix32(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply finalizer) in int64 arithmetic; multipliers
    below 2**31 keep every product inside int64. The kernels use the same steps."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _M32
    h = h ^ (h >> 15)
    h = (h * 0x297A2D39) & _M32
    return h ^ (h >> 16)


def uniform(count, salt: int, n: int, device) -> torch.Tensor:
    """``n`` fp32 values in [0, 1) (24 random bits each) from a counter hash of ``count``
    (an int or 0-d int64 tensor: no host read) and ``salt``: the same arguments give the same
    values, on any device and under torch.compile or CUDA-graph capture."""
    key = _mix32((count * 0x3C6EF372 + salt * 0x1B873593 + 1) & _M32)
    i = torch.arange(n, device=device, dtype=torch.int64)
    h = _mix32((i * 0x2C1B3C6D + key) & _M32)
    return (h >> 8).to(torch.float32) * 2.0**-24


def random_bits(count, salt: int, n: int, device, on_device: bool) -> torch.Tensor:
    """``n`` int32 values in [0, 2**16) for the step ``count`` (0-d int64 tensor). From
    torch's generator seeded by the count (read on the host: fast) unless ``on_device``
    (a capturable step: no host read), then from the counter hash ``uniform``."""
    if on_device:
        return (uniform(count, salt, n, device) * 65536).to(torch.int32)
    gen = torch.Generator(device=device)
    gen.manual_seed((int(count) * 0x9E3779B97F4A7C15 + salt) & (2**63 - 1))
    return torch.randint(0, 65536, (n,), generator=gen, device=device, dtype=torch.int32)


def stochastic_round_bf16(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """fp32 ``x`` to bf16, rounded up or down without bias: 16 random bits added to the low
    half of x's bit pattern, then cut off (a carry into the kept half, with probability equal
    to the cut fraction, rounds the magnitude up). inf and NaN round to nearest."""
    i = x.view(torch.int32) + bits.view_as(x)
    out = (i & -65536).view(torch.float32).to(torch.bfloat16)  # exact: the low bits are 0
    return torch.where(torch.isfinite(x), out, x.to(torch.bfloat16))


def stochastic_round(x: torch.Tensor, dtype: torch.dtype, u: torch.Tensor) -> torch.Tensor:
    """``x`` (fp32) in ``dtype``, rounded up or down: to the neighbour ``n`` of the nearest
    value ``r`` (on x's side) when ``u < (x - r) / (n - r)``, so that E[result] = x for
    ``u`` uniform in [0, 1). Exact values, inf and NaN stay as rounding to nearest gives."""
    r = x.to(dtype)
    rf = r.to(x.dtype)
    d = x - rf
    toward = torch.where(
        d > 0,
        torch.tensor(float("inf"), dtype=dtype, device=x.device),
        torch.tensor(float("-inf"), dtype=dtype, device=x.device),
    )
    n = torch.nextafter(r, toward)
    up = u.view_as(x) < d / (n.to(x.dtype) - rf)  # NaN (inf inputs) compares False
    return torch.where(up, n, r)


def stochastic_round_(
    params: list[torch.Tensor],
    work: list[torch.Tensor],
    count,
    salt: int = 0,
    on_device: bool = False,
) -> None:
    """``params[i] = stochastic_round(work[i])``, the list as one flat tensor (one draw)."""
    flat = torch.cat(list(map(torch.flatten, work)))
    bits = random_bits(count, salt, flat.numel(), flat.device, on_device)
    if params[0].dtype == torch.bfloat16:
        out = stochastic_round_bf16(flat, bits)
    else:
        out = stochastic_round(flat, params[0].dtype, bits.to(torch.float32) * 2.0**-16)
    chunks = out.split(list(map(torch.Tensor.numel, params)))
    torch._foreach_copy_(params, list(map(torch.Tensor.view_as, chunks, params)))
