"""``sd.with_scaled_decay(OptimizerClass)``: this package's decay for any torch optimizer.

The returned class subclasses the given ``torch.optim.Optimizer`` subclass (RAdam, NAdam,
Adagrad, Muon, a third-party one...). It takes the package's ``weight_decay`` (or
``timescale``, ``scaled_decay.timescale``), ``decay_mode`` and ``decay_scaling`` (per group
too, with ``sd.param_groups`` metadata) and has ``decay_report()``. Each step, for every
parameter with a gradient, with ``lam = weight_decay * s(p)`` from the one decay plan
(``scaled_decay.decay_plan``):

- modes ``"decoupled"``, ``"independent"``, ``"corrected"``: ``p *= 1 - c`` first
  (``updates.decay_ops.apply_decoupled_decay``), then the wrapped optimizer's own update;
- mode ``"l2"``: the wrapped optimizer steps on ``g + lam * p`` (``g - lam * p`` for a group
  with ``maximize=True``, which the optimizer negates) - exactly the op torch's optimizers
  use for their own coupled ``weight_decay``; ``p.grad`` is the user's tensor again after.
  Supported rather than refused: it is the only way to give RAdam, Adagrad... a per-tensor
  scaled coupled penalty, it needs only that ``step()`` reads ``p.grad``, and without rules
  it is the wrapped optimizer's own ``weight_decay`` bit for bit (tested).
- ``cautious_decay=True`` (multiplicative modes only): the decay follows the wrapped step,
  on the coordinates where ``u = (p_before - p_after) / lr`` agrees in sign with
  ``p_before`` (``scaled_decay.cautious_wrap``; costs a copy of those params during the
  step).

GradScaler: where it unscales the grads itself, a step with inf/NaN is never called, so it
never decays; optimizers that unscale themselves (``_step_supports_amp_scaling``, torch's
fused ones) get ``found_inf`` on the device and the decay multiplies by 1 there.

The wrapped optimizer's own decay is held at 0: its ``weight_decay`` reads 0 while it steps
(``group["weight_decay"]`` is the package's, so schedulers and state dicts see one value);
``decoupled_weight_decay=True`` or a nonzero ``own_decay`` hyperparameter is a ValueError.
"""

from __future__ import annotations

import copyreg
import functools
import inspect

import torch
from torch.optim import Optimizer

from . import cautious_wrap as CW
from . import distributed as D
from . import timescale as T
from . import wrap_low_precision as WL
from .group_keys import check_decay_group
from .optimizer import ScaledDecayOptimizer
from .owner import DecayPlanOwner
from .updates import low_precision as LP
from .updates.decay_ops import (
    add_decay_to_grads,
    apply_decoupled_decay,
    decay_from_lists,
    indices_by,
)

__all__ = ["with_scaled_decay"]

_NO_DEFAULT = object()
# Group flags that only configure the wrapped optimizer's own decay (held off): a true value
# asks for a second decay, or one whose form decay_mode already chose.
_OWN_DECAY_FLAGS = ("decoupled_weight_decay",)
# Flags the package cannot honour: the decay runs under no_grad, and its amount is computed
# on the host each step (a CUDA graph would freeze it).
_UNSUPPORTED_FLAGS = {
    "differentiable": "the package's decay is applied under torch.no_grad()",
    "capturable": "the decay amount is computed on the host each step (CUDA graphs would "
    "freeze it)",
}
# Optimizers whose step is not "one update from the current gradient".
_REFUSED = {
    torch.optim.LBFGS: "it evaluates the closure many times per step and its line search "
    "would not see the decay; add an L2 term to the loss instead",
}


