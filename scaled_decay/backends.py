"""Which backend runs a tensor: the names, torch.optim's keyword arguments, availability.

The update math of each optimizer is written once (``scaled_decay.updates``), with
``torch._foreach_*`` ops over lists. ``"loop"`` calls it one tensor at a time (the readable
reference), ``"foreach"`` once per (device, dtype) batch; ``"torch_fused"`` hands the same
lists to torch's own fused kernels; ``"triton"`` to the package's kernels. A step plan
(``scaled_decay.step_plan``) asks ``resolve_backend`` once per tensor when it is built.

Complex parameters reach Adam's backends, and the fused backends of SGD, as their real view
(``torch.view_as_real`` of the param, its grad and its state): ``real_view``. torch.optim
does the same for Adam; its SGD computes in complex arithmetic, as sd.SGD's loop and foreach.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import ArgumentRuntimeError

BACKENDS = ("auto", "triton", "torch_fused", "foreach", "loop")


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


FUSED_BACKENDS = ("triton", "torch_fused")


def backend_for_torch_kwargs(
    backend: str,
    tensors: Sequence[torch.Tensor],
    *,
    foreach=None,
    fused=None,
    capturable=False,
    differentiable=False,
) -> str:
    """``backend`` with torch.optim's execution kwargs applied (torch's meaning).

    ``foreach=True`` -> "foreach"; ``foreach=False`` -> "loop" (torch's for-loop);
    ``fused=True`` -> a fused backend: "triton" when every tensor is on CUDA and the Triton
    kernels run there, else "torch_fused"; ``fused=False`` -> not fused ("foreach", or
    "loop" with ``foreach=False``); None -> no preference. They pick the backend only where
    ``backend="auto"``; an explicit backend that disagrees is a ValueError naming both.
    ``capturable=True`` (steps without host syncs, for CUDA graph capture) is honoured by the
    Triton kernels and by the foreach/loop math in its tensor form (lr and step counts stay
    tensors); not by "torch_fused", whose guard probes on the host (a ValueError);
    ``differentiable=True`` never (updates run under no_grad): a ValueError. ``tensors``: the
    parameters the optimizer is constructed with (their devices decide "triton" against
    "torch_fused").
    """
    check_backend(backend)
    for name, value in (("foreach", foreach), ("fused", fused)):
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{name} must be None, True or False, got {value!r}")
    if fused and foreach:  # torch.optim raises RuntimeError here
        raise ArgumentRuntimeError(
            "fused=True and foreach=True cannot be used together (as in torch.optim)"
        )
    if differentiable:  # (torch.optim raises RuntimeError for it with fused=True)
        raise (ArgumentRuntimeError if fused else ValueError)(
            f"differentiable=True cannot be honoured{' (nor with fused=True)' if fused else ''}"
            f": scaled_decay updates parameters in place under torch.no_grad(), so no "
            f"gradient flows through a step; use torch.optim with differentiable=True for that"
        )
    all_cuda = bool(tensors) and all(t.is_cuda for t in tensors)
    wanted: tuple[str, ...] | None = None
    choice: str | None = None
    if fused:
        wanted = FUSED_BACKENDS
        choice = "triton" if all_cuda and triton_available(tensors[0].device) else "torch_fused"
    elif foreach is not None:
        wanted = ("foreach",) if foreach else ("loop",)
        choice = wanted[0]
    elif fused is False:
        wanted, choice = ("foreach", "loop"), "foreach"
    if wanted is not None:
        given = ", ".join(
            f"{k}={v!r}" for k, v in (("foreach", foreach), ("fused", fused)) if v is not None
        )
        if backend != "auto" and backend not in wanted:
            raise ValueError(
                f"backend={backend!r} conflicts with {given} (which means "
                f"backend {' or '.join(map(repr, wanted))})"
            )
        if backend == "auto":
            backend = choice  # type: ignore[assignment]  # set wherever wanted is
    if backend == "torch_fused" and fused:  # torch checks this at construction too
        for t in tensors:
            if not torch_fused_supports(real_view(t)):
                raise RuntimeError(
                    f"fused=True: torch has no fused optimizer kernel for "
                    f"{t.dtype} tensors on {t.device}"
                )
    if capturable and backend == "torch_fused":
        raise ValueError(
            "capturable=True cannot be honoured with backend='torch_fused': its guard checks "
            "torch's fused ops on the host; use backend='auto', 'triton' or 'foreach'"
        )
    return backend


def real_view(t):
    """``torch.view_as_real(t)`` for a dense complex tensor; anything else unchanged."""
    if t is not None and t.is_complex() and t.layout == torch.strided:
        return torch.view_as_real(t)
    return t


def like_complex(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A state tensor the math made from real views, as the complex tensor ``p`` keeps it."""
    return torch.view_as_complex(t) if p.is_complex() and not t.is_complex() else t


def _is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor"


def torch_fused_supports(p: torch.Tensor) -> bool:
    """Whether torch has a fused optimizer kernel for tensors like ``p``."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return (
        not _is_dtensor(p)
        and p.is_floating_point()
        and p.device.type in _get_fused_kernels_supported_devices()
    )


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


def triton_package(device: torch.device):
    """The kernels package whose launchers run on ``device`` (its interpreted copy on CPU)."""
    from scaled_decay import kernels

    return kernels.package_for(device)


def resolve_backend(requested: str, p: torch.Tensor, capturable: bool = False) -> str:
    """The backend that runs for tensors like ``p``; explicit requests never fall back.
    ``capturable``: "auto" never picks "torch_fused" (see ``backend_for_torch_kwargs``)."""
    if requested == "auto":
        if torch.compiler.is_compiling():
            return "foreach"  # Inductor fuses the foreach math; fused kernels take no tensor lr
        if p.is_cuda and triton_available(p.device):
            return "triton"
        if capturable:
            return "foreach"
        return "torch_fused" if torch_fused_supports(p) else "foreach"
    if requested == "torch_fused" and not torch_fused_supports(p):
        raise RuntimeError(
            f"backend='torch_fused': torch has no fused optimizer kernel for "
            f"{type(p).__name__} of dtype {p.dtype} on {p.device}; use backend='foreach'"
        )
    if requested == "triton" and triton_unavailable_reason(p.device) is not None:
        raise RuntimeError(
            f"backend='triton': the Triton kernels cannot run on {p.device} "
            f"({triton_unavailable_reason(p.device)}); use backend='auto' or 'foreach'"
        )
    return requested
