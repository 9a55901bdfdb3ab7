"""Host-side choices shared by the launchers: block size, dtype codes, what the kernels take.

``BLOCK`` elements per program and ``NUM_WARPS`` are fixed, not autotuned: the kernels update
their inputs in place, so an autotuner's trial runs would apply the step several times. The
launchers read them at each call (``launch.BLOCK``), so a benchmark can try other values
(``benchmarks/sweep_triton.py``).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from scaled_decay.fused_guard import split_layouts

from .elementwise import BF16, FP16, FP32

# 4 elements per thread: fp32 loads of 16 B, bf16/fp16 of 8 B. Measured on an H200
# (benchmarks/results/cuda/README.md): 4096 x 8 warps (16 per thread) took 187 registers, one
# program per SM at a time, and reached 69-75% of copy bandwidth (fp32) and 40-46% (bf16) on
# one 256M-element tensor; 1024 x 8 reaches 81-94% and 58-80% across runs, with the same bits.
BLOCK = 1024      # elements per program
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


def split_flat(params: Sequence[torch.Tensor], checked: Sequence[Sequence]
               ) -> Tuple[List[int], List[int]]:
    """Positions of the params the kernel takes, and of those left to the reference math:
    the kernel takes fp32/bf16/fp16 tensors that, with their companions in ``checked``
    (grads, state: lists aligned with ``params``), can be walked as one flat run
    (``scaled_decay.fused_guard.flat_layout_ok``, the same test torch's fused ops get)."""
    fast, slow = split_layouts(params, checked)
    ours = [i for i in fast if params[i].dtype in _ELEM]
    return ours, sorted(slow + [i for i in fast if params[i].dtype not in _ELEM])
