"""Which tensors a flat kernel may walk as one run of ``numel`` elements.

torch's fused optimizer kernels and this package's Triton kernels walk p, g and the state as
flat runs. A gradient or state tensor whose strides differ from its parameter's (a transposed
or channels_last parameter whose ``.grad`` was assigned contiguous), or a parameter that does
not cover its storage densely (a strided slice), gets its elements mixed up on CPU (and raises
on CUDA). ``flat_layout_ok`` says when a tensor and its companions can be walked flat; the
step plan (``scaled_decay.step_plan``) sends the others to the foreach math. It runs when a
plan is built, not at every step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["flat_layout_ok", "split_layouts"]


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


def _same_strides(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal strides on every dim that has more than one element (a size-1 dim's stride
    addresses nothing, and torch sets it freely)."""
    if a.numel() <= 1:
        return True
    return all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape) if n != 1)


def flat_layout_ok(
    p: torch.Tensor, others: Sequence[torch.Tensor], any_dtype: bool = False
) -> bool:
    """Whether a kernel may treat ``p`` and its companions (grad, state) as one flat run of
    ``numel`` elements: p is dense (any dim order) and each companion is a dense strided
    tensor with p's dtype (any float dtype with ``any_dtype``: moments kept in their own
    ``state_dtype``), device, shape and strides, so element k of one is element k of all.
    (Written for speed: it runs for every tensor of every fused step.)"""
    strided, shape, device = torch.strided, p.shape, p.device
    dtype = None if any_dtype else p.dtype
    if p.layout is not strided:
        return False
    if p.is_contiguous():  # the common case: contiguous companions of the same shape match
        if all(
            o.layout is strided
            and (dtype is None or o.dtype is dtype)
            and o.shape == shape
            and o.is_contiguous()
            and o.device == device
            for o in others
        ):
            return True
    elif not _dense(p):
        return False
    return all(
        o.layout is strided
        and (dtype is None or o.dtype is dtype)
        and o.shape == shape
        and o.device == device
        and _same_strides(o, p)
        for o in others
    )


def split_layouts(
    params: Sequence[torch.Tensor], companions: Sequence[Sequence]
) -> tuple[list[int], list[int]]:
    """(positions whose tensors a flat kernel may take, positions left to the foreach math).

    ``companions`` holds lists aligned with ``params`` (grads, state); empty lists and None
    entries (state not created yet) are skipped.
    """
    flat: list[int] = []
    other: list[int] = []
    for i, p in enumerate(params):
        others = [c[i] for c in companions if c and c[i] is not None]
        (flat if flat_layout_ok(p, others) else other).append(i)
    return flat, other
