"""The package in training frameworks: HF transformers' Trainer, accelerate, Lightning, timm.

- :func:`decay_report` finds the package's optimizer inside the wrappers frameworks put
  around it (accelerate's ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``,
  timm's ``Lookahead``, a transformers or Lightning ``Trainer``) and reports it.
- :func:`trainer_factory` is the optimizer factory transformers' ``Trainer`` calls with the
  model (``optimizer_cls_and_kwargs=(sd.trainer_factory(sd.AdamW), kwargs)``), so
  ``sd.param_groups`` runs on it.
- :func:`register_timm_optimizers` adds the optimizers to timm's registry, for
  ``timm.optim.create_optimizer_v2(model, "scaledadamw", ...)``.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

import torch

from .groups import param_groups

if TYPE_CHECKING:
    from .report import DecayReport

__all__ = [
    "TIMM_NAMES",
    "decay_report",
    "register_timm_optimizers",
    "trainer_factory",
    "unwrap_optimizer",
]

log = logging.getLogger("scaled_decay")

# Where wrappers keep the optimizer they wrap: accelerate's AcceleratedOptimizer, HF and
# DeepSpeed wrappers and transformers' Trainer (.optimizer), Lightning's LightningOptimizer
# (._optimizer), timm's Lookahead (._base_optimizer), ZeroRedundancyOptimizer (.optim, this
# rank's local optimizer).
_WRAPPED_AT = ("optimizer", "_optimizer", "_base_optimizer", "base_optimizer", "optim")


def _wrapped(obj):
    for attr in _WRAPPED_AT:
        inner = getattr(obj, attr, None)
        if isinstance(inner, torch.optim.Optimizer) or hasattr(inner, "param_groups"):
            return inner
    optimizers = getattr(obj, "optimizers", None)  # a Lightning Trainer
    if isinstance(optimizers, (list, tuple)):
        if len(optimizers) != 1:
            raise ValueError(
                f"{type(obj).__name__} holds {len(optimizers)} optimizers; pass the one to report"
            )
        return optimizers[0]
    return None


def unwrap_optimizer(obj):
    """The innermost optimizer with a ``decay_report()``, found through framework wrappers.

    Raises ValueError if ``obj`` neither is nor wraps one of the package's optimizers.
    """
    seen, current = [], obj
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        inner = _wrapped(current)
        if inner is None:
            break
        current = inner
    for candidate in reversed(seen):  # innermost first
        if callable(getattr(candidate, "decay_report", None)):
            return candidate
    chain = " -> ".join(type(s).__name__ for s in seen)
    raise ValueError(
        f"decay_report: {chain} is not, and does not wrap, an optimizer of "
        f"scaled_decay (nothing to report)"
    )


def decay_report(optimizer: object) -> DecayReport:
    """``optimizer.decay_report()`` for the package's optimizer, whatever wraps it:
    ``sd.decay_report(trainer.optimizer)`` (accelerate's wrapper), ``sd.decay_report(trainer)``
    (a transformers or Lightning Trainer), ``sd.decay_report(self.optimizers())`` in a
    LightningModule, ``sd.decay_report(lookahead)`` (timm).

    Args:
        optimizer: a scaled_decay optimizer, or anything that wraps one.

    Returns:
        The optimizer's ``decay_report()``.

    Raises:
        ValueError: nothing in the chain of wrappers is a scaled_decay optimizer.
    """
    return unwrap_optimizer(optimizer).decay_report()


# ---- transformers' Trainer --------------------------------------------------------------
_GROUP_KWARGS = ("no_decay", "decay_1d", "base_model")


class _TrainerBuilder:
    def __init__(self, optimizer_cls):
        self.optimizer_cls = optimizer_cls

    def __call__(self, model, **kwargs):
        group_kwargs = {k: kwargs.pop(k) for k in (*_GROUP_KWARGS, "timescale") if k in kwargs}
        if "weight_decay" not in kwargs and "timescale" not in group_kwargs:
            raise ValueError(
                "sd.trainer_factory: put weight_decay (or timescale) into the "
                "kwargs of optimizer_cls_and_kwargs (the Trainer passes only "
                "those)"
            )
        groups = param_groups(model, kwargs.pop("weight_decay", None), **group_kwargs)
        log.info("sd.trainer_factory: %s", groups.split)
        return self.optimizer_cls(groups, **kwargs)


class _TrainerFactory:
    def __init__(self, optimizer_cls):
        self.optimizer_cls = optimizer_cls

    def __call__(self):  # the Trainer calls factory() first, then the result with the model
        return _TrainerBuilder(self.optimizer_cls)

    def __repr__(self):
        return f"sd.trainer_factory({self.optimizer_cls.__name__})"


def trainer_factory(optimizer_cls: type[torch.optim.Optimizer]) -> _TrainerFactory:
    """An optimizer factory for transformers' ``Trainer``: the Trainer calls it with the
    model, so the optimizer gets ``sd.param_groups(model, ...)`` (names, module-aware
    fan-ins, the no-decay split) instead of the Trainer's unnamed groups::

        Trainer(model=model, args=args, optimizer_cls_and_kwargs=(
            sd.trainer_factory(sd.AdamW),
            {"lr": 3e-4, "weight_decay": 0.1, "decay_scaling": "fan_in"}))

    The kwargs go to the optimizer, except ``weight_decay`` (or ``timescale``: one is
    required), ``no_decay``, ``decay_1d`` and ``base_model``, which go to
    ``sd.param_groups``. transformers 5 treats anything in ``optimizer_cls_and_kwargs`` that
    is not an Optimizer class as a factory and calls ``factory()(model, **kwargs)``.
    ``TrainingArguments.learning_rate`` and ``weight_decay`` do not reach this route, as with
    any ``optimizer_cls_and_kwargs``.

    Args:
        optimizer_cls: the optimizer class (``sd.AdamW``, a ``sd.with_scaled_decay`` class).

    Returns:
        The factory to put first in ``optimizer_cls_and_kwargs``.

    Raises:
        ValueError: ``optimizer_cls`` is not a ``torch.optim.Optimizer`` subclass; when the
            Trainer builds the optimizer, kwargs with neither ``weight_decay`` nor
            ``timescale``.
    """
    if not (inspect.isclass(optimizer_cls) and issubclass(optimizer_cls, torch.optim.Optimizer)):
        raise ValueError(f"trainer_factory needs an optimizer class, got {optimizer_cls!r}")
    return _TrainerFactory(optimizer_cls)


# ---- timm --------------------------------------------------------------------------------
# timm reads an optimizer name as "[lookahead_]name": it cuts at "_" and looks up the last
# part, so "sd_adamw" would silently build timm's own AdamW. These names have no "_" and
# collide with none of timm's.
TIMM_NAMES = {
    "scaledsgd": "SGD",
    "scaledmomentum": "SGD",
    "scaledadam": "Adam",
    "scaledadamw": "AdamW",
}


def register_timm_optimizers(registry: Any = None) -> dict[str, type]:
    """Register the package's optimizers in timm's optimizer registry.

    Then ``create_optimizer_v2(model, "scaledadamw", lr=..., weight_decay=...,
    decay_scaling="fan_in")`` builds ``sd.AdamW``. Names, as timm's: ``scaledsgd`` (SGD with
    Nesterov momentum, like timm's ``sgd``), ``scaledmomentum`` (SGD with momentum),
    ``scaledadam``, ``scaledadamw``; ``"lookahead_scaledadamw"`` wraps it in timm's
    Lookahead. Registering twice is harmless.

    timm's own grouping (``filter_bias_and_bn``) has no parameter names: fan-ins then come
    from shapes (right for timm's Conv/Linear weights). Pass
    ``param_group_fn=lambda m: sd.param_groups(m, weight_decay)`` for module-aware fan-ins,
    names and the split.

    Args:
        registry: the timm optimizer registry to add them to (None: timm's
            ``default_registry``).

    Returns:
        ``{name: class}`` for the four names.

    Raises:
        ValueError: a name timm already uses for another class.
        ImportError: timm is not installed (it is an optional dependency).
    """
    from timm.optim import _optim_factory as factory  # timm is an optional dependency

    from . import adam, sgd

    registry = registry if registry is not None else factory.default_registry
    classes = {"SGD": sgd.SGD, "Adam": adam.Adam, "AdamW": adam.AdamW}
    infos = {
        "scaledsgd": dict(
            has_eps=False,
            has_momentum=True,
            defaults={"nesterov": True},
            description="scaled_decay SGD, Nesterov momentum",
        ),
        "scaledmomentum": dict(
            has_eps=False,
            has_momentum=True,
            defaults={"nesterov": False},
            description="scaled_decay SGD, momentum",
        ),
        "scaledadam": dict(has_betas=True, description="scaled_decay Adam"),
        "scaledadamw": dict(has_betas=True, description="scaled_decay AdamW"),
    }
    out = {}
    for name, cls_name in TIMM_NAMES.items():
        cls = classes[cls_name]
        try:
            existing = registry.get_optimizer_info(name).opt_class
        except ValueError:
            existing = None
        if existing is not None and existing is not cls:
            raise ValueError(f"timm already registers {name!r} for {existing!r}")
        if existing is None:
            registry.register(factory.OptimInfo(name=name, opt_class=cls, **infos[name]))
        out[name] = cls
    return out
