"""Decay scaling rules: each maps one parameter tensor to a factor ``s(p)``.

The effective decay of a tensor is ``lam = weight_decay * s(p)``, where ``s(p)`` is the
product of the group's rules (``decay_scaling`` may be a tuple: the factors multiply).
A rule is a small frozen object with a ``scale(info)`` method; ``info`` is a
:class:`TensorInfo` describing the tensor (global shape, fan-in, total count), so the
rules never look at data and are computed once per tensor, in :func:`tensor_scale`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

__all__ = [
    "FanIn",
    "MuonShape",
    "ParamCount",
    "StepsPerEpoch",
    "TensorInfo",
    "as_rules",
    "fan_in_from_shape",
    "muon_lr_adjustment",
    "muon_matrix_shape",
    "rules_to_plain",
    "tensor_scale",
]


def _positive(name: str, value, kind: str = "a positive number") -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


@dataclass(frozen=True)
class TensorInfo:
    """What the rules may know of a tensor: all global (DTensor shards use their full shape).

    ``fan_in``: the input size the owning module sees (see :func:`fan_in_from_shape`).
    ``fan_in_reference``: per-tensor reference fan-in from a base model, or None.
    ``total_count``: number of elements of all parameters the optimizer holds.
    ``fan_in_source``: where ``fan_in`` came from: the module class that the registry of
    ``sd.param_groups`` knew (``"Linear"``, ``"Conv1D"``), ``"1-d"`` (<= 1 dim: 1),
    ``"shape"`` (``shape[1] * prod(shape[2:])``) or ``"given"`` (a group's own ``fan_ins``).
    """

    shape: tuple[int, ...]
    fan_in: int
    total_count: int
    fan_in_reference: float | None = None
    name: str | None = None
    fan_in_source: str = "shape"


@dataclass(frozen=True)
class FanIn:
    """``s = (reference / fan_in(p)) ** power``.

    ``power=1`` is the "mean over the fan-in" rule: a layer twice as wide gets half the
    per-weight decay. ``power=-1`` grows decay with fan-in, which keeps ``lr * lam`` constant
    when a tensor's lr scales as ``1/fan_in`` (muP; Yang et al. 2022, "Tensor Programs V").
    ``reference`` is the fan-in at which ``lam == weight_decay``; a per-tensor reference taken
    from a base model (``sd.param_groups(..., base_model=...)``) takes precedence.

    ``fan_in(p)`` is the input size the owning module sees: the group's ``fan_ins`` where it
    has them (``sd.param_groups`` fills them from its registry of module types,
    ``sd.register_module``), else ``shape[1] * prod(shape[2:])`` for 2-D and up and 1 below
    (docs/decay-modes.md).

    Args:
        reference: the fan-in at which ``lam == weight_decay``.
        power: the exponent of ``reference / fan_in(p)``.

    Raises:
        ValueError: ``reference`` not a positive finite number, or ``power`` not a finite
            number.
    """

    reference: float = 1.0
    power: float = 1.0

    def __post_init__(self):
        _positive("FanIn reference", self.reference)
        if (
            isinstance(self.power, bool)
            or not isinstance(self.power, (int, float))
            or not math.isfinite(self.power)
        ):
            raise ValueError(f"FanIn power must be a finite number, got {self.power!r}")

    def scale(self, info: TensorInfo) -> float:
        """This rule's factor for one tensor.

        Args:
            info: the tensor's global shape, fan-in and the optimizer's total count.

        Returns:
            The factor ``(reference / fan_in) ** power`` (the tensor's own reference where it
            has one).
        """
        ref = self.reference if info.fan_in_reference is None else info.fan_in_reference
        return (ref / info.fan_in) ** self.power


@dataclass(frozen=True)
class ParamCount:
    """``s = (reference / N) ** power`` with N the total element count of all parameters.

    With ``reference=1, power=1`` the decay is the question's "mean square" penalty
    ``lam * mean(w**2)`` written per weight: its gradient on each weight is ``lam/N * w``.
    ``reference`` = the parameter count at which ``lam == weight_decay``.

    N defaults to the elements of the parameters the optimizer holds, global shapes (FSDP2
    DTensors count whole). ``total_count`` fixes N instead: needed where one optimizer holds
    only part of the model, as each rank's local optimizer under
    ``torch.distributed.optim.ZeroRedundancyOptimizer`` does
    (``total_count=sum(p.numel() for p in model.parameters())``).

    Args:
        reference: the parameter count at which ``lam == weight_decay``.
        power: the exponent of ``reference / N``.
        total_count: N itself (None: the elements of the parameters the optimizer holds).

    Raises:
        ValueError: ``reference`` not a positive finite number, ``power`` not a finite
            number, or ``total_count`` neither None nor a positive int.
    """

    reference: float = 1.0
    power: float = 1.0
    total_count: int | None = None

    def __post_init__(self):
        _positive("ParamCount reference", self.reference)
        if (
            isinstance(self.power, bool)
            or not isinstance(self.power, (int, float))
            or not math.isfinite(self.power)
        ):
            raise ValueError(f"ParamCount power must be a finite number, got {self.power!r}")
        if self.total_count is not None and (
            isinstance(self.total_count, bool)
            or not isinstance(self.total_count, int)
            or self.total_count <= 0
        ):
            raise ValueError(
                f"ParamCount total_count must be a positive int or None, got {self.total_count!r}"
            )

    def scale(self, info: TensorInfo) -> float:
        """This rule's factor for one tensor.

        Args:
            info: the tensor's global shape, fan-in and the optimizer's total count.

        Returns:
            The factor ``(reference / N) ** power``.
        """
        n = info.total_count if self.total_count is None else self.total_count
        return (self.reference / max(n, 1)) ** self.power


@dataclass(frozen=True)
class StepsPerEpoch:
    """``s = 1 / M`` for M steps per epoch, or ``1 / sqrt(M * T)`` with ``epochs=T``.

    ``1/M`` applies the penalty once per epoch instead of once per step (Bengio 2012,
    "Practical recommendations for gradient-based training", sec. 3.1). With ``epochs=T`` it
    is the normalized weight decay ``sqrt(b / (B * T))`` of Loshchilov & Hutter 2019,
    "Decoupled Weight Decay Regularization" (M = B/b). With ``decay_mode="independent"``,
    ``StepsPerEpoch(M)`` makes ``weight_decay`` a rate per epoch: the weights' EMA timescale
    is ``1/weight_decay`` epochs (Wang & Aitchison 2024).

    Args:
        steps_per_epoch: M, the optimizer steps per epoch.
        epochs: T, the epochs of the run (None: ``s = 1 / M``).

    Raises:
        ValueError: ``steps_per_epoch``, or ``epochs`` where given, not a positive finite
            number.
    """

    steps_per_epoch: float
    epochs: float | None = None

    def __post_init__(self):
        _positive("StepsPerEpoch steps_per_epoch", self.steps_per_epoch)
        if self.epochs is not None:
            _positive("StepsPerEpoch epochs", self.epochs)

    def scale(self, info: TensorInfo) -> float:
        """This rule's factor for one tensor.

        Args:
            info: the tensor's global shape, fan-in and the optimizer's total count.

        Returns:
            The factor ``1 / M``, or ``1 / sqrt(M * T)`` with ``epochs``.
        """
        if self.epochs is None:
            return 1.0 / self.steps_per_epoch
        return 1.0 / math.sqrt(self.steps_per_epoch * self.epochs)


MUON_ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def muon_matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """The matrix Muon orthogonalizes for a weight of ``shape``: ``(shape[0],
    prod(shape[1:]))``, a conv kernel (out, in, kh, kw) as (out, in*kh*kw), as Keller Jordan's
    reference Muon flattens it (and, since its PR #60, adjusts its lr by), and as
    pytorch-optimizer's Muon and torch's PR #180561 do. A matrix is itself."""
    return int(shape[0]), int(math.prod(shape[1:]))


def muon_lr_adjustment(adjust_lr_fn: str | None, shape: Sequence[int]) -> float:
    """``a(A, B)``: the factor ``torch.optim.Muon`` multiplies the lr of an A x B update by:
    ``sqrt(max(1, A/B))`` ("original", the default) or ``0.2 * sqrt(max(A, B))``
    ("match_rms_adamw"), with (A, B) = :func:`muon_matrix_shape` (a > 2-D weight: its
    flattened matrix). 1 for an empty matrix (nothing to update)."""
    a, b = muon_matrix_shape(shape)
    if a == 0 or b == 0:
        return 1.0
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(a, b))
    return math.sqrt(max(1.0, a / b))


@dataclass(frozen=True)
class MuonShape:
    """``s = a(A, B) / a(reference_shape)``: Muon's decay at the lr its update really uses.

    ``torch.optim.Muon`` steps an A x B matrix ``W`` (A = ``shape[0]``) as
    ``W <- (1 - eta*lam) W - eta*a(A, B) O`` with ``O`` the orthogonalized momentum
    (singular values ~1, so ``||O||_2 ~ 1``) and ``a`` = :func:`muon_lr_adjustment`. With
    ``gamma = eta*lam`` that is ``W <- (1 - gamma) W + gamma (-(a/lam) O)``: each step moves
    ``W`` a fraction ``gamma`` of the way to a matrix of spectral norm ``a/lam``. So the
    weights are an EMA (rate ``gamma``) of ``-(a/lam) O`` and end inside the spectral-norm
    ball of radius ``R = a(A, B) / lam``: ``R``, the update's size per unit of decay rate, is
    the decay-to-update balance. torch decays every shape at the same ``eta*lam``, so ``R``
    follows ``a``: with "match_rms_adamw" it grows as ``sqrt(max(A, B))`` (x sqrt(k) for a
    k-times wider hidden layer); with "original" as ``sqrt(A/B)`` for tall matrices (an
    input layer widened k times: x sqrt(k)) and not at all for square or wide ones.

    This rule decays each tensor at the rate of its own adjusted lr,
    ``c = eta * a(A, B) * lam / a(reference_shape)``, so ``R = a(reference_shape) / lam``
    for every shape and width (and at ``reference_shape`` ``lam`` is ``weight_decay``
    exactly). The price: the EMA rate ``c`` now follows ``a``. ``reference_shape=None``
    means ``a = 1`` (``R = 1/weight_decay``: weight_decay is the inverse spectral radius).
    ``adjust_lr_fn`` must be the Muon group's own (checked where the group has the key:
    torch's ``adjust_lr_fn``, or pytorch-optimizer's ``use_adjusted_lr``, True meaning
    "match_rms_adamw").

    Weights of more than 2 dims (conv kernels) are the matrix Muon flattens them to,
    ``(shape[0], prod(shape[1:]))`` (:func:`muon_matrix_shape`), for ``a`` of the tensor and
    of ``reference_shape`` alike: the decay gets the adjustment the flattened update gets.
    Fewer than 2 dims: a ValueError (Muon updates no vectors).

    lambda per group: ``weight_decay`` is a group key like any other, so matrices and conv
    kernels may sit in groups of their own ``weight_decay`` (and ``reference_shape``); each
    tensor decays by ``c = eta * weight_decay_of_its_group * s(p)`` per step.

    ``a(A, B)`` is the factor ``torch.optim.Muon`` multiplies the lr of an A x B update by:
    ``sqrt(max(1, A/B))`` ("original", the default) or ``0.2 * sqrt(max(A, B))``
    ("match_rms_adamw"); 1 for an empty matrix.

    Args:
        adjust_lr_fn: the Muon group's lr adjustment: None (as ``"original"``),
            ``"original"`` or ``"match_rms_adamw"``.
        reference_shape: the shape (two or more dims) at which ``lam == weight_decay``;
            None: ``a = 1``.

    Raises:
        ValueError: ``adjust_lr_fn`` not one of None, ``"original"``,
            ``"match_rms_adamw"``; ``reference_shape`` not two or more positive ints; at the
            step, a tensor of fewer than 2 dims, or a group whose own adjustment differs
            (``check_group``).
    """

    adjust_lr_fn: str | None = None
    reference_shape: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.adjust_lr_fn not in MUON_ADJUST_LR_FNS:
            raise ValueError(
                f"MuonShape adjust_lr_fn must be one of {MUON_ADJUST_LR_FNS}, "
                f"got {self.adjust_lr_fn!r}"
            )
        ref = self.reference_shape
        if ref is not None:
            if (
                isinstance(ref, (str, bytes))
                or not isinstance(ref, Sequence)
                or len(ref) < 2
                or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in ref)
            ):
                raise ValueError(
                    f"MuonShape reference_shape must be two or more positive "
                    f"ints (A, B, ...), got {ref!r}"
                )
            object.__setattr__(self, "reference_shape", tuple(ref))  # lists from state dicts

    def scale(self, info: TensorInfo) -> float:
        """This rule's factor for one tensor.

        Args:
            info: the tensor's global shape, fan-in and the optimizer's total count.

        Returns:
            ``a(A, B) / a(reference_shape)`` (``a(reference_shape) = 1`` without one).

        Raises:
            ValueError: the tensor has fewer than 2 dims.
        """
        if len(info.shape) < 2:
            where = f" ({info.name})" if info.name else ""
            raise ValueError(
                f"MuonShape applies to tensors of 2 or more dims (Muon's "
                f"matrices, conv kernels), got shape {tuple(info.shape)}{where}"
            )
        ref = (
            1.0
            if self.reference_shape is None
            else muon_lr_adjustment(self.adjust_lr_fn, self.reference_shape)
        )
        return muon_lr_adjustment(self.adjust_lr_fn, info.shape) / ref

    def check_group(self, group: dict) -> None:
        """Check that the group's Muon uses this rule's ``adjust_lr_fn``.

        A rule for another adjustment than the group's Muon uses is a silent error, so it
        is refused where the group has the key (torch's ``adjust_lr_fn``, or
        pytorch-optimizer's ``use_adjusted_lr``, True meaning "match_rms_adamw").

        Args:
            group: the param group the rule is in.

        Raises:
            ValueError: the group's adjustment is not this rule's.
        """
        own = group.get("adjust_lr_fn", self.adjust_lr_fn)
        if "use_adjusted_lr" in group:  # pytorch-optimizer's Muon
            own = "match_rms_adamw" if group["use_adjusted_lr"] else "original"
        if (own or "original") != (self.adjust_lr_fn or "original"):
            raise ValueError(
                f"MuonShape(adjust_lr_fn={self.adjust_lr_fn!r}) in a group whose "
                f"adjust_lr_fn is {own!r}: they must match"
            )


