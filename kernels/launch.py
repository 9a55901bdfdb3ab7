"""Host-side choices shared by the launchers: block size, dtype codes, what the kernels take.

``BLOCK`` elements per program and ``NUM_WARPS`` are fixed, not autotuned: the kernels update
their inputs in place, so an autotuner's trial runs would apply the step several times. The
launchers read them at each call (``launch.BLOCK``), so a benchmark can try other values
(``benchmarks/triton/sweep_triton.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .elementwise import BF16, FP16, FP32

# 4 elements per thread: fp32 loads of 16 B, bf16/fp16 of 8 B. Measured on an H200
# (benchmarks/triton/results/cuda/README.md): 4096 x 8 warps (16 per thread) took 187 registers, one
# program per SM at a time, and reached 69-75% of copy bandwidth (fp32) and 40-46% (bf16) on one
# 256M-element tensor; 1024 x 8 reaches 81-94% and 58-80% across runs, with the same bits.
BLOCK = 1024  # elements per program
NUM_WARPS = 8
# No contraction of a * b + c into one fused multiply-add beyond the kernels' explicit
# tl.fma: those stand where torch's ops fuse (lerp, addcmul, add with alpha); anywhere else
# torch rounds the product first (p * (1 - c) before Adam's update), and so must the kernel.
# With Triton's default (fusion on) the Adam kernel had 32 FMAs in its PTX instead of 24.
FP_FUSION = False

_ELEM = {torch.float32: FP32, torch.bfloat16: BF16, torch.float16: FP16}


def elem_code(dtype: torch.dtype) -> int:
    return _ELEM[dtype]


def dtype_ok(dtype: torch.dtype) -> bool:
    """Whether the kernels take tensors of ``dtype``."""
    return dtype in _ELEM


def split64(x: float):
    """A double as two fp32 values whose sum is it to 2**-48 relative: a float argument
    reaches a compiled kernel as fp32, and the kernels add the pair in fp64 (``pair64``), so
    no value needs a recompile or a device table."""
    hi = float(torch.tensor(float(x), dtype=torch.float32))
    return hi, float(x) - hi


def lr_args(lr):
    """(lr, lr_lo) kernel arguments: a 0-d device tensor as is (read in the kernel: CUDA
    graphs replay whatever it holds then), or a float's ``split64`` pair."""
    if isinstance(lr, torch.Tensor):
        return lr, 0.0
    return split64(lr)


# DECAY_KIND of the kernels: what each tensor's table value is
NO_DECAY, L2, MULTIPLY = 0, 1, 2


class KernelDecay(NamedTuple):
    """The decay of one launch. Each tensor's table value ``v`` becomes
    ``(v * weight_decay) * f``, with ``f = lr ** lr_pow / (eta0 if div_eta0 else 1)``: the
    coupled ``lam`` (``kind=L2``) or the amount ``c`` of ``p *= 1 - c`` (``MULTIPLY``).
    The step plan puts s(p) in the table and the group's weight decay and lr factor here;
    the per-tensor-list launchers put ``lam`` or ``c`` in the table with the defaults.
    ``cautious`` (``MULTIPLY`` only): decay only where the update direction's sign agrees
    with p's, counting the decayed coordinates (the launchers' ``decayed`` argument)."""

    kind: int = NO_DECAY
    weight_decay: float = 1.0
    lr_pow: int = 0
    div_eta0: bool = False
    eta0: float = 1.0
    cautious: bool = False