def with_scaled_decay(
    optimizer_class: type[Optimizer], *, own_decay: str | None = "weight_decay"
) -> type[Optimizer]:
    """A subclass of ``optimizer_class`` with this package's per-tensor scaled decay.

    ``own_decay`` names the wrapped optimizer's own weight-decay hyperparameter (held at 0),
    or None if it has none. The same class comes back for the same arguments, so instances
    pickle and compare by type.

    Args:
        optimizer_class: a ``torch.optim.Optimizer`` subclass.
        own_decay: the name of its own weight-decay hyperparameter, or None.

    Returns:
        The subclass; its constructor takes the class's own arguments plus
        ``weight_decay``, ``decay_mode``, ``decay_scaling``, ``timescale``, ``low_precision``
        and ``cautious_decay``.

    Raises:
        TypeError: ``optimizer_class`` is not a ``torch.optim.Optimizer`` subclass.
        ValueError: ``own_decay`` is not a string or None, the class already has the
            package's decay, or it is one the package cannot decay correctly.
    """
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
        raise TypeError(
            f"with_scaled_decay needs a torch.optim.Optimizer subclass, got {optimizer_class!r}"
        )
    if own_decay is not None and not isinstance(own_decay, str):
        raise ValueError(f"own_decay must be a hyperparameter name or None, got {own_decay!r}")
    return _make_class(optimizer_class, own_decay)  # type: ignore[arg-type]  # classes hash


@functools.cache
def _make_class(optimizer_class: type, own_decay):
    if issubclass(optimizer_class, (ScaledDecayMixin, ScaledDecayOptimizer)):
        raise ValueError(f"{optimizer_class.__name__} already has the package's decay")
    for refused, why in _REFUSED.items():
        if issubclass(optimizer_class, refused):
            raise ValueError(f"with_scaled_decay({optimizer_class.__name__}): {why}")
    sig = inspect.signature(optimizer_class)
    holds = own_decay if own_decay in sig.parameters else None
    name = f"ScaledDecay{optimizer_class.__name__}"
    cls = type(
        name,
        (ScaledDecayMixin, optimizer_class),
        {
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"``{optimizer_class.__module__}.{optimizer_class.__qualname__}`` with the "
            f"package's scaled decay (see ``scaled_decay.wrap``).",
            "_sd_wrapped": optimizer_class,
            "_sd_own_decay": own_decay,
            "_sd_holds": holds,
            "_sd_signature": sig,
        },
    )
    return cls


def _rebuild(optimizer_class: type, own_decay, state: dict):
    """Unpickling: the class is rebuilt from the wrapped one, then the state set."""
    cls = with_scaled_decay(optimizer_class, own_decay=own_decay)
    obj = cls.__new__(cls)
    obj.__setstate__(state)
    return obj


def _unhooked(step):
    """``step`` without torch's profiling/hook wrapper (it is on the subclass already: the
    wrapped class's own wrapper would run every step hook a second time)."""
    return step.__wrapped__ if getattr(step, "hooked", False) else step


