"""Decay modes: how the effective decay ``lam`` of a tensor enters one step.

- ``"l2"``: coupled, ``g = g + lam * p`` (torch SGD/Adam ``weight_decay``).
- ``"decoupled"``: ``p = p * (1 - lr * lam)`` before the update (torch AdamW; SGDW,
  Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization").
- ``"independent"``: ``p = p * (1 - (lr / eta0) * lam)``: the schedule multiplier of
  Loshchilov & Hutter, so ``lam`` is the fraction removed per step at the peak lr,
  whatever the lr's magnitude (Wang & Aitchison 2024: the weights are an EMA with
  timescale ``1/lam`` steps).
- ``"corrected"``: ``p = p * (1 - (lr**2 / eta0) * lam)`` (AdamC/SGDC, Defazio et al.
  2025, "Why gradients rapidly increase near the end of training").

``eta0`` is the peak lr of the schedule (``plan.peak_lr``): the group's ``max_lr`` where a
scheduler keeps one (OneCycleLR), else its ``peak_lr`` (the lr at construction). It is
not ``initial_lr``: OneCycleLR overwrites that with ``max_lr / div_factor``, and warmups
start below the peak.
"""

from __future__ import annotations

DECAY_MODES = ("decoupled", "independent", "corrected", "l2")
"""The values ``decay_mode`` takes. With ``c`` the fraction of ``p`` removed per step:
``"decoupled"`` ``c = lr * lam``; ``"independent"`` ``c = (lr / eta0) * lam``;
``"corrected"`` ``c = (lr**2 / eta0) * lam``; ``"l2"`` adds ``lam * p`` to the gradient
instead. ``eta0`` is the schedule's peak lr. Defaults: ``"l2"`` for ``sd.Adam`` (as
torch.optim.Adam), ``"decoupled"`` for the others. Any other value is a ValueError naming
it. See docs/decay-modes.md."""
PEAK_LR_MODES = ("independent", "corrected")  # the modes that divide by eta0


def check_decay_mode(mode) -> str:
    if mode not in DECAY_MODES:
        raise ValueError(f"decay_mode must be one of {DECAY_MODES}, got {mode!r}")
    return mode


def decay_lr_factor(mode: str, lr: float, eta0: float) -> float:
    """The factor ``f`` with ``c = f * lam`` for a multiplicative mode (``p *= 1 - c``).

    ``"l2"`` has no multiplicative decay and returns 0.
    """
    if mode == "decoupled":
        return lr
    if mode == "independent":
        return lr / eta0
    if mode == "corrected":
        return lr * lr / eta0
    return 0.0
