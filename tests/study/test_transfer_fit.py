"""lambda* fit, drift and interval arithmetic, the sanity gate, and the lambda lattice."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaled_decay.transfer.fit import (
    decay_helps,
    drift,
    drift_range,
    fit_optimum,
    mean_curve,
    verdict,
)
from scaled_decay.transfer.sweeps import lattice_grid, lattice_index, lattice_value

STEP = 0.5  # half a decade, as the study's grids


def _grid(first_exp: float, points: int):
    return [10 ** (first_exp + STEP * i) for i in range(points)]


@settings(max_examples=60, deadline=None)
@given(
    first=st.floats(-6, 1),
    points=st.integers(3, 9),
    frac=st.floats(0.05, 0.95),
    curvature=st.floats(0.01, 5),
    floor=st.floats(0.1, 3),
)
def test_quadratic_in_log_lambda_is_recovered_exactly(first, points, frac, curvature, floor):
    lams = _grid(first, points)
    # an optimum strictly inside the grid, away from the two end intervals' outer halves
    lo, hi = math.log10(lams[0]) + STEP / 2, math.log10(lams[-1]) - STEP / 2
    x_star = lo + frac * (hi - lo)
    losses = [floor + curvature * (math.log10(l) - x_star) ** 2 for l in lams]
    opt = fit_optimum(lams, losses)
    assert opt.status == "ok"
    assert math.log10(opt.lam) == pytest.approx(x_star, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(first=st.floats(-5, 0), frac=st.floats(0.1, 0.9), width=st.floats(0.3, 2.0))
def test_non_quadratic_optimum_is_found_within_one_grid_step(first, frac, width):
    lams = _grid(first, 7)
    x_star = math.log10(lams[1]) + frac * (math.log10(lams[-2]) - math.log10(lams[1]))
    losses = [1 - math.exp(-(((math.log10(l) - x_star) / width) ** 2)) for l in lams]  # a well
    opt = fit_optimum(lams, losses)
    assert opt.status == "ok"
    assert abs(math.log10(opt.lam) - x_star) <= STEP


@given(
    first=st.floats(-5, 0), points=st.integers(3, 7), outside=st.floats(0.3, 3), below=st.booleans()
)
def test_optimum_beyond_the_grid_is_reported_as_an_edge(first, points, outside, below):
    lams = _grid(first, points)
    x_star = (math.log10(lams[0]) - outside) if below else (math.log10(lams[-1]) + outside)
    opt = fit_optimum(lams, [(math.log10(l) - x_star) ** 2 for l in lams])
    assert opt.status == ("edge_low" if below else "edge_high")
    assert opt.lam == (lams[0] if below else lams[-1])


def test_diverged_points_are_skipped_and_all_diverged_is_nonfinite():
    lams = _grid(-3, 5)
    opt = fit_optimum(lams, [1.0, 0.8, 0.7, 0.9, math.inf])
    assert opt.status == "ok" and lams[1] < opt.lam < lams[3]
    assert fit_optimum(lams, [math.inf] * 5).status == "nonfinite"
    assert mean_curve([[1.0, math.inf], [2.0, 1.0]]).tolist() == [1.5, math.inf]


@pytest.mark.parametrize(
    "lams, losses",
    [
        ([0.1, 0.01, 1.0], [1, 2, 3]),
        ([0.0, 0.1, 1.0], [1, 2, 3]),
        ([0.1, 1.0], [1.0]),
        ([], []),
    ],
)
def test_fit_rejects_bad_grids(lams, losses):
    with pytest.raises(ValueError, match="lams"):
        fit_optimum(lams, losses)


@given(lam=st.floats(1e-8, 1e4), k=st.floats(-12, 12))
def test_drift_is_log2_of_the_ratio(lam, k):
    assert drift(lam, lam * 2**k) == pytest.approx(k, abs=1e-9)
    assert drift(lam * 2**k, lam) == pytest.approx(-k, abs=1e-9)


@given(
    seed_drifts=st.lists(st.floats(-8, 8), min_size=1, max_size=6),
    base=st.lists(st.floats(1e-5, 10), min_size=6, max_size=6),
)
def test_drift_range_pairs_seeds_and_spans_their_drifts(seed_drifts, base):
    first = base[: len(seed_drifts)]
    last = [b * 2**d for b, d in zip(first, seed_drifts)]
    lo, hi = drift_range(first, last)
    assert lo == pytest.approx(min(seed_drifts), abs=1e-9)
    assert hi == pytest.approx(max(seed_drifts), abs=1e-9)


def test_drift_rejects_non_positive_and_unpaired_input():
    with pytest.raises(ValueError, match="lam_first"):
        drift(0.0, 1.0)
    with pytest.raises(ValueError, match="lam_last"):
        drift(1.0, math.nan)
    with pytest.raises(ValueError, match="paired"):
        drift_range([1.0, 2.0], [1.0])


@pytest.mark.parametrize(
    "point, low, high, expected",
    [
        (0.2, -0.5, 0.9, "yes"),
        (0.2, -0.5, 1.4, "unclear"),
        (1.6, 1.2, 2.0, "no"),
        (-3.0, -3.5, -2.0, "no"),
        (1.5, -1.2, 2.0, "unclear"),
        (-1.0, -1.0, 1.0, "yes"),
    ],
)
def test_verdict(point, low, high, expected):
    assert verdict(point, low, high) == expected


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    seeds=st.integers(2, 6),
    gain=st.floats(0.0, 0.3),
    noise=st.floats(0.0, 0.05),
)
def test_gate_passes_clear_gains_and_fails_noise(seed, seeds, gain, noise):
    rng = np.random.default_rng(seed)
    zero = 1.0 + rng.normal(0, 0.02, seeds)
    best = zero - gain + rng.normal(0, noise, seeds)
    diffs = zero - best
    se = diffs.std(ddof=1) / math.sqrt(seeds)
    expected = diffs.mean() > max(0.01 * zero.mean(), 2 * se)
    assert decay_helps(zero.tolist(), best.tolist()) == expected
    # a decay that makes things worse never passes
    assert not decay_helps(zero.tolist(), (zero + abs(gain) + 1e-3).tolist())


def test_gate_with_divergence_and_single_seed():
    assert decay_helps([math.inf], [1.0])  # lambda = 0 diverged, decay did not
    assert not decay_helps([1.0], [math.inf])
    assert decay_helps([1.0], [0.95]) and not decay_helps([1.0], [0.995])


@given(center=st.floats(1e-7, 1e3), points=st.integers(3, 9))
def test_lattice_grid_is_half_decades_around_the_center(center, points):
    grid = lattice_grid(center, points)
    assert len(grid) == points
    idx = [lattice_index(v) for v in grid]
    assert idx == list(range(idx[0], idx[0] + points))
    assert all(lattice_value(j) == v for j, v in zip(idx, grid))
    mid = grid[(points - 1) // 2]
    assert abs(math.log10(mid) - math.log10(center)) <= STEP / 2 + 1e-9


def test_lattice_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="center"):
        lattice_grid(0.0, 3)
    with pytest.raises(ValueError, match="points"):
        lattice_grid(1.0, 0)
