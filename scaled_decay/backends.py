"""Backend choice and batching: which tensors one call of an update function sees.

The update math of each optimizer is written once, with ``torch._foreach_*`` ops over lists
(``sgd.sgd_math``, ``adam.adam_math``). ``"loop"`` calls it one tensor at a time (the
readable reference), ``"foreach"`` once per (device, dtype) batch; ``"torch_fused"`` hands
the same lists to torch's own fused kernels; ``"triton"`` to the package's kernels.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Hashable, List, Sequence

import torch

BACKENDS = ("auto", "triton", "torch_fused", "foreach", "loop")


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor"


def torch_fused_supports(p: torch.Tensor) -> bool:
    """Whether torch has a fused optimizer kernel for tensors like ``p``."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    return (not _is_dtensor(p) and p.is_floating_point()
            and p.device.type in _get_fused_kernels_supported_devices())


def triton_available(device: torch.device) -> bool:
    """Whether the package's Triton kernels can run on ``device`` (none ship yet)."""
    return False


def resolve_backend(requested: str, p: torch.Tensor) -> str:
    """The backend that runs for tensors like ``p``; explicit requests never fall back."""
    if requested == "auto":
        if p.is_cuda and triton_available(p.device):
            return "triton"
        return "torch_fused" if torch_fused_supports(p) else "foreach"
    if requested == "torch_fused" and not torch_fused_supports(p):
        raise RuntimeError(
            f"backend='torch_fused': torch has no fused optimizer kernel for "
            f"{type(p).__name__} of dtype {p.dtype} on {p.device}; use backend='foreach'")
    if requested == "triton" and not triton_available(p.device):
        raise RuntimeError(
            f"backend='triton': the Triton kernels cannot run on {p.device}; "
            f"use backend='auto' or 'foreach'")
    return requested


def indices_by(keys: Sequence[Hashable]) -> Dict[Hashable, List[int]]:
    """Positions of equal keys, in first-seen order."""
    out: Dict[Hashable, List[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        out[k].append(i)
    return out


def take(lists: Sequence, idx: Sequence[int]) -> list:
    """Each list restricted to ``idx``; None and empty lists (absent state) pass through."""
    return [lst if not lst else [lst[i] for i in idx] for lst in lists]


def batch_indices(backend: str, params: Sequence[torch.Tensor]) -> List[List[int]]:
    """Positions of what one math call sees: one tensor (loop) or one (device, dtype)."""
    if backend == "loop":
        return [[i] for i in range(len(params))]
    return list(indices_by([(p.device, p.dtype) for p in params]).values())


def add_decay_to_grads(grads: List[torch.Tensor], params: List[torch.Tensor],
                       lams: Sequence[float]) -> List[torch.Tensor]:
    """``g + lam * p`` per tensor, new tensors (the user's grads are never written).

    One ``_foreach_add`` per distinct ``lam``, with ``alpha=lam``: the same op as torch's
    ``grad.add(param, alpha=weight_decay)``, so results match torch bit for bit.
    """
    out = list(grads)
    for lam, idx in indices_by(lams).items():
        if lam == 0:
            continue
        summed = torch._foreach_add([grads[i] for i in idx], [params[i] for i in idx], alpha=lam)
        for i, t in zip(idx, summed):
            out[i] = t
    return out


def apply_decoupled_decay(params: List[torch.Tensor], decay: Sequence[float]) -> None:
    """``p *= 1 - c`` per tensor (SPEC step 2: multiply first, then the update)."""
    keep = [1.0 - c for c in decay]
    if any(k != 1.0 for k in keep):
        torch._foreach_mul_(params, keep)
