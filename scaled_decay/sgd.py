"""sd.SGD: torch.optim.SGD with decoupled, per-tensor scaled weight decay
(the update: ``scaled_decay.updates.sgd``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .group_keys import check_non_negative
from .optimizer import ScaledDecayOptimizer
from .timescale import DefaultDecay
from .updates import sgd as sgd_update

if TYPE_CHECKING:
    from torch.optim.optimizer import ParamsT

    from .rules import DecayScaling
    from .timescale import Timescale


class SGD(ScaledDecayOptimizer):
    """Stochastic gradient descent (optionally with momentum) with scaled weight decay.

    Update: ``g = -g`` if maximize; decay by ``decay_mode`` (``"decoupled"`` default:
    ``p *= 1 - lr * lam``, i.e. SGDW of Loshchilov & Hutter 2019; ``"l2"``: ``g += lam * p``,
    which with ``decay_scaling=None`` is ``torch.optim.SGD`` step for step); then momentum
    ``buf = mu * buf + (1 - dampening) * g`` (``buf = g`` at the first step), ``d = g + mu*buf``
    if nesterov else ``buf``, and ``p -= lr * d``. ``lam = weight_decay * s(p)`` with ``s`` the
    product of the ``decay_scaling`` rules. ``timescale=T`` instead of ``weight_decay``: the
    weights' EMA timescale in steps (or an ``sd.Timescale``), from which each group's weight
    decay is derived at its peak lr (``scaled_decay.timescale``; Wang & Aitchison 2024).

    As torch.optim.SGD: ``foreach``/``fused``/``differentiable`` choose the backend
    (``backends.backend_for_torch_kwargs``); sparse gradients (``nn.Embedding(sparse=True)``)
    are taken, one tensor at a time with torch's numerics; coupled decay (``"l2"``) with a
    non-zero ``lam`` refuses them (RuntimeError) as torch does, while the multiplicative modes
    scale the whole parameter (``p *= 1 - c``: a dense pass) before the sparse update.
    Complex parameters are updated in complex arithmetic, as torch.optim.SGD does (it takes
    no real view, unlike Adam), by the ``loop`` and ``foreach`` backends; the fused backends
    update their real views (the same math, rounded differently: within 1 ulp).

    ``low_precision`` (None, ``"kahan"``, ``"stochastic"``) keeps the decay and update of
    bf16/fp16 weights that rounding to nearest would drop; ``state_dtype`` stores the momentum
    buffer in another dtype (``scaled_decay.updates.low_precision``).

    ``cautious_decay=True`` (Chen et al. 2025, arXiv 2510.12402): decay only the coordinates
    whose sign agrees with the momentum-applied step ``d``:
    ``p <- p - lr * d - c * 1[d * p >= 0] * p``. Order: ``d`` first, then
    ``p *= 1 - c * mask``, then ``p -= lr * d``
    (``updates.decay_ops.apply_cautious_decay``). Needs a multiplicative ``decay_mode`` ("l2"
    is a ValueError); never runs on torch's fused op (the plan routes those tensors to
    foreach). Complex params: each real component is masked on its own. ``decay_report()``
    shows the fraction of coordinates decayed on the last step.

    Args:
        params: tensors, ``(name, tensor)`` pairs or group dicts (``sd.param_groups``).
        lr: the learning rate.
        momentum: the momentum factor ``mu``.
        dampening: dampening of the momentum.
        nesterov: Nesterov momentum.
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
        foreach: as torch.optim.SGD's: True picks ``"foreach"``, False ``"loop"``.
        differentiable: as torch.optim.SGD's; True is a ValueError (updates run under
            no_grad).
        fused: as torch.optim.SGD's: True picks a fused backend (``"triton"`` on CUDA, else
            ``"torch_fused"``).

    Raises:
        ValueError: a bad argument or group key, named with its value (with torch.optim's
            TypeError/IndexError/RuntimeError mixed in where torch raises those:
            ``scaled_decay.errors``), ``weight_decay`` and ``timescale`` both given, or a
            backend that conflicts with ``foreach``/``fused``.
    """

    _sparse_grads_ok = True
    _update = sgd_update

    def __init__(
        self,
        params: ParamsT,
        lr: float | torch.Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = DefaultDecay(0.0),
        nesterov: bool = False,
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
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            decay_mode=decay_mode,
            decay_scaling=decay_scaling,
            backend=backend,
            timescale=timescale,
            low_precision=low_precision,
            state_dtype=state_dtype,
            cautious_decay=cautious_decay,
        )
        super().__init__(
            params, defaults, foreach=foreach, fused=fused, differentiable=differentiable
        )

    def _check_hparams(self, group: dict) -> None:
        check_non_negative("momentum", group["momentum"])
        check_non_negative("dampening", group["dampening"])
        if not isinstance(group["nesterov"], bool):
            raise ValueError(f"nesterov must be a bool, got {group['nesterov']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"nesterov=True requires momentum > 0 and dampening = 0, got "
                f"momentum={group['momentum']!r}, dampening={group['dampening']!r}"
            )

    def _l2_decay_factor(self, group: dict, lam: float) -> float | None:
        return 1.0 - float(group["lr"]) * lam

    def _check_sparse(self, group: dict, positions, grads) -> None:
        """torch.optim.SGD: ``grad.add(param)`` fails for a sparse grad, so coupled decay
        refuses them; the multiplicative modes scale the whole param first."""
        if group["decay_mode"] != "l2" or group["weight_decay"] == 0:
            return
        for i, g in zip(positions, grads):
            if g.is_sparse:
                raise RuntimeError(
                    f"SGD: decay_mode='l2' with weight decay {group['weight_decay']!r} cannot "
                    f"take the sparse gradient of parameter {self._param_label(group, i)}, as "
                    f"torch.optim.SGD cannot; use a multiplicative decay_mode or put it in a "
                    f"group with weight_decay=0"
                )
