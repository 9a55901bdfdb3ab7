"""Plan which training runs the study needs: chains of axis points, and shared sweeps.

A *chain* is one (optimizer, parametrization) walked along one axis: width (the width arm)
or training-set size (the data arm). At each axis point every arm (rule x mode) needs a
lambda sweep. Arms whose per-tensor decay differs only by one global factor on lambda train
identically once lambda is rescaled (the decay enters a step only through
``c = lam * s(p) * (lr if decoupled else 1)``, and every tensor shares the lr schedule's
shape), so they share one *sweep*: it is trained once, for its representative arm, and the
other arms read it with their lambda axis relabelled, ``lam_arm = lam_rep / factor``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from .archs import Net
from .models import Arm, decay_signature
from .train import steps_per_epoch

__all__ = [
    "GRID_STEP",
    "Chain",
    "SweepPlan",
    "lattice_grid",
    "lattice_index",
    "lattice_value",
    "plan_sweeps",
    "proportional_factor",
]

GRID_STEP = 0.5  # log10 lambda between grid points: half a decade


@dataclass(frozen=True)
class Chain:
    """One optimizer x parametrization along one axis ("width" or "data")."""

    axis: str  # "width" | "data"
    optimizer: str
    parametrization: str
    values: tuple[int, ...]  # widths, or training-set sizes
    arms: tuple[Arm, ...]  # rule x mode, in the order that picks representatives
    fixed_width: int  # the data arm's width (width arm: unused)
    fixed_n_train: int  # the width arm's training-set size (data arm: unused)
    # the width arm's training-set size per width, where it grows with the model (the token
    # budget: tokens per parameter fixed); empty: fixed_n_train at every width
    n_trains: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.axis}/{self.optimizer}/{self.parametrization}"

    def width_at(self, value: int) -> int:
        return value if self.axis == "width" else self.fixed_width

    def n_train_at(self, value: int) -> int:
        if self.axis == "data":
            return value
        return self.n_trains[self.values.index(value)] if self.n_trains else self.fixed_n_train


@dataclass
class SweepPlan:
    """One trained sweep at one axis point: its representative and who reads it, and how.

    ``factors[arm]``: the arm's per-tensor decay at ``weight_decay = 1`` divided by the
    representative's, so the arm's lambda is ``lam_rep / factors[arm]``.
    """

    chain: Chain
    value: int
    rep: Arm
    factors: dict[Arm, float] = field(default_factory=dict)


def proportional_factor(sig: dict[str, float], ref: dict[str, float], rel_tol: float = 1e-9):
    """``k`` with ``sig == k * ref`` tensor by tensor, or None when not proportional."""
    if set(sig) != set(ref) or not sig:
        return None
    names = sorted(sig)
    k = sig[names[0]] / ref[names[0]]
    for n in names[1:]:
        if not math.isclose(sig[n], k * ref[n], rel_tol=rel_tol, abs_tol=0.0):
            return None
    return k


@lru_cache(maxsize=4096)
def _signature(
    arm: Arm, net: Net, width: int, base_width: int, lr: float, m: int, epochs: int
) -> tuple[tuple[str, float], ...]:
    sig = decay_signature(
        arm, net=net, width=width, base_width=base_width, lr=lr, steps_per_epoch=m, epochs=epochs
    )
    return tuple(sorted(sig.items()))


def plan_sweeps(
    chain: Chain, value: int, *, net: Net, base_width: int, lr: float, epochs: int, batch_size: int
) -> list[SweepPlan]:
    """Group the chain's arms at one axis point into shared sweeps (first arm = rep)."""
    width = chain.width_at(value)
    m = steps_per_epoch(chain.n_train_at(value), batch_size)
    sweeps: list[SweepPlan] = []
    sigs = {}
    for arm in chain.arms:
        sig = dict(_signature(arm, net, width, base_width, lr, m, epochs))
        sigs[arm] = sig
        for sweep in sweeps:
            k = proportional_factor(sig, sigs[sweep.rep])
            if k is not None:
                sweep.factors[arm] = k
                break
        else:
            sweeps.append(SweepPlan(chain, value, arm, {arm: 1.0}))
    return sweeps


def lattice_grid(center: float, points: int) -> list[float]:
    """``points`` lambdas half a decade apart around ``center``, snapped to the lattice
    10**(j/2) so that neighbouring sweeps and reruns reuse the same values (and cache)."""
    if points < 1:
        raise ValueError(f"points must be at least 1, got {points}")
    if not (center > 0 and math.isfinite(center)):
        raise ValueError(f"center must be a positive finite lambda, got {center!r}")
    j = round(math.log10(center) / GRID_STEP)
    first = j - (points - 1) // 2
    return [lattice_value(first + i) for i in range(points)]


def lattice_value(j: int) -> float:
    return float(f"{10 ** (j * GRID_STEP):.6g}")


def lattice_index(lam: float) -> int:
    return round(math.log10(lam) / GRID_STEP)
