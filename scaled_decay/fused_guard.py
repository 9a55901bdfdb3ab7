"""Which of torch's fused optimizer ops are trusted: never hand them tensors they get wrong.

Layouts torch's fused kernels mishandle are kept from them by ``scaled_decay.layouts``; this
module guards against the other kind of torch bug, so that ``backend="torch_fused"`` (and
``"auto"`` on CPU) never returns a silently wrong update:

- **Versions.** A torch release can ship a fused kernel that is wrong for some dtype (torch
  2.11's and 2.13's CPU ``_fused_sgd_`` with bf16 and fp16 parameters of 16 elements or
  more; 2.14.1 is right). Before a fused op is trusted for a (device, dtype, op, flags)
  combination, it is run once on a small probe (4099 elements, a vector body and a tail)
  and compared with the package's reference math on fp32 copies, within a
  per-dtype tolerance (``PROBE_ULPS``). The verdict is cached for the process; a failed
  probe sends those tensors to foreach and warns once per (op, device, dtype), naming the
  torch version.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

__all__ = ["PROBE_ULPS", "probe_inputs", "probe_ok", "trusted", "ulp", "ulps_off"]


# ---- probes ----------------------------------------------------------------------------------
# Tolerance of a fused kernel against the reference math on fp32 copies, rounded once to the
# dtype, in units in the last place of the dtype (docs/backends.md, "Accuracy"; fp64 against fp64).
# fp32 allows 32 ulp (3.8e-6 relative, inside the fused backends' rtol 1e-5): torch's CUDA
# fused Adam rounds the betas to fp32 and takes ``1 - beta`` there (for beta2 = 0.99 that is
# 9.5e-7 off), which put exp_avg_sq 12 ulp and the param 8 ulp from the reference on an H200
# with torch 2.11: a different rounding of the same math, not a wrong kernel. The bugs this
# guards against are far larger (torch 2.13's bf16 fused SGD: 250 ulp; a mixed-up layout:
# O(1) relative).
PROBE_ULPS = {torch.float64: 4, torch.float32: 32, torch.bfloat16: 1, torch.float16: 1}
PROBE_NUMEL = 4099

_verdicts: dict[tuple, bool] = {}
_warned: set = set()


def ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The spacing of ``dtype`` at |x|, one unit in the last place, in fp64 (the probes and
    the tests measure errors in it)."""
    a = x.abs().to(dtype)
    return (torch.nextafter(a, torch.full_like(a, float("inf"))) - a).double()


def ulps_off(out: torch.Tensor, ref: torch.Tensor, before: torch.Tensor) -> float:
    """The worst error of ``out`` against the high-precision ``ref`` (rounded to ``out.dtype``)
    in units in the last place of ``out.dtype``, the spacing taken at max(|before|, |ref|,
    |ref - before|); NaN where any element is NaN on one side only, 0 for empty tensors."""
    if out.numel() == 0:
        return 0.0
    ref, before = ref.double(), before.double()
    scale = torch.maximum(torch.maximum(before.abs(), ref.abs()), (ref - before).abs())
    rounded = ref.to(out.dtype).double()
    err = (out.double() - rounded).abs()
    err = torch.where(out.double().isnan() & rounded.isnan(), 0.0, err)  # NaN in both: agree
    return float((err / ulp(scale, out.dtype)).max())


def probe_ok(worst: dict[str, float], dtype: torch.dtype) -> bool:
    """Whether a probe's worst errors (ulps per output) are all within ``PROBE_ULPS``."""
    return all(v <= PROBE_ULPS[dtype] for v in worst.values())  # NaN: False


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def probe_inputs(
    count: int, dtype: torch.dtype, device: torch.device, *, positive: Sequence[int] = ()
) -> list[torch.Tensor]:
    """``count`` fixed pseudo-random probe tensors of ``PROBE_NUMEL`` elements (those at
    ``positive`` in (0.01, 0.11], for second moments), rounded to ``dtype``."""
    g = torch.Generator().manual_seed(1234)
    out = []
    for i in range(count):
        t = (
            torch.rand(PROBE_NUMEL, generator=g) * 0.1 + 0.01
            if i in positive
            else torch.randn(PROBE_NUMEL, generator=g)
        )
        out.append(t.to(dtype).to(device))
    return out


@torch.compiler.disable
def trusted(
    op: str,
    device: torch.device,
    dtype: torch.dtype,
    flags: tuple,
    probe: Callable[[], dict[str, float]],
) -> bool:
    """Whether torch's fused ``op`` may be used on ``device`` for ``dtype`` with ``flags``
    (the hyperparameters that select a code path): ``probe()`` runs the op on small inputs
    and returns its worst error against the reference in ulps per output; run once per key,
    then cached. A failure warns with the worst errors."""
    device = torch.device(device)
    key = (op, str(device), dtype, flags)
    verdict = _verdicts.get(key)
    if verdict is None:
        if _capturing(device):
            raise RuntimeError(
                f"scaled_decay: torch's fused {op} has not been checked yet for {dtype} on "
                f"{device} with these settings, and the check cannot run during CUDA graph "
                f"capture: run one step with the same settings before capturing"
            )
        worst = probe()
        verdict = _verdicts[key] = probe_ok(worst, dtype)
        if not verdict and (op, str(device), dtype) not in _warned:
            _warned.add((op, str(device), dtype))
            detail = (
                " (worst error: "
                + ", ".join(f"{k} {v:.3g} ulp" for k, v in worst.items())
                + f"; tolerance {PROBE_ULPS[dtype]})"
            )
            warnings.warn(
                f"scaled_decay: torch {torch.__version__}'s fused {op} kernel gives wrong "
                f"results for {dtype} tensors on {device} (checked against the reference "
                f"math on a probe; settings {flags}{detail}); those tensors are updated by the "
                f"foreach backend instead (same math, slower)",
                RuntimeWarning,
                stacklevel=3,
            )
    return verdict


def forget_verdicts() -> None:
    """Drop the cached probe verdicts and warnings (tests, or after swapping kernels)."""
    _verdicts.clear()
    _warned.clear()