class ScaledDecayMixin(DecayPlanOwner):
    """The methods ``with_scaled_decay`` puts in front of the wrapped optimizer's."""

    _sd_wrapped: type
    _sd_own_decay = None
    _sd_holds = None  # the wrapped constructor's decay argument we set to 0
    _sd_signature: inspect.Signature
    _sd_defaults: dict  # set in __init__ and __setstate__

    def __init__(
        self,
        params,
        *args,
        weight_decay=_NO_DEFAULT,
        decay_mode="decoupled",
        decay_scaling=None,
        timescale=None,
        low_precision=None,
        cautious_decay=False,
        **kwargs,
    ):
        try:
            bound = self._sd_signature.bind_partial(params, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{type(self).__name__}: {e}") from None
        if "weight_decay" in bound.arguments:  # given positionally, in the wrapped position
            if weight_decay is not _NO_DEFAULT:
                raise TypeError(f"{type(self).__name__}: got multiple values for weight_decay")
            weight_decay = bound.arguments.pop("weight_decay")
        if timescale is not None:  # (the groups' weight decay comes from it)
            T.check_arguments(
                T.DefaultDecay(0.0) if weight_decay is _NO_DEFAULT else weight_decay, timescale
            )
            weight_decay = 0.0
        if weight_decay is _NO_DEFAULT:  # the wrapped class's default (Muon: 0.1), else 0
            p = self._sd_signature.parameters.get(self._sd_holds or "")
            weight_decay = (
                p.default
                if self._sd_holds == "weight_decay" and p.default is not inspect.Parameter.empty
                else 0.0
            )
        if self._sd_holds is not None and (
            self._sd_holds == "weight_decay" or self._sd_holds not in bound.arguments
        ):
            bound.arguments[self._sd_holds] = 0.0  # else a nonzero value is refused below
        self.__dict__["_sd_defaults"] = dict(
            weight_decay=weight_decay,
            decay_mode=decay_mode,
            decay_scaling=decay_scaling,
            timescale=timescale,
            low_precision=low_precision,
            cautious_decay=cautious_decay,
        )
        super().__init__(*bound.args, **bound.kwargs)
        self.defaults.update(self._sd_defaults)
        self._new_plan()
        self._plan.scales(self.param_groups)  # rule errors now, not at the first step

    # ---- groups ---------------------------------------------------------------------------
    def _check_group(self, group: dict) -> None:
        if "lr" not in group:
            raise ValueError(
                f"{type(self).__name__}: the package's decay needs an 'lr' "
                f"group key, which {self._sd_wrapped.__name__} does not have"
            )
        check_decay_group(group)
        LP.check_keys(group)
        if group.get("state_dtype") is not None:
            raise ValueError(
                f"state_dtype={group['state_dtype']!r} is not taken by "
                f"with_scaled_decay: the wrapped optimizer makes its own state "
                f"(fp32 for the bf16/fp16 params of a low_precision group)"
            )
        own = self._sd_own_decay
        if own not in (None, "weight_decay") and group.get(own, 0) != 0:
            raise ValueError(
                f"{own}={group[own]!r}: {self._sd_wrapped.__name__}'s own weight decay and "
                f"the package's weight_decay were both given; use weight_decay, decay_mode "
                f"and decay_scaling only"
            )
        for flag in _OWN_DECAY_FLAGS:
            if group.get(flag):
                raise ValueError(
                    f"{flag}={group[flag]!r}: {self._sd_wrapped.__name__}'s own decay is off "
                    f"under with_scaled_decay; choose the form with decay_mode (got "
                    f"{group['decay_mode']!r})"
                )
        for flag, why in _UNSUPPORTED_FLAGS.items():
            if group.get(flag):
                raise ValueError(f"{flag}=True is not supported by with_scaled_decay: {why}")
        for rule in group["decay_scaling"]:
            check = getattr(rule, "check_group", None)
            if check is not None:
                check(group)

    def add_param_group(self, param_group: dict) -> None:
        defaults = self.__dict__["_sd_defaults"]
        param_group = T.claim(dict(param_group), defaults["timescale"])
        for key, value in defaults.items():
            if key != "weight_decay" or param_group["timescale"] is None:
                param_group.setdefault(key, value)  # (else derived from the timescale)
        super().add_param_group(param_group)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._new_plan()
        self.__dict__["_sd_defaults"] = {
            k: self.defaults.get(k)
            for k in ("weight_decay", "decay_mode", "decay_scaling", "timescale", "low_precision")
        }
        # (pickles from before cautious decay lack the key)
        self._sd_defaults["cautious_decay"] = self.defaults.get("cautious_decay", False)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            self._check_group(group)

    def __reduce__(self):
        if type(self) is _make_class(self._sd_wrapped, self._sd_own_decay):  # no module name
            return _rebuild, (self._sd_wrapped, self._sd_own_decay, self.__getstate__())
        return copyreg.__newobj__, (type(self),), self.__getstate__()  # a user's subclass

    # ---- state dicts: the wrapped optimizer's, plus the package's group keys ----------------
    # (``decay_scaling`` goes in as plain data: ``DecayPlanOwner``'s state-dict hook.
    # ``weight_decay`` is the package's: the plain optimizer that loads such a dict applies it
    # as its own decay, in its own form.)
    def _merge_loaded_group(self, saved: dict, current: dict) -> dict:
        """Keys a saved group lacks (a plain optimizer's dict has no ``decay_mode``...) keep
        their current values; the own-decay flags (``decoupled_weight_decay``) stay off."""
        merged = super()._merge_loaded_group(saved, current)
        merged.update({f: False for f in _OWN_DECAY_FLAGS if f in current})
        return merged

    # ---- the step -------------------------------------------------------------------------
    def step(self, closure=None):
        """Decay first (``p *= 1 - c``, or ``g + lam * p`` for "l2"), then the wrapped optimizer's
        step on the same gradients."""
        loss = None
        if closure is not None:  # evaluated here: the decay must see this step's gradients
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)  # set by GradScaler where the
        found_inf = getattr(self, "found_inf", None)  # optimizer unscales itself (fused)
        hold = self._sd_holds == "weight_decay"
        saved_wd = [g["weight_decay"] for g in self.param_groups] if hold else []
        restore_grads: list[tuple] = []
        widened = WL.widen(self)
        done = False
        try:
            cautious = self._decay(restore_grads, grad_scale, found_inf)
            if hold:
                for group in self.param_groups:
                    group["weight_decay"] = 0.0
            _unhooked(self._sd_wrapped.step)(self)
            CW.decay_after(self._plan, cautious, found_inf)
            done = True
        finally:
            for group, wd in zip(self.param_groups, saved_wd):
                group["weight_decay"] = wd
            for p, g in restore_grads:
                p.grad = g
            WL.narrow(self, widened, store=done)
        return loss

    def _loaded_state_dtype(self, group: dict, p: torch.Tensor):
        return WL.loaded_state_dtype(group, p)

    @torch.no_grad()
    def _decay(self, restore: list[tuple], grad_scale, found_inf) -> list:
        """Apply this step's decay; (param, user's grad) pairs to restore go to ``restore``.
        ``cautious_decay`` groups are copied instead (``cautious_wrap.snapshot``, returned):
        their decay follows the wrapped step."""
        amounts = list(self._plan.amounts(self.param_groups))
        for group, l2_lams, _ in amounts:  # refuse before changing anything
            for i, p in enumerate(group["params"]):
                if (
                    l2_lams is not None
                    and l2_lams[i] != 0
                    and p.grad is not None
                    and p.grad.is_sparse
                ):
                    names = group.get("param_names")
                    raise RuntimeError(
                        f"decay_mode='l2' does not support sparse gradients (parameter "
                        f"{names[i] if names else i})"
                    )
        cautious = []
        for gi, (group, l2_lams, decay) in enumerate(amounts):
            if group.get("cautious_decay", False):
                if decay is not None:
                    cautious += CW.snapshot(gi, group, decay)
                continue
            idx = [i for i, p in enumerate(group["params"]) if p.grad is not None]
            params = [group["params"][i] for i in idx]
            if not params:
                continue
            if decay is not None:
                local = D.local_lists([params])[0]
                for batch in indices_by([(p.device, p.dtype) for p in local]).values():
                    apply_decoupled_decay(
                        [local[i] for i in batch],
                        decay_from_lists(None, [decay[idx[i]] for i in batch]),  # type: ignore[arg-type]
                        found_inf=found_inf,
                    )
                continue
            # "l2": the wrapped optimizer negates the gradient itself under maximize; with
            # grads still scaled by GradScaler (it unscales them itself), scale lam alike
            sign = -1.0 if group.get("maximize", False) else 1.0
            scale = 1.0 if grad_scale is None else float(grad_scale)
            lams = [sign * scale * l2_lams[i] for i in idx]
            grads = [p.grad for p in params]
            summed = add_decay_to_grads(grads, params, decay_from_lists(lams, None))  # type: ignore[arg-type]
            for p, g, new in zip(params, grads, summed):
                if new is not g:
                    restore.append((p, g))
                    p.grad = new
        return cautious

    # decay_report(): DecayPlanOwner's; its "l2" factor is None (the wrapped optimizer's
    # preconditioner rescales the coupled term)
