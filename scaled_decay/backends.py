"""Backend choice and batching: which tensors one call of an update function sees.

The update math of each optimizer is written once, with ``torch._foreach_*`` ops over lists
(``sgd.sgd_math``, ``adam.adam_math``). ``"loop"`` calls it one tensor at a time (the
readable reference), ``"foreach"`` once per (device, dtype) batch; ``"torch_fused"`` hands
the same lists to torch's own fused kernels; ``"triton"`` to the package's kernels.

Complex parameters reach Adam's backends, and the fused backends of SGD, as their real view
(``torch.view_as_real`` of the param, its grad and its state): ``real_views``. torch.optim
does the same for Adam; its SGD computes in complex arithmetic, as sd.SGD's loop and foreach.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Hashable, List, Sequence

import torch

from .errors import ArgumentRuntimeError

BACKENDS = ("auto", "triton", "torch_fused", "foreach", "loop")


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


FUSED_BACKENDS = ("triton", "torch_fused")


def backend_for_torch_kwargs(backend: str, tensors: Sequence[torch.Tensor], *, foreach=None,
                             fused=None, capturable=False, differentiable=False) -> str:
    """``backend`` with torch.optim's execution kwargs applied (torch's meaning).

    ``foreach=True`` -> "foreach"; ``foreach=False`` -> "loop" (torch's for-loop);
    ``fused=True`` -> a fused backend: "triton" when every tensor is on CUDA and the Triton
    kernels run there, else "torch_fused"; ``fused=False`` -> not fused ("foreach", or
    "loop" with ``foreach=False``); None -> no preference. They pick the backend only where
    ``backend="auto"``; an explicit backend that disagrees is a ValueError naming both.
    ``capturable=True`` (steps without host syncs, for CUDA graphs) is honoured by the
    Triton kernels on CUDA only; ``differentiable=True`` never (updates run under no_grad):
    both raise a ValueError where they cannot be honoured. ``tensors``: the parameters the
    optimizer is constructed with (their devices decide "triton" against "torch_fused").
    """
    check_backend(backend)
    for name, value in (("foreach", foreach), ("fused", fused)):
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{name} must be None, True or False, got {value!r}")
    if fused and foreach:  # torch.optim raises RuntimeError here
        raise ArgumentRuntimeError("fused=True and foreach=True cannot be used together "
                                   "(as in torch.optim)")
    if differentiable:  # (torch.optim raises RuntimeError for it with fused=True)
        raise (ArgumentRuntimeError if fused else ValueError)(
            f"differentiable=True cannot be honoured{' (nor with fused=True)' if fused else ''}"
            f": scaled_decay updates parameters in place under torch.no_grad(), so no "
            f"gradient flows through a step; use torch.optim with differentiable=True for that")
    all_cuda = bool(tensors) and all(t.is_cuda for t in tensors)
    wanted, choice = None, None
    if fused:
        wanted = FUSED_BACKENDS
        choice = "triton" if all_cuda and triton_available(tensors[0].device) else "torch_fused"
    elif foreach is not None:
        wanted = ("foreach",) if foreach else ("loop",)
        choice = wanted[0]
    elif fused is False:
        wanted, choice = ("foreach", "loop"), "foreach"
    if wanted is not None:
        given = ", ".join(f"{k}={v!r}" for k, v in (("foreach", foreach), ("fused", fused))
                          if v is not None)
        if backend != "auto" and backend not in wanted:
            raise ValueError(f"backend={backend!r} conflicts with {given} (which means "
                             f"backend {' or '.join(map(repr, wanted))})")
        if backend == "auto":
            backend = choice
    if backend == "torch_fused" and fused:  # torch checks this at construction too
        for t in tensors:
            if not torch_fused_supports(real_view(t)):
                raise RuntimeError(f"fused=True: torch has no fused optimizer kernel for "
                                   f"{t.dtype} tensors on {t.device}")
    if capturable:
        runs_triton = all_cuda and triton_available(tensors[0].device)
        if backend == "auto" and runs_triton:
            backend = "triton"
        if backend != "triton" or not runs_triton:
            raise ValueError(
                f"capturable=True cannot be honoured with backend={backend!r} on "
                f"{sorted({str(t.device) for t in tensors})}: only backend='triton' on CUDA "
                f"parameters steps without host syncs (CUDA graph capture)")
    return backend


def real_view(t):
    """``torch.view_as_real(t)`` for a dense complex tensor; anything else unchanged."""
    if t is not None and t.is_complex() and t.layout == torch.strided:
        return torch.view_as_real(t)
    return t


def real_views(lists: Sequence[Sequence]) -> List[list]:
    """Each list with complex tensors replaced by their real views (None kept).

    ``lists[0]`` holds the parameters: a real parameter's grad and state are real (a grad
    must have its parameter's dtype), so with no complex parameter nothing is checked further."""
    if not any(t.is_complex() for t in lists[0]):
        return [list(lst) for lst in lists]
    return [[real_view(t) for t in lst] for lst in lists]


def like_complex(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A state tensor the math made from real views, as the complex tensor ``p`` keeps it."""
    return torch.view_as_complex(t) if p.is_complex() and not t.is_complex() else t


def _is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor"


def torch_fused_supports(p: torch.Tensor) -> bool:
    """Whether torch has a fused optimizer kernel for tensors like ``p``."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    return (not _is_dtensor(p) and p.is_floating_point()
            and p.device.type in _get_fused_kernels_supported_devices())


def triton_unavailable_reason(device: torch.device):
    """Why ``scaled_decay.kernels`` cannot run on ``device`` (None when it can): Triton must
    import; CUDA devices need CUDA, CPU tensors Triton's interpreter (TRITON_INTERPRET=1)."""
    try:
        from scaled_decay import kernels
    except Exception as e:  # ImportError, or a Triton install that fails to load
        return f"Triton does not import ({type(e).__name__}: {e})"
    return kernels.unavailable_reason(device)


def triton_available(device: torch.device) -> bool:
    """Whether the package's Triton kernels can run on ``device``."""
    return triton_unavailable_reason(device) is None


def resolve_backend(requested: str, p: torch.Tensor) -> str:
    """The backend that runs for tensors like ``p``; explicit requests never fall back."""
    if requested == "auto":
        if torch.compiler.is_compiling():
            return "foreach"  # Inductor fuses the foreach math; fused kernels take no tensor lr
        if p.is_cuda and triton_available(p.device):
            return "triton"
        return "torch_fused" if torch_fused_supports(p) else "foreach"
    if requested == "torch_fused" and not torch_fused_supports(p):
        raise RuntimeError(
            f"backend='torch_fused': torch has no fused optimizer kernel for "
            f"{type(p).__name__} of dtype {p.dtype} on {p.device}; use backend='foreach'")
    if requested == "triton" and triton_unavailable_reason(p.device) is not None:
        raise RuntimeError(
            f"backend='triton': the Triton kernels cannot run on {p.device} "
            f"({triton_unavailable_reason(p.device)}); use backend='auto' or 'foreach'")
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


def apply_decoupled_decay(params: List[torch.Tensor], decay: Sequence[float],
                          found_inf=None) -> None:
    """``p *= 1 - c`` per tensor (SPEC step 2: multiply first, then the update).

    With GradScaler's ``found_inf`` (a device tensor) the factor is ``1`` where it is set,
    chosen on the device (no sync); the factor is the same fp32 number as the float path's.
    """
    keep = [1.0 - c for c in decay]
    # (under torch.compile the factors are tensors: no data-dependent skip there)
    if not torch.compiler.is_compiling() and not any(k != 1.0 for k in keep):
        return
    if found_inf is None:
        torch._foreach_mul_(params, keep)
        return
    for k, idx in indices_by(keep).items():
        device = params[idx[0]].device
        skip = found_inf.to(device, non_blocking=True) != 0
        factor = torch.where(skip, torch.ones((), device=device),
                             torch.tensor(k, dtype=torch.float32, device=device))
        torch._foreach_mul_([params[i] for i in idx], factor)


# ---- GradScaler (torch.amp) support for the backends that do not fuse it ---------------------
def found_inf_set(found_inf) -> bool:
    """Whether GradScaler found an inf/NaN (read on the host: one sync, as GradScaler's own
    ``step`` does for optimizers that cannot skip on the device)."""
    return found_inf is not None and bool(found_inf.item() != 0)


def unscale_grads_(grads: List[torch.Tensor], grad_scale) -> None:
    """``g *= float32(1 / scale)`` in place: GradScaler.unscale_'s own op and arithmetic
    (``torch._amp_foreach_non_finite_check_and_unscale_``), one call per (device, dtype)."""
    if grad_scale is None or not grads:
        return
    inv_scale = grad_scale.double().reciprocal().float()
    # a sparse grad is unscaled through its values (GradScaler.unscale_ does the same)
    grads = [g._values() if g.is_sparse else g for g in grads]
    for idx in batch_indices("foreach", grads):
        sub = [grads[i] for i in idx]
        device = sub[0].device
        torch._amp_foreach_non_finite_check_and_unscale_(
            sub, torch.zeros((), device=device), inv_scale.to(device))
