"""What the differential and fused-guard tests share: one tensor of a backend's step judged
against the loop backend's and the fp32 math, and whether torch's own CPU fused SGD is wrong
for a dtype."""

import torch

from scaled_decay import fused_guard as G
from scaled_decay.fused_guard import ulp
from scaled_decay.updates.sgd import probe as sgd_probe
from tests.helpers.triton_interpret import ULPS


def check_tensor(out, loop, ref32, before, what, exact_only):
    """``out`` equals ``loop`` bit for bit, or (fused backends) is within the README's
    tolerance of ``ref32`` (the math on fp32 copies). Returns (elements bit-equal to the
    rounded reference, elements), (0, 0) when ``out`` is ``loop``'s."""
    assert out.dtype == loop.dtype and out.shape == loop.shape, what
    if torch.equal(out, loop) or out.numel() == 0:
        return 0, 0
    assert not exact_only, f"{what}: differs from loop ({(out.float() - loop.float()).abs().max()})"
    dtype = out.dtype
    ref = ref32.to(dtype).float()
    scale = torch.maximum(
        torch.maximum(before.float().abs(), ref32.abs()), (ref32 - before.float()).abs()
    )
    err = (out.float() - ref).abs()
    bad = err > ULPS[dtype] * ulp(scale, dtype)
    assert not bad.any(), (
        f"{what} ({dtype}): {int(bad.sum())} of {out.numel()} elements "
        f"off by more than {ULPS[dtype]} ulp; worst {float(err.max())}"
    )
    return int((out.float() == ref).sum()), out.numel()


def torch_fused_sgd_wrong(dtype) -> bool:
    """Whether this torch's CPU fused SGD gives wrong results for ``dtype`` (torch 2.13:
    bf16/fp16 tensors of 16 elements or more)."""
    return not G.probe_ok(sgd_probe(torch.device("cpu"), dtype, (False,) * 8), dtype)
