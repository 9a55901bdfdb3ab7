"""This step's decay, and the foreach ops that apply it (after the gradient, before the update).

A :class:`Decay` is what one update call needs to know of the decay: the mode, the lr and
peak lr it scales with, and the tensors grouped by their ``lam = weight_decay * s(p)``. The
groups are made once, when a step plan is built (``scaled_decay.step_plan``); the lr and
weight_decay are read at each step, so an lr or weight-decay schedule changes nothing per
tensor. With ``decay_scaling=None`` there is one group, and every op below runs once over
the whole list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import NamedTuple, TypeVar

import torch

__all__ = [
    "Decay",
    "add_decay_to_grads",
    "apply_cautious_decay",
    "apply_decoupled_decay",
    "decay_from_lists",
    "found_inf_set",
    "indices_by",
    "pick",
    "unscale_grads_",
]


def indices_by(keys: Sequence[K]) -> dict[K, list[int]]:
    """Positions of equal keys, in first-seen order."""
    out: dict[K, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        out[k].append(i)
    return out


T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def pick(lst: list[T] | tuple[T, ...], idx: Sequence[int] | None) -> list[T] | tuple[T, ...]:
    """``lst`` at positions ``idx`` (None: all of it, no copy)."""
    return lst if idx is None else [lst[i] for i in idx]


class Decay(NamedTuple):
    """One step's decay for a list of tensors.

    ``mode``: a ``decay_mode`` (``"l2"``, ``"decoupled"``, ``"independent"``,
    ``"corrected"``), or ``"amount"`` when ``groups`` already hold the multiplicative
    amounts ``c`` (the per-tensor-list form of the reference functions).
    ``groups``: ``((lam, positions or None for all), ...)``.
    ``lr``/``eta0``: the group's lr now and its peak lr (floats, or tensors in the capturable
    and compiled forms); ``weight_decay``: the group's, whose product with s(p) each ``lam``
    is (the Triton kernels take s(p) from their table and this at launch).
    ``cautious``: cautious decay (``apply_cautious_decay``); ``decayed``: None, or a list
    with one slot per tensor that the math fills with a 0-d tensor, the number of
    coordinates it decayed (read only by ``decay_report()``).
    """

    mode: str
    groups: tuple[tuple, ...]
    lr: float | torch.Tensor = 1.0
    eta0: float | torch.Tensor = 1.0
    weight_decay: float | torch.Tensor = 1.0
    cautious: bool = False
    decayed: list | None = None

    @property
    def l2(self) -> bool:
        return self.mode == "l2"

    def amount(self, lam):
        """``c`` with ``p *= 1 - c`` (``scaled_decay.modes``): ``f(lr) * lam``, in the order the
        per-tensor reference computes it (``decay_lr_factor(...) * lam``), so the float
        path gives the same bits."""
        if self.mode == "amount":
            return lam
        if self.mode == "decoupled":
            return self.lr * lam
        if self.mode == "independent":
            return self.lr / self.eta0 * lam
        return self.lr * self.lr / self.eta0 * lam  # "corrected"

    def fused_weight_decay(self, lam) -> float:
        """``weight_decay`` for torch's ``_fused_adamw_``, which multiplies by
        ``1 - lr * weight_decay``: ``lam`` itself for "decoupled" (torch AdamW's own numbers),
        else ``c / lr`` (0 when lr is 0)."""
        if self.mode == "decoupled":
            return lam
        lr = float(self.lr)
        return float(self.amount(lam)) / lr if lr else 0.0


def decay_from_lists(l2_lams, decay) -> Decay | None:
    """A :class:`Decay` from per-tensor lists: ``l2_lams`` (mode "l2") or ``decay`` (the
    amounts ``c``); None for neither."""
    if l2_lams is not None:
        return Decay("l2", tuple(indices_by(list(l2_lams)).items()))
    if decay is not None:
        return Decay("amount", tuple(indices_by(list(decay)).items()))
    return None


def add_decay_to_grads(
    grads: list[torch.Tensor], params: list[torch.Tensor], decay: Decay
) -> list[torch.Tensor]:
    """``g + lam * p`` per tensor, new tensors (the user's grads are never written).

    One ``_foreach_add`` per distinct ``lam``, with ``alpha=lam``: the same op as torch's
    ``grad.add(param, alpha=weight_decay)``, so results match torch bit for bit.
    """
    if len(decay.groups) == 1 and decay.groups[0][1] is None:
        lam = decay.groups[0][0]
        return list(grads) if lam == 0 else list(torch._foreach_add(grads, params, alpha=lam))
    out = list(grads)
    for lam, idx in decay.groups:
        if lam == 0:
            continue
        idx = range(len(grads)) if idx is None else idx
        summed = torch._foreach_add([grads[i] for i in idx], [params[i] for i in idx], alpha=lam)
        for i, t in zip(idx, summed):
            out[i] = t
    return out


# dtypes for which a 0-d tensor factor gives a Python float factor's bits: a tensor factor is
# cast to the params' dtype first (1 - 1e-4 is 1.0 in bf16), a float one is not
_EXACT_TENSOR_FACTOR = (torch.float32, torch.float64)


def apply_decoupled_decay(params: list[torch.Tensor], decay: Decay, found_inf=None) -> None:
    """``p *= 1 - c`` per tensor (multiply first, then the update: torch AdamW's order).

    With GradScaler's ``found_inf`` (a device tensor) the factor is ``1`` where it is set,
    chosen on the device (no sync) for fp32/fp64 params; for bf16/fp16 params ``found_inf``
    is read on the host instead (a device-side factor would be rounded to their dtype). A
    float ``c`` of 0 is skipped; a tensor ``c`` (capturable, compiled) never is.
    """
    for lam, idx in decay.groups:
        keep = 1.0 - decay.amount(lam)
        if not isinstance(keep, torch.Tensor) and keep == 1.0:
            continue
        sub = pick(params, idx)
        device, dtype = sub[0].device, sub[0].dtype
        exact = dtype in _EXACT_TENSOR_FACTOR
        if found_inf is not None and not exact and not isinstance(keep, torch.Tensor):
            if found_inf_set(found_inf):
                return
            found_inf = None
        if found_inf is not None:
            skip = found_inf.to(device, non_blocking=True) != 0
            keep_t = (
                keep.to(device)
                if isinstance(keep, torch.Tensor)
                else torch.tensor(keep, dtype=dtype, device=device)
            )
            torch._foreach_mul_(sub, torch.where(skip, torch.ones((), device=device), keep_t))
        else:
            torch._foreach_mul_(sub, _factor(keep, device, dtype))


def _factor(keep, device, dtype):
    """``keep`` as the factor of ``_foreach_mul``: on the CPU, for fp32/fp64, a 0-d tensor
    (the same product; torch's CPU foreach takes a 0-d tensor factor 2.4x faster than a
    float: 2,000 x 4K fp32, 1.9 against 4.6 ms, torch 2.13), else as it is."""
    if (
        device.type == "cpu"
        and dtype in _EXACT_TENSOR_FACTOR
        and not isinstance(keep, torch.Tensor)
    ):
        return torch.tensor(keep, dtype=dtype)
    return keep


def _real(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Real views of complex tensors (each real component is its own coordinate), dense
    copies of sparse ones (a sparse direction is 0 off its indices)."""
    return [
        torch.view_as_real(t) if t.is_complex() else t.to_dense() if t.is_sparse else t
        for t in tensors
    ]


def apply_cautious_decay(
    params: list[torch.Tensor] | tuple[torch.Tensor, ...],
    direction: list[torch.Tensor] | tuple[torch.Tensor, ...],
    decay: Decay,
) -> None:
    """Cautious weight decay (Chen et al. 2025): ``p *= 1 - c * 1[u * p >= 0]`` per
    coordinate, where ``direction`` has the sign of the update direction ``u`` (the step
    is ``p -= lr * u``): only coordinates the update also moves toward zero (or does not
    move) decay. Call it before the update is added, with ``p`` as the update saw it.

    The decayed coordinates get exactly ``p * (1 - c)`` of ``apply_decoupled_decay``, the
    others keep ``p``: the decay's own product is taken, then ``lerp`` with the 0/1 mask as
    weight picks it or ``p`` (torch's lerp returns ``end`` at weight 1 and ``start`` at 0,
    exactly). The mask is ``sign(u) * sign(p) >= 0``, exact where ``u * p`` could underflow.
    Costs two temporaries the size of ``params`` (mask, decayed values). Where
    ``decay.decayed`` is a list, its slots get each tensor's count of decayed coordinates
    (a 0-d fp32 tensor on the device: no sync).
    """
    if params and (params[0].is_complex() or any(t.is_sparse for t in direction)):
        params, direction = _real(params), _real(direction)
    mask: list[torch.Tensor] | tuple[torch.Tensor, ...] = torch._foreach_sign(direction)
    torch._foreach_mul_(mask, torch._foreach_sign(params))
    torch._foreach_clamp_max_(mask, 0.0)  # -1 where the signs disagree
    torch._foreach_add_(mask, 1.0)  # 1[u * p >= 0]
    if params and mask[0].dtype != params[0].dtype:  # (moments in another state_dtype)
        mask = [m.to(params[0].dtype) for m in mask]
    if decay.decayed is not None:
        counts = torch._foreach_norm(mask, 1, dtype=torch.float32)
        decay.decayed[:] = counts
    for lam, idx in decay.groups:
        keep = 1.0 - decay.amount(lam)
        if not isinstance(keep, torch.Tensor) and keep == 1.0:
            continue
        sub = pick(params, idx)
        decayed = torch._foreach_mul(sub, _factor(keep, sub[0].device, sub[0].dtype))
        torch._foreach_lerp_(sub, decayed, pick(mask, idx))


# ---- GradScaler (torch.amp) support for the backends that do not fuse it ---------------------
def found_inf_set(found_inf) -> bool:
    """Whether GradScaler found an inf/NaN (read on the host: one sync, as GradScaler's own
    ``step`` does for optimizers that cannot skip on the device)."""
    return found_inf is not None and bool(found_inf.item() != 0)


def unscale_grads_(grads: list[torch.Tensor], grad_scale) -> None:
    """``g *= float32(1 / scale)`` in place: GradScaler.unscale_'s own op and arithmetic
    (``torch._amp_foreach_non_finite_check_and_unscale_``), one call per (device, dtype)."""
    if grad_scale is None or not grads:
        return
    inv_scale = grad_scale.double().reciprocal().float()
    # a sparse grad is unscaled through its values (GradScaler.unscale_ does the same)
    grads = [g._values() if g.is_sparse else g for g in grads]
    for idx in indices_by([(g.device, g.dtype) for g in grads]).values():
        sub = [grads[i] for i in idx]
        device = sub[0].device
        torch._amp_foreach_non_finite_check_and_unscale_(
            sub, torch.zeros((), device=device), inv_scale.to(device)
        )
