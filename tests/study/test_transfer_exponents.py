"""Fitted exponents of lambda* and their verdicts against the published laws."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaled_decay.transfer.exponents import (
    chain_exponents,
    exponent_table,
    ols_slope,
    predicted_slopes,
)
from scaled_decay.transfer.refine import fit_smooth
from scaled_decay.transfer.sweeps import lattice_value


@given(k=st.floats(-2, 2), a=st.floats(1e-4, 10))
def test_ols_slope_recovers_an_exact_power_law(k, a):
    xs = [32, 64, 128, 512]
    assert ols_slope(xs, [a * x**k for x in xs]) == pytest.approx(k, abs=1e-9)


def test_ols_slope_refuses_degenerate_input():
    for xs, ys in (
        ([64], [1.0]),
        ([64, 64], [1.0, 2.0]),
        ([64, 128], [1.0, 0.0]),
        ([64, 128], [1.0]),
    ):
        with pytest.raises(ValueError, match="need >= 2 distinct positive x"):
            ols_slope(xs, ys)


def _synthetic_chain(k, seeds, noise, rng, axis="width", values=(64, 128, 256, 512)):
    """Loss curves (parabolas in log10 lambda) whose minimum sits at 1e-2 * (x/64)**k,
    each seed's minimum jittered by ``noise`` decades."""
    lams = [lattice_value(j) for j in range(-12, 3)]  # 1e-6 .. 10
    points = []
    for x in values:
        centre = math.log10(1e-2 * (x / values[0]) ** k)
        rows = [
            [(math.log10(l) - centre - noise * rng.standard_normal()) ** 2 + 1.0 for l in lams]
            for _ in range(seeds)
        ]
        arm = {
            "rule": "none",
            "mode": "decoupled",
            "lams": lams,
            "seed_loss": rows,
            "decay_helps": True,
            "lam_star": None,
        }
        points.append({"value": x, "n_train": 4000 if axis == "width" else x, "arms": {"a": arm}})
    for p in points:
        a = p["arms"]["a"]
        fits = [fit_smooth(a["lams"], row) for row in a["seed_loss"]]
        a["seed_lam_star"] = [o.lam for o in fits]
        a["seed_status"] = [o.status for o in fits]
        a["lam_star"] = 10 ** float(np.mean(np.log10(a["seed_lam_star"])))
    return {
        "axis": axis,
        "optimizer": "adamw",
        "parametrization": "mup",
        "values": list(values),
        "points": points,
    }


@settings(max_examples=5)
@given(k=st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]), seed=st.integers(0, 2**16))
def test_seed_interval_covers_the_true_exponent(k, seed):
    chain = _synthetic_chain(k, seeds=5, noise=0.05, rng=np.random.default_rng(seed))
    (row,) = chain_exponents(chain, lambda label, x: 0.01, lambda n: 63, param_slope=2.0)
    assert row["slope"] == pytest.approx(k, abs=0.1)
    lo, hi = row["interval"]
    assert lo - 0.02 <= k <= hi + 0.02 and hi - lo < 0.5
    # a constant per-tensor factor (plain decay, constant lr) leaves the slope of c* alone
    assert row["c_slope"] == pytest.approx(row["slope"])
    assert row["c_star"][0] == pytest.approx(0.01 * row["lam_star"][0])
    assert row["tau_epoch"][0] == pytest.approx(1 / (row["c_star"][0] * 63))
    verdicts = row["verdict"]
    assert verdicts["Wang & Aitchison"] == ("follows" if lo <= 0.0 <= hi else "contradicts")
    assert verdicts["Fan et al."] == ("follows" if lo <= -0.5 <= hi else "contradicts")


def test_c_slope_adds_the_rules_own_width_dependence():
    chain = _synthetic_chain(0.0, seeds=3, noise=0.0, rng=np.random.default_rng(0))
    # a tensor whose decay per unit lambda falls as 1/width (e.g. lr ~ 1/n under muP)
    (row,) = chain_exponents(chain, lambda label, x: 1.0 / x, lambda n: 63, param_slope=2.0)
    assert row["slope"] == pytest.approx(0.0, abs=0.02)
    assert row["c_slope"] == pytest.approx(-1.0, abs=0.02)
    assert "contradicts" == row["verdict"]["Wang & Aitchison"]


def test_one_seed_gives_a_slope_but_no_interval_or_verdict():
    chain = _synthetic_chain(0.5, seeds=1, noise=0.0, rng=np.random.default_rng(0))
    (row,) = chain_exponents(chain, lambda label, x: 1.0, lambda n: 63, param_slope=2.0)
    assert row["slope"] == pytest.approx(0.5, abs=0.02)
    assert row["interval"] is None and set(row["verdict"].values()) == {None}
    table = exponent_table([row])
    assert "+0.50 | +0.50 | 1 (0), 15 |" in table and "- (+0.00)" in table


def test_too_few_identified_points_give_no_slope():
    chain = _synthetic_chain(0.5, seeds=2, noise=0.0, rng=np.random.default_rng(0))
    chain["points"][1]["arms"]["a"]["decay_helps"] = False
    chain["points"][2]["arms"]["a"]["decay_helps"] = False
    (row,) = chain_exponents(chain, lambda label, x: 1.0, lambda n: 63, param_slope=2.0)
    assert row["slope"] is None and row["lam_star"][1] is None


def test_predicted_slopes_of_the_laws():
    data = predicted_slopes("data", "sgd", "sp", 0.0)
    assert data == {
        "Wang & Aitchison": -1.0,
        "Loshchilov & Hutter": -0.5,
        "Power Lines": pytest.approx(-0.48),
        "Fan et al.": None,
    }
    width = predicted_slopes("width", "adamw", "mup", 2.0)
    assert width["Power Lines"] == pytest.approx(-1.04) and width["Fan et al."] == -0.5
    assert predicted_slopes("width", "adamw", "sp", 2.0)["Fan et al."] is None
