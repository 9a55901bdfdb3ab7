"""``timescale=`` instead of ``weight_decay=``: say the EMA timescale, get the weight decay.

Wang & Aitchison 2024, "How to set AdamW's weight decay as you scale model and dataset size"
(arXiv 2405.13698): with decoupled decay the weights are an exponential moving average of
recent updates, with timescale ``tau_iter = 1 / (eta * lam)`` steps; what transfers across
model and data size is ``tau_epoch = tau_iter / M`` (M = steps per epoch), not ``lam``.
``timescale=T`` (in steps, or an :class:`Timescale`) sets each group's ``weight_decay`` so
that one step at the group's peak lr ``eta0`` shrinks a tensor with ``s(p) = 1`` by ``1/T``:

- ``decay_mode="decoupled"``, ``"corrected"``: ``weight_decay = 1 / (eta0 * T)``
  (``c = eta * lam``, or ``eta**2 / eta0 * lam``: both ``eta0 * lam`` at the peak);
- ``"independent"``: ``weight_decay = 1 / T`` (``c = (eta / eta0) * lam``);
- ``"l2"``: a ValueError (a coupled penalty goes through the optimizer's momentum and
  preconditioner: it has no timescale of its own).

A tensor with scale ``s(p)`` then has timescale ``T / s(p)`` (``decay_report()``'s
``timescale`` column). ``eta0`` is the group's peak lr when the group is made: its
``max_lr``, ``peak_lr`` or ``initial_lr`` if it has one, else its ``lr`` (build the optimizer
at the schedule's peak). The weight decay is derived once, then is a plain group value:
schedulers (``sd.WeightDecayScheduler``), state dicts and reports see a number; the group
keeps ``timescale`` (in steps) as a record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .modes import decay_lr_factor

__all__ = ["DefaultDecay", "Timescale", "timescale_steps"]


def _positive(name: str, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Timescale:
    """An EMA timescale of the weights, in one of three units (give exactly one form).

    - ``Timescale(steps=T)``: ``T`` optimizer steps (the same as ``timescale=T``);
    - ``Timescale(epochs=E, steps_per_epoch=M)``: ``E * M`` steps; ``tau_epoch`` of Wang &
      Aitchison 2024, the form that transfers across dataset sizes (their optimum is a
      fraction of an epoch to a few epochs, depending on the run);
    - ``Timescale(fraction=F, total_steps=N)``: ``F * N`` steps, a fraction of the run.

    Pass it as ``timescale=`` (to an optimizer or ``sd.param_groups``): each group's
    ``weight_decay`` is then derived so that one step at the group's peak lr ``eta0`` shrinks
    a tensor with ``s(p) = 1`` by ``1/T``: ``1 / (eta0 * T)`` for ``decay_mode="decoupled"``
    and ``"corrected"``, ``1 / T`` for ``"independent"``; with ``"l2"`` the optimizer raises
    ValueError (a coupled penalty has no timescale of its own). Wang & Aitchison 2024, arXiv
    2405.13698; docs/schedules.md.

    Args:
        steps: the timescale in optimizer steps.
        epochs: the timescale in epochs (with ``steps_per_epoch``).
        steps_per_epoch: optimizer steps per epoch (with ``epochs``).
        fraction: the timescale as a fraction of the run (with ``total_steps``).
        total_steps: optimizer steps in the run (with ``fraction``).

    Raises:
        ValueError: not exactly one of the three forms, or one given incompletely; a value
            given that is not a positive finite number.
    """

    steps: float | None = None
    epochs: float | None = None
    steps_per_epoch: float | None = None
    fraction: float | None = None
    total_steps: float | None = None

    def __post_init__(self):
        forms = [
            self.steps is not None,
            self.epochs is not None or self.steps_per_epoch is not None,
            self.fraction is not None or self.total_steps is not None,
        ]
        if sum(forms) != 1:
            raise ValueError(
                f"Timescale needs exactly one of steps=, epochs= with steps_per_epoch=, or "
                f"fraction= with total_steps=; got {self!r}"
            )
        for name in ("steps", "epochs", "steps_per_epoch", "fraction", "total_steps"):
            if getattr(self, name) is not None:
                _positive(f"Timescale {name}", getattr(self, name))
        if forms[1] and (self.epochs is None or self.steps_per_epoch is None):
            raise ValueError(
                f"Timescale in epochs needs both epochs= and steps_per_epoch=, got {self!r}"
            )
        if forms[2] and (self.fraction is None or self.total_steps is None):
            raise ValueError(
                f"Timescale as a fraction of the run needs both fraction= and "
                f"total_steps=, got {self!r}"
            )

    @property
    def in_steps(self) -> float:
        """The timescale in optimizer steps: ``steps``, ``epochs * steps_per_epoch`` or
        ``fraction * total_steps``."""
        if self.steps is not None:
            return float(self.steps)
        # __post_init__ allows exactly one complete form
        if self.epochs is not None and self.steps_per_epoch is not None:
            return float(self.epochs * self.steps_per_epoch)
        assert self.fraction is not None and self.total_steps is not None
        return float(self.fraction * self.total_steps)


def timescale_steps(timescale) -> float:
    """``timescale`` (a positive number of steps or a :class:`Timescale`) in steps."""
    if isinstance(timescale, Timescale):
        return timescale.in_steps
    return _positive("timescale", timescale)


class DefaultDecay(float):
    """The ``weight_decay`` default of a signature: a float that says it was not given, so
    ``timescale=`` next to it is no conflict (``repr`` is the plain number's)."""

    def __repr__(self) -> str:
        return float.__repr__(self)


def check_arguments(weight_decay, timescale):
    """The constructor's ``weight_decay`` as a plain value; ValueError if both are given."""
    given = not isinstance(weight_decay, DefaultDecay)
    if timescale is not None:
        timescale_steps(timescale)  # bad values fail here, naming timescale
        if given:
            raise ValueError(
                f"timescale={timescale!r} and weight_decay={weight_decay!r} were "
                f"both given: give one (timescale sets weight_decay)"
            )
    return float(weight_decay) if isinstance(weight_decay, DefaultDecay) else weight_decay


def claim(group: dict, default) -> dict:
    """Before a group takes the defaults: its own ``weight_decay`` and ``timescale`` together
    are a ValueError; a group with its own ``weight_decay`` does not take a default
    timescale (e.g. ``sd.param_groups``' ``weight_decay=0`` group). Idempotent."""
    own = group.get("timescale")
    if own is not None and _derived_here(group):
        del group["weight_decay"]  # a group dict reused from another optimizer: derive anew
    if own is not None and group.get("weight_decay") is not None:
        raise ValueError(
            f"param group has both timescale={own!r} and weight_decay="
            f"{group['weight_decay']!r}: give one (timescale sets weight_decay)"
        )
    if "timescale" not in group:
        group["timescale"] = None if "weight_decay" in group else default
    return group


def _derived_here(group: dict) -> bool:
    """Whether the group's ``weight_decay`` is the one ``derive_weight_decay`` set from its
    ``timescale`` (the group went through an optimizer already), not one the user gave."""
    if "decay_mode" not in group or group.get("weight_decay") is None or "lr" not in group:
        return False
    try:
        again = dict(group)
        derive_weight_decay(again)
    except (ValueError, TypeError):
        return False
    return again["weight_decay"] == group["weight_decay"]


def derive_weight_decay(group: dict) -> None:
    """Set ``group["weight_decay"]`` from its ``timescale`` (module docstring), once, and
    record the timescale in steps. No-op for a group without one."""
    ts = group.get("timescale")
    if ts is None:
        return
    steps = timescale_steps(ts)
    mode = group["decay_mode"]
    if mode == "l2":
        raise ValueError(
            f"timescale={ts!r} with decay_mode='l2': a coupled penalty has no "
            f"timescale of its own; use a multiplicative decay_mode"
        )
    for key in ("max_lr", "peak_lr", "initial_lr", "lr"):
        if key in group:
            eta0 = float(group[key])
            break
    if not eta0 > 0:
        raise ValueError(
            f"timescale={ts!r} derives weight_decay from the peak lr, which is "
            f"{key} = {eta0!r}: it must be positive"
        )
    group["weight_decay"] = 1.0 / (decay_lr_factor(mode, eta0, eta0) * steps)
    group["timescale"] = steps
