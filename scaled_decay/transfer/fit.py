"""Where is the best weight decay, how far does it move, and can we tell at all.

- :func:`fit_optimum`: lambda* from a loss curve on a log grid: the vertex of the parabola
  through the best grid point and its two neighbours, in log10(lambda).
- :func:`drift` and :func:`drift_range`: log2(lambda*(last)/lambda*(first)) for the seed-mean
  curves, and the range of the same quantity over seeds (each seed's own curves).
- :func:`decay_helps`: the sanity gate. Without it a flat curve would still yield a
  "lambda*" (the minimum of noise) and a drift that means nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GATE_REL_TOL",
    "Optimum",
    "decay_helps",
    "drift",
    "drift_range",
    "fit_optimum",
    "mean_curve",
    "verdict",
]

# The gate's smallest improvement over lambda = 0 that counts, relative to the lambda = 0 loss.
GATE_REL_TOL = 0.01


@dataclass(frozen=True)
class Optimum:
    """``lam``: lambda* (None unless status is "ok"); ``index``: the best grid point.

    status: "ok" (interior minimum, fitted), "edge_low" / "edge_high" (best point at an end
    of the grid: the true optimum may lie beyond it), "nonfinite" (no finite loss at all).
    """

    lam: float | None
    index: int | None
    status: str


def _check_grid(lams: Sequence[float], losses: Sequence[float]):
    lams = np.asarray(lams, dtype=float)
    losses = np.asarray(losses, dtype=float)
    if lams.ndim != 1 or lams.shape != losses.shape or len(lams) == 0:
        raise ValueError(
            f"lams and losses must be 1-D and of equal non-zero length, got "
            f"shapes {lams.shape} and {losses.shape}"
        )
    if not np.all(lams > 0) or not np.all(np.diff(lams) > 0):
        raise ValueError(f"lams must be positive and strictly increasing, got {lams.tolist()}")
    return lams, losses


def lowest_point(lams: Sequence[float], losses: Sequence[float]):
    """(lams, losses, finite mask, index of the lowest finite loss, early): ``early`` is the
    Optimum already decided (no finite loss, or the lowest at either end of the grid: a
    censored value, kept), else None and a fit around ``best`` follows."""
    lams, losses = _check_grid(lams, losses)
    finite = np.isfinite(losses)
    if not finite.any():
        return lams, losses, finite, None, Optimum(None, None, "nonfinite")
    best = int(np.argmin(np.where(finite, losses, np.inf)))
    early = None
    if best == 0:
        early = Optimum(float(lams[0]), 0, "edge_low")
    elif best == len(lams) - 1:
        early = Optimum(float(lams[-1]), best, "edge_high")
    return lams, losses, finite, best, early


def fit_optimum(lams: Sequence[float], losses: Sequence[float]) -> Optimum:
    """lambda* of one curve (losses may hold inf for diverged runs)."""
    lams, losses, _, best, early = lowest_point(lams, losses)
    if early is not None:
        return early
    x = np.log10(lams[best - 1 : best + 2])
    y = losses[best - 1 : best + 2]
    if not np.all(np.isfinite(y)):  # a diverged neighbour: keep the grid point itself
        return Optimum(float(lams[best]), best, "ok")
    # Vertex of the parabola through three points (x need not be evenly spaced). The middle
    # point is the lowest, so the parabola opens upward and its vertex lies between x0 and x2.
    (x0, x1, x2), (y0, y1, y2) = x, y
    d01, d12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    curvature = (d12 - d01) / (x2 - x0)
    if curvature <= 0:  # ties with a neighbour: flat between them
        return Optimum(float(lams[best]), best, "ok")
    vertex = (x0 + x1) / 2 - d01 / (2 * curvature)
    vertex = min(max(vertex, x0), x2)
    return Optimum(float(10**vertex), best, "ok")


def mean_curve(loss_matrix: Sequence[Sequence[float]]) -> np.ndarray:
    """Mean over seeds (rows) per grid point; a diverged seed makes the point inf."""
    m = np.asarray(loss_matrix, dtype=float)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"loss_matrix must be seeds x grid points, got shape {m.shape}")
    return m.mean(axis=0)


def drift(lam_first: float, lam_last: float) -> float:
    """log2(lambda*(last) / lambda*(first)): +1 means lambda* doubled along the axis."""
    for name, v in (("lam_first", lam_first), ("lam_last", lam_last)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return math.log2(lam_last / lam_first)


def drift_range(seed_first: Sequence[float], seed_last: Sequence[float]):
    """(min, max) over seeds of each seed's own drift; seeds are paired by position."""
    if len(seed_first) != len(seed_last) or not seed_first:
        raise ValueError(
            f"seed_first and seed_last must be non-empty and paired, got "
            f"{len(seed_first)} and {len(seed_last)} values"
        )
    drifts = [drift(a, b) for a, b in zip(seed_first, seed_last)]
    return min(drifts), max(drifts)


def decay_helps(
    zero_losses: Sequence[float], best_losses: Sequence[float], rel_tol: float = GATE_REL_TOL
) -> bool:
    """Does the best lambda beat lambda = 0 measurably? Seeds are paired by position.

    Measurably: the mean improvement exceeds both ``rel_tol`` of the lambda = 0 loss and
    twice its standard error across seeds (the latter only with two or more seeds).
    """
    z = np.asarray(zero_losses, dtype=float)
    b = np.asarray(best_losses, dtype=float)
    if z.shape != b.shape or z.ndim != 1 or len(z) == 0:
        raise ValueError(
            f"zero_losses and best_losses must be paired 1-D sequences, got "
            f"shapes {z.shape} and {b.shape}"
        )
    if not np.all(np.isfinite(b)):
        return False
    if not np.all(np.isfinite(z)):
        return True  # lambda = 0 diverged where decay did not
    gain = z - b
    need = rel_tol * float(z.mean())
    if len(gain) > 1:
        need = max(need, 2 * float(gain.std(ddof=1)) / math.sqrt(len(gain)))
    return float(gain.mean()) > need


def verdict(point: float, low: float, high: float, factor_log2: float = 1.0) -> str:
    """Does lambda* stay within 2**factor_log2 across the axis? "yes" when the point and
    the whole seed range do, "no" when the point and the whole range do not, else "unclear"."""
    inside = [abs(v) <= factor_log2 for v in (point, low, high)]
    if all(inside):
        return "yes"
    if not any(inside) and (low > 0) == (high > 0):
        return "no"
    return "unclear"
