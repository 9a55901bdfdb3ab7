"""``sd.WeightDecayScheduler``: each param group's ``weight_decay`` along a curve of its own.

The weight decay gets a schedule separate from the lr's (pytorch/pytorch#22343; Megatron-LM's
``--start-weight-decay``/``--end-weight-decay`` with ``--weight-decay-incr-style``
constant / linear / cosine). At step ``t`` (the scheduler's ``last_epoch``, 0 before the first
``step()``), every group gets

    ``weight_decay = initial_weight_decay * factor(t)``

with ``initial_weight_decay`` the group's weight decay when the scheduler was made (recorded
in the group, as LR schedulers record ``initial_lr``), so a ``weight_decay=0`` group stays 0
and the groups keep their ratios. With ``r = min(t / total_steps, 1)``:

- ``"linear"``: ``factor = start_factor + (end_factor - start_factor) * r``;
- ``"cosine"``: ``factor = start_factor + (end_factor - start_factor) * (1 - cos(pi r)) / 2``
  (Megatron's cosine increment);
- ``"constant"``: ``factor = start_factor`` (= ``end_factor``: Megatron asserts the same);
- a callable ``t -> factor`` (or a list of them, one per group), as ``LambdaLR``.

Megatron's ``start_wd``/``end_wd`` are ``weight_decay=end_wd`` on the optimizer and
``start_factor=start_wd / end_wd``.

It changes only the group's ``weight_decay`` (a number, or a tensor filled in place), once per
group per step: sd's optimizers keep s(p) of every tensor in their cached plans and apply the
group's weight decay at run time, so a schedule step rebuilds nothing (a step plan is chosen
by whether the group decays at all: a factor that moves off or onto 0 selects the other plan,
built once and then kept too). It works with any ``torch.optim.Optimizer`` whose groups have
``weight_decay``. Call ``step()`` after ``optimizer.step()``, as an LR scheduler's, with any
lr scheduler alongside; it is a ``torch.optim.lr_scheduler.LRScheduler`` (so Lightning
steps it from ``configure_optimizers``, and ``ChainedScheduler([lr_sched, wd_sched])`` is the
one scheduler transformers' ``Trainer`` takes) that leaves the lr alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["CURVES", "WeightDecayScheduler"]

CURVES = ("constant", "linear", "cosine")

Schedule = str | Callable[[int], float] | Sequence[Callable[[int], float]]


def _factor_arg(name: str, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


class WeightDecayScheduler(LRScheduler):
    """Moves each param group's ``weight_decay`` to ``initial_weight_decay * factor(t)``.

    ``t`` is the scheduler's ``last_epoch``. With ``r = min(t / total_steps, 1)``,
    ``"linear"`` is ``factor = start_factor + (end_factor - start_factor) * r``, ``"cosine"``
    the same with ``(1 - cos(pi r)) / 2`` in place of ``r``, and ``"constant"``
    ``factor = start_factor`` (docs/schedules.md). Constructing it already writes
    each group's weight decay for ``t = last_epoch + 1`` (``t = 0`` for a new run), as
    torch's LR schedulers do; then call ``step()`` after each ``optimizer.step()``.

    ``state_dict()``/``load_state_dict()``: as LR schedulers' (callables are not saved);
    with the optimizer's state dict, a resumed run continues bit for bit.

    Args:
        optimizer: any ``torch.optim.Optimizer`` whose groups have a ``weight_decay``.
        schedule: ``"constant"``, ``"linear"``, ``"cosine"``, a callable ``t -> factor``, or
            a list of callables, one per param group.
        total_steps: steps over which the curve goes from ``start_factor`` to
            ``end_factor`` (``"linear"``/``"cosine"``; it stays at ``end_factor`` after).
        start_factor: the factor at ``t = 0``.
        end_factor: the factor at ``t >= total_steps``.
        last_epoch: ``-1`` for a new run (records ``initial_weight_decay`` in every group);
            the step to resume from otherwise (the groups must then have it), as torch's.

    Raises:
        TypeError: ``optimizer`` is not a ``torch.optim.Optimizer``.
        ValueError: ``start_factor`` or ``end_factor`` not a non-negative finite number;
            ``schedule`` none of the curves, a callable or a list of callables;
            ``"constant"`` with ``start_factor != end_factor``; ``"linear"``/``"cosine"``
            without a positive int ``total_steps``; a list of callables whose length is not
            the number of groups; ``last_epoch`` not an int >= -1; a group without
            ``weight_decay``; ``last_epoch != -1`` and a group without
            ``initial_weight_decay``; a factor that is negative or not finite (raised by
            ``step()``, the first of which runs here).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: Schedule = "linear",
        *,
        total_steps: int | None = None,
        start_factor: float = 1.0,
        end_factor: float = 1.0,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.start_factor = _factor_arg("start_factor", start_factor)
        self.end_factor = _factor_arg("end_factor", end_factor)
        groups = optimizer.param_groups
        self._fns: list[Callable] | None = None
        if isinstance(schedule, str):
            if schedule not in CURVES:
                raise ValueError(
                    f"schedule must be one of {CURVES} or a callable, got {schedule!r}"
                )
            if schedule == "constant" and self.start_factor != self.end_factor:
                raise ValueError(
                    f"schedule='constant' needs start_factor == end_factor, got "
                    f"start_factor={start_factor!r}, end_factor={end_factor!r}"
                )
            if schedule != "constant" and (
                isinstance(total_steps, bool)
                or not isinstance(total_steps, int)
                or total_steps <= 0
            ):
                raise ValueError(
                    f"schedule={schedule!r} needs total_steps, a positive int, got {total_steps!r}"
                )
        elif callable(schedule):
            self._fns = [schedule] * len(groups)
        elif isinstance(schedule, (list, tuple)) and all(map(callable, schedule)):
            if len(schedule) != len(groups):
                raise ValueError(
                    f"schedule: {len(schedule)} callables for {len(groups)} param groups"
                )
            self._fns = list(schedule)
        else:
            raise ValueError(
                f"schedule must be one of {CURVES}, a callable or a list of "
                f"callables, got {schedule!r}"
            )
        self.schedule = schedule if isinstance(schedule, str) else None
        self.total_steps = total_steps
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, int) or last_epoch < -1:
            raise ValueError(f"last_epoch must be an int >= -1, got {last_epoch!r}")
        for i, group in enumerate(groups):
            if "weight_decay" not in group:
                raise ValueError(f"param_groups[{i}] has no 'weight_decay' to schedule")
            if last_epoch == -1:
                wd = group["weight_decay"]
                group.setdefault(
                    "initial_weight_decay", wd.clone() if isinstance(wd, torch.Tensor) else wd
                )
            elif "initial_weight_decay" not in group:
                raise ValueError(
                    f"last_epoch={last_epoch}: param_groups[{i}] has no "
                    f"'initial_weight_decay' (load the optimizer's state dict "
                    f"first, or start with last_epoch=-1)"
                )
        self.optimizer = optimizer
        self.base_wds = [float(g["initial_weight_decay"]) for g in groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self.step()

    # ---- the curve ------------------------------------------------------------------------
    def factor(self, t: int, group_index: int = 0) -> float:
        """The factor of ``initial_weight_decay`` at step ``t``.

        Args:
            t: the step.
            group_index: the param group (it matters for a list of callables only).

        Returns:
            The factor (a callable's value as it returns it, converted to float).
        """
        if self._fns is not None:
            return float(self._fns[group_index](t))
        if self.schedule == "constant":
            return self.start_factor
        r = min(t / self.total_steps, 1.0)  # type: ignore[operator]  # set for every curve
        if self.schedule == "cosine":
            r = 0.5 * (1.0 - math.cos(math.pi * r))
        return self.start_factor + (self.end_factor - self.start_factor) * r

    def step(self) -> None:  # type: ignore[override]  # no ``epoch``: torch deprecated it
        """Advance one step and write each group's weight decay (after ``optimizer.step()``).

        A tensor ``weight_decay`` is filled in place (a captured CUDA graph reads it).

        Raises:
            ValueError: the factor of a group is negative or not finite.
        """
        self._step_count += 1
        self.last_epoch += 1
        t = self.last_epoch
        values = []
        for i, (group, base) in enumerate(zip(self.optimizer.param_groups, self.base_wds)):
            f = self.factor(t, i)
            if not (math.isfinite(f) and f >= 0):  # (a callable's value: checked per group)
                raise ValueError(
                    f"schedule factor at step {t} for param_groups[{i}] must be a "
                    f"non-negative finite number, got {f!r}"
                )
            wd = base * f
            if isinstance(group["weight_decay"], torch.Tensor):
                group["weight_decay"].fill_(wd)  # in place: a captured graph reads it
            else:
                group["weight_decay"] = wd
            values.append(wd)
        self._last_wd = values

    def get_last_wd(self) -> list[float]:
        """Each group's weight decay as the last ``step()`` set it.

        Returns:
            One float per param group.
        """
        return list(self._last_wd)

    def get_last_lr(self) -> list:
        """The groups' lr (unchanged by this scheduler), for code that asks any scheduler."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def get_lr(self) -> list:
        """The groups' lr, as ``get_last_lr()``: this scheduler does not change it."""
        return self.get_last_lr()

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything but the optimizer and callables (plain data, as ``LambdaLR`` keeps)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_fns")}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores the step count, curve and bases; the next ``step()`` continues the run."""
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "_fns"})
