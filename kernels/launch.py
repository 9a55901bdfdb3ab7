"""Host-side choices shared by the launchers: block size, dtype codes, what the kernels take.

``BLOCK`` elements per program and ``NUM_WARPS`` are fixed, not autotuned: the kernels update
their inputs in place, so an autotuner's trial runs would apply the step several times.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from .elementwise import BF16, FP16, FP32

BLOCK = 4096      # elements per program: 16 per thread at 8 warps, 4 vector loads of 16 B (fp32)
NUM_WARPS = 8

_ELEM = {torch.float32: FP32, torch.bfloat16: BF16, torch.float16: FP16}


def elem_code(dtype: torch.dtype) -> int:
    return _ELEM[dtype]


def lr_args(lr):
    """(lr, lr_lo) kernel arguments: a tensor as is, or a float split into an fp32 pair
    whose sum is the double to 2**-48 (the kernels read it with ``read_lr``)."""
    if isinstance(lr, torch.Tensor):
        return lr, 0.0
    hi = float(torch.tensor(float(lr), dtype=torch.float32))
    return hi, float(lr) - hi


def decay_kind(l2_lams, decay) -> int:
    """0: no decay; 1: "l2" (``g += lam * p``); 2: multiplicative (``p *= 1 - c``)."""
    if l2_lams is not None:
        return 1
    return 2 if decay is not None else 0


def _dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: the elements fill ``[data_ptr, data_ptr + numel)`` exactly,
    in some order of dims (a transposed or permuted tensor is dense, a slice is not)."""
    if t.numel() <= 1:
        return True
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _flat_ok(p: torch.Tensor, others: Sequence[torch.Tensor]) -> bool:
    """Whether the kernel may treat p and its companions as one flat run of numel elements:
    p covers its storage span exactly (dense, no overlap; any permutation of dims is fine)
    and each companion has p's dtype, device, shape and strides, so element k of one is
    element k of the others."""
    if p.dtype not in _ELEM or not _dense(p):
        return False
    return all(o.dtype == p.dtype and o.device == p.device and o.shape == p.shape
               and o.stride() == p.stride() for o in others)


def split_flat(params: Sequence[torch.Tensor], checked: Sequence[Sequence]
               ) -> Tuple[List[int], List[int]]:
    """Positions of the params the kernel takes, and of those left to the reference math.

    ``checked`` holds lists aligned with ``params`` whose tensors must share each param's
    layout (grads, state); empty lists and None entries (state not created yet) are skipped.
    """
    fast, slow = [], []
    for i, p in enumerate(params):
        others = [c[i] for c in checked if c and c[i] is not None]
        (fast if _flat_ok(p, others) else slow).append(i)
    return fast, slow
