"""sd.Adam and sd.AdamW: one update (``scaled_decay.updates.adam``), two sets of defaults."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .errors import ArgumentIndexError, ArgumentRuntimeError, ArgumentTypeError
from .group_keys import check_non_negative
from .optimizer import ScaledDecayOptimizer
from .timescale import DefaultDecay
from .updates import adam as adam_update

if TYPE_CHECKING:
    from torch.optim.optimizer import ParamsT

    from .rules import DecayScaling
    from .timescale import Timescale


class _AdamBase(ScaledDecayOptimizer):
    """Adam with scaled weight decay. ``sd.Adam`` and ``sd.AdamW`` differ only in defaults.

    Update: ``g = -g`` if maximize; decay by ``decay_mode`` (``"l2"``: ``g += lam*p``,
    Kingma & Ba 2015's Adam as in torch.optim.Adam; ``"decoupled"``: ``p *= 1 - lr*lam``,
    AdamW of Loshchilov & Hutter 2019; ``"independent"``/``"corrected"``: see
    ``scaled_decay.modes``); then ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g*g``
    (``vmax = max(vmax, v)`` used for v with amsgrad), and
    ``p -= (lr / (1 - b1**t)) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)``.
    ``lam = weight_decay * s(p)`` with ``s`` the product of the ``decay_scaling`` rules.
    ``timescale=T`` instead of ``weight_decay``: the weights' EMA timescale in steps (or an
    ``sd.Timescale``), from which each group's weight decay is derived at its peak lr
    (``scaled_decay.timescale``; Wang & Aitchison 2024).

    The update runs as ``scaled_decay.updates.adam`` says, on the backend each tensor's step
    plan chose (``backend``; ``scaled_decay.dispatch``).

    As torch.optim's Adam/AdamW: complex parameters are updated as their real view
    (``torch.view_as_real`` of param, grad and state: ``v`` holds ``re**2`` and ``im**2``
    apart); sparse gradients raise RuntimeError naming the parameter; ``foreach``,
    ``fused``, ``capturable``, ``differentiable`` choose the backend
    (``backends.backend_for_torch_kwargs``).

    Low precision (``scaled_decay.updates.low_precision``): ``low_precision="kahan"`` keeps a
    compensation buffer per bf16/fp16 weight through which the whole step (decay and update)
    is added, ``"stochastic"`` rounds the fp32 result up or down without bias (seeded from the
    optimizer state: a resumed run draws the same bits); None (default) rounds to nearest as
    torch.optim does, and warns once where the decay is then lost. ``state_dtype`` stores the
    moments in another dtype (e.g. ``torch.float32`` for bf16 weights).

    ``cautious_decay=True`` (Chen et al. 2025, arXiv 2510.12402): decay only the coordinates
    whose sign agrees with the update direction ``u = m_hat / (sqrt(v_hat) + eps)``,
    ``p <- p - lr * u - c * 1[u * p >= 0] * p``. Order: the moments and ``u`` first, then
    ``p *= 1 - c * mask``, then the update is added (``updates.decay_ops.apply_cautious_decay``;
    the decayed coordinates get the bits of the plain decay). Needs a multiplicative
    ``decay_mode`` ("l2" is a ValueError). Runs on loop/foreach/Triton, never on torch's fused
    op (the plan routes those tensors to foreach); ``decay_report()`` shows the fraction of
    coordinates decayed on the last step.

    Args:
        params: tensors, ``(name, tensor)`` pairs or group dicts (``sd.param_groups``).
        lr: the learning rate.
        betas: ``(b1, b2)``, the moments' EMA factors.
        eps: added to the denominator.
        amsgrad: use the running maximum of ``v``.
        weight_decay: the decay ``lam`` before scaling (``lam = weight_decay * s(p)``).
        maximize: maximize the objective (the gradient is negated).
        decay_mode: ``"decoupled"``, ``"independent"``, ``"corrected"`` or ``"l2"``
            (``sd.DECAY_MODES``; the update math is in ``scaled_decay.modes``).
        decay_scaling: the rules whose product is ``s(p)``: None, ``"fan_in"``,
            ``"param_count"``, a rule object (``sd.FanIn()``, ...) or a sequence of them.
        backend: ``"auto"``, ``"loop"``, ``"foreach"``, ``"torch_fused"`` or ``"triton"``.
        timescale: instead of ``weight_decay``: the weights' EMA timescale in steps, or an
            ``sd.Timescale``.
        low_precision: None, ``"kahan"`` or ``"stochastic"`` (bf16/fp16 weights).
        state_dtype: the dtype of the optimizer state (None: the parameter's).
        cautious_decay: decay only the coordinates the update also moves toward zero.
        foreach: as torch.optim's: True picks ``"foreach"``, False ``"loop"``.
        capturable: as torch.optim's: lr and step counts stay tensors on the device, so a
            step can be captured in a CUDA graph (Triton and foreach/loop; not torch_fused).
        differentiable: as torch.optim's; True is a ValueError (updates run under no_grad).
        fused: as torch.optim's: True picks a fused backend (``"triton"`` on CUDA, else
            ``"torch_fused"``).

    Raises:
        ValueError: a bad argument or group key, named with its value (with torch.optim's
            TypeError/IndexError/RuntimeError mixed in where torch raises those:
            ``scaled_decay.errors``), ``weight_decay`` and ``timescale`` both given, or a
            backend that conflicts with ``foreach``/``fused``.
    """

    _update = adam_update

    def __init__(
        self,
        params: ParamsT,
        lr: float | torch.Tensor,
        betas: tuple[float | torch.Tensor, float | torch.Tensor],
        eps: float,
        weight_decay: float,
        amsgrad: bool,
        maximize: bool,
        decay_mode: str,
        decay_scaling: DecayScaling,
        backend: str,
        timescale: float | Timescale | None,
        low_precision: str | None,
        state_dtype: torch.dtype | None,
        cautious_decay: bool,
        **torch_kwargs,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decay_mode=decay_mode,
            decay_scaling=decay_scaling,
            backend=backend,
            timescale=timescale,
            low_precision=low_precision,
            state_dtype=state_dtype,
            cautious_decay=cautious_decay,
        )
        super().__init__(params, defaults, **torch_kwargs)

    def _check_hparams(self, group: dict) -> None:
        check_non_negative("eps", group["eps"])
        betas = group["betas"]
        # (the exception types are torch.optim's for the same input, see errors.py)
        if not isinstance(betas, (tuple, list)):
            raise ArgumentTypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        if len(betas) != 2:
            error = ArgumentIndexError if len(betas) < 2 else ValueError
            raise error(f"betas must be a pair (beta1, beta2), got {betas!r}")
        for i, b in enumerate(betas):
            if isinstance(b, bool) or not isinstance(b, (int, float, torch.Tensor)):
                raise ArgumentTypeError(f"betas[{i}] must be a number in [0, 1), got {b!r}")
            if isinstance(b, torch.Tensor) and b.numel() != 1:
                raise ArgumentRuntimeError(f"betas[{i}] must be a number in [0, 1), got {b!r}")
            if not 0.0 <= float(b) < 1.0:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {b!r}")
        if not isinstance(group["amsgrad"], bool):
            raise ValueError(f"amsgrad must be a bool, got {group['amsgrad']!r}")


class Adam(_AdamBase):
    __doc__ = (
        (_AdamBase.__doc__ or "")
        + """
    Defaults as ``torch.optim.Adam``: ``weight_decay=0``, ``decay_mode="l2"``.
    """
    )

    def __init__(
        self,
        params: ParamsT,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float | torch.Tensor, float | torch.Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = DefaultDecay(0.0),
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decay_mode: str = "l2",
        decay_scaling: DecayScaling = None,
        backend: str = "auto",
        timescale: float | Timescale | None = None,
        low_precision: str | None = None,
        state_dtype: torch.dtype | None = None,
        cautious_decay: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize,
            decay_mode,
            decay_scaling,
            backend,
            timescale,
            low_precision,
            state_dtype,
            cautious_decay,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
        )


class AdamW(_AdamBase):
    __doc__ = (
        (_AdamBase.__doc__ or "")
        + """
    Defaults as ``torch.optim.AdamW``: ``weight_decay=1e-2``, ``decay_mode="decoupled"``.
    """
    )

    def __init__(
        self,
        params: ParamsT,
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float | torch.Tensor, float | torch.Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = DefaultDecay(1e-2),
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decay_mode: str = "decoupled",
        decay_scaling: DecayScaling = None,
        backend: str = "auto",
        timescale: float | Timescale | None = None,
        low_precision: str | None = None,
        state_dtype: torch.dtype | None = None,
        cautious_decay: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize,
            decay_mode,
            decay_scaling,
            backend,
            timescale,
            low_precision,
            state_dtype,
            cautious_decay,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
        )
