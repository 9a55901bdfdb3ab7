"""Intervals over seeds that hold: one estimate per seed, a t-interval over the seeds.

Each seed has its own lambda* at every axis point (``refine.fit_smooth`` on its own curve),
hence its own drift and its own fitted slope; the seeds are independent replicates, so the
interval is the mean +- t(0.975, n-1) * sd / sqrt(n). (The bootstrap it replaces resampled
3 seeds -- 10 distinct resamples -- and dropped every resample with an optimum at a grid
edge, which made it too narrow.)

An optimum at the end of a seed's sampled lambdas is *censored*: the truth lies beyond it.
It is kept at its edge value (so the estimate is a bound in that direction) and counted in
``censored``; the verdicts say so. Nothing is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["VERDICTS", "SeedInterval", "seed_slopes", "t_interval", "transfer_verdict"]

VERDICTS = ("holds", "holds within 2x", "does not hold", "unresolved")


@dataclass(frozen=True)
class SeedInterval:
    """Mean over ``n`` seeds and its t-interval (None with one seed); ``censored`` of the
    seeds rest on an optimum at the edge of their sampled lambdas."""

    mean: float
    low: float | None
    high: float | None
    n: int
    censored: int = 0

    def to_dict(self) -> dict:
        return {
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "censored": self.censored,
        }


def _t_quantile(p: float, df: int) -> float:
    from scipy.stats import t  # scipy comes with scikit-learn, a study dependency

    return float(t.ppf(p, df))


def t_interval(values: Sequence[float], level: float = 0.95, censored: int = 0) -> SeedInterval:
    """Mean of the per-seed ``values`` with its two-sided t-interval at ``level``."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or len(v) == 0 or not np.all(np.isfinite(v)):
        raise ValueError(
            f"values must be a non-empty 1-D sequence of finite numbers, got {list(np.ravel(v))}"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    if not (isinstance(censored, int) and 0 <= censored <= len(v)):
        raise ValueError(f"censored must be an integer between 0 and {len(v)}, got {censored!r}")
    mean = float(v.mean())
    if len(v) < 2:
        return SeedInterval(mean, None, None, 1, censored)
    half = _t_quantile(0.5 + level / 2, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return SeedInterval(mean, mean - half, mean + half, len(v), censored)


def seed_slopes(xs: Sequence[float], seed_values: Sequence[Sequence[float]]) -> np.ndarray:
    """Per seed (rows), the least-squares slope of log(value) on log(x)."""
    x, y = np.asarray(xs, dtype=float), np.asarray(seed_values, dtype=float)
    if not (np.all(x > 0) and np.all(y > 0)):
        raise ValueError(f"xs and seed_values must be positive, got {x.tolist()} and {y.tolist()}")
    x, y = np.log(x), np.log(y)
    if (
        y.ndim != 2
        or y.shape[1] != len(x)
        or len(x) < 2
        or np.ptp(x) == 0
        or not np.all(np.isfinite(y))
        or not np.all(np.isfinite(x))
    ):
        raise ValueError(
            f"seed_values must be seeds x {len(x)} positive numbers over at "
            f"least two distinct positive xs, got shape {y.shape}"
        )
    xc = x - x.mean()
    return (y - y.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)


def transfer_verdict(iv: SeedInterval, factor_log2: float = 1.0) -> str:
    """Does lambda* transfer along the axis, given the interval of its drift (log2 units)?

    "holds": the interval lies within +-1 (2x) and contains 0; "holds within 2x": within
    +-1 but excluding 0 (a measurable drift, under 2x); "does not hold": entirely beyond
    +-1; otherwise "unresolved". With one seed there is no interval: the point decides
    between "holds within 2x" and "does not hold" (it cannot show that the drift is 0), and
    the caller must say that it rests on one seed.
    """
    if iv.low is None:
        return "holds within 2x" if abs(iv.mean) <= factor_log2 else "does not hold"
    lo, hi = iv.low, iv.high
    if -factor_log2 <= lo and hi <= factor_log2:
        return "holds" if lo <= 0 <= hi else "holds within 2x"
    if lo > factor_log2 or hi < -factor_log2:
        return "does not hold"
    return "unresolved"