Rule = FanIn | ParamCount | StepsPerEpoch | MuonShape
# What ``decay_scaling`` takes: None, "none"/"fan_in"/"param_count", a rule, a rule's plain
# dict (state dicts), or a sequence of these whose factors multiply.
DecayScaling = str | Rule | dict | Sequence[str | Rule | dict] | None
RULE_TYPES = (FanIn, ParamCount, StepsPerEpoch, MuonShape)
_RULE_TYPES = {cls.__name__: cls for cls in RULE_TYPES}
_STRING_FORMS: dict[str, tuple[Rule, ...]] = {
    "none": (),
    "fan_in": (FanIn(),),
    "param_count": (ParamCount(),),
}


def as_rules(decay_scaling) -> tuple[Rule, ...]:
    """Normalize a ``decay_scaling`` value to a tuple of rule objects.

    Accepts None, ``"none"``, ``"fan_in"``, ``"param_count"``, a rule object, the plain-dict
    form written by :func:`rules_to_plain` (state dicts), or a tuple/list of these.
    """
    if decay_scaling is None:
        return ()
    if isinstance(decay_scaling, str):
        if decay_scaling not in _STRING_FORMS:
            raise ValueError(
                f"decay_scaling must be None, one of {sorted(_STRING_FORMS)}, a rule object "
                f"or a tuple of them, got {decay_scaling!r}"
            )
        return _STRING_FORMS[decay_scaling]
    if isinstance(decay_scaling, RULE_TYPES):
        return (decay_scaling,)
    if isinstance(decay_scaling, dict):
        kwargs = dict(decay_scaling)
        cls = _RULE_TYPES.get(kwargs.pop("rule", None))
        if cls is None:
            raise ValueError(f"decay_scaling has an unknown rule: {decay_scaling!r}")
        try:
            return (cls(**kwargs),)
        except TypeError as e:
            raise ValueError(f"decay_scaling {decay_scaling!r}: {e}") from None
    if isinstance(decay_scaling, (tuple, list)):
        return tuple(r for item in decay_scaling for r in as_rules(item))
    raise ValueError(
        f"decay_scaling must be None, a string, a rule object or a tuple of them, "
        f"got {decay_scaling!r}"
    )


def rules_to_plain(rules: Sequence[Rule]) -> list:
    """Rules as plain dicts, so state dicts load with ``torch.load(weights_only=True)``."""
    return [dict(rule=type(r).__name__, **asdict(r)) for r in rules]


def fan_in_from_shape(shape: Iterable[int]) -> int:
    """``shape[1] * prod(shape[2:])`` for 2-D and up (torch's own init convention), else 1."""
    shape = tuple(shape)
    if len(shape) < 2:
        return 1
    return max(int(shape[1] * math.prod(shape[2:])), 1)


def tensor_scale(rules: Sequence[Rule], info: TensorInfo) -> float:
    """The product of the rules' factors for one tensor: the only place s(p) is computed."""
    s = 1.0
    for rule in rules:
        s *= rule.scale(info)
    return s
