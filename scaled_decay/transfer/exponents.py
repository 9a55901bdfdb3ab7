"""Exponents, not end points: how lambda* scales along an axis, against the published laws.

For every arm of a chain with at least three axis points where lambda* is identified, fit
the slope of log lambda* against log x (x = width, or training-set size N) by least
squares, once per seed (each seed's own refined lambda* at every point), and report the
mean slope with its t-interval over the seeds (``intervals.py``); seeds whose optimum sits at
an edge of their lambdas somewhere are kept at that edge and counted as censored.

The laws are statements about the per-step shrink of a weight matrix, ``c* = eta * lam*``
(what decoupled decay removes per step, at the initial lr), so each arm's slope is also
reported as the slope of log c* of its probe tensor (the hidden weight: ``c* = s * lam*``
with ``s`` its per-tensor decay at ``weight_decay = 1``, from ``decay_signature``), beside
``tau_epoch = 1 / (c* M)`` (the weights' EMA timescale in epochs, M steps per epoch).
Predicted slopes of log c*, for fixed epochs T and batch size (so the steps grow as N):

- Wang & Aitchison 2024 (arXiv 2405.13698): tau_epoch constant: c* ~ 1/M, slope 0 along
  width (SP and muP alike: under muP AdamW, lam* ~ fan-in because eta ~ 1/fan-in), -1 along N.
- Loshchilov & Hutter 2019, normalized decay lam = lam_norm * sqrt(b / (B T)), decay
  applied as ``eta_t * lam`` with eta_t the schedule multiplier (not the lr): c* ~ (N T)^-1/2,
  slope 0 along width, -1/2 along N.
- Bergsma et al. 2025, "Power Lines" (arXiv 2505.13738): tau = 1 / (c* S) (S total steps)
  ~ (D / P)^-0.52 (D samples or tokens seen, P parameters): along N (D and S ~ N)
  slope 0.52 - 1 = -0.48; along width -0.52 * dlogP/dlogwidth.
- Fan et al. 2025 (arXiv 2510.15262): under muP AdamW lam* ~ sqrt(width) with eta ~ 1/width,
  so c* ~ width^-1/2: slope -1/2 along width (muP AdamW chains only).

A law is "followed" where its slope lies inside the t-interval and "contradicted" where it
lies outside; with one seed there is no interval and no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .intervals import seed_slopes, t_interval

__all__ = [
    "LAWS",
    "chain_exponents",
    "exponent_table",
    "ols_slope",
    "predicted_slopes",
    "seed_slope_interval",
]

LAWS = ("Wang & Aitchison", "Loshchilov & Hutter", "Power Lines", "Fan et al.")
POWER_LINES = 0.52


def ols_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y on log x (at least two distinct x, all values > 0)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if (
        x.shape != y.shape
        or len(x) < 2
        or not (np.all(x > 0) and np.all(y > 0))
        or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)))
        or np.ptp(x) == 0
    ):
        raise ValueError(
            f"need >= 2 distinct positive x and positive y, got x={list(x)}, y={list(y)}"
        )
    lx, ly = np.log(x), np.log(y)
    lx = lx - lx.mean()
    return float(lx @ (ly - ly.mean()) / (lx @ lx))


def seed_slope_interval(xs: Sequence[float], arms: Sequence[dict]):
    """The t-interval over seeds of each seed's slope of log lambda* on log x, from the
    arm's per-point dicts (``seed_lam_star``, ``seed_status``). A seed without an optimum
    at some point (all its runs diverged) is left out; edge optima count as censored.
    Returns (interval, fewest lambda points behind one seed's optimum)."""
    n_seeds = len(arms[0]["seed_lam_star"])
    rows, censored = [], 0
    for k in range(n_seeds):
        lam = [a["seed_lam_star"][k] for a in arms]
        if any(v is None for v in lam):
            continue
        rows.append(lam)
        censored += any(a["seed_status"][k] != "ok" for a in arms)
    if not rows:
        return None, 0
    points = min(len(l) for a in arms for l in a.get("seed_lams", [a["lams"]]))
    return t_interval(seed_slopes(xs, rows), censored=censored), points


def predicted_slopes(
    axis: str, optimizer: str, parametrization: str, param_slope: float
) -> dict[str, float | None]:
    """Each law's slope of log c* (the probe tensor's per-step shrink) along ``axis``;
    ``param_slope`` = dlogP/dlogwidth of the arch (for Power Lines along width)."""
    if axis == "data":
        return {
            "Wang & Aitchison": -1.0,
            "Loshchilov & Hutter": -0.5,
            "Power Lines": POWER_LINES - 1.0,
            "Fan et al.": None,
        }
    fan = -0.5 if (optimizer, parametrization) == ("adamw", "mup") else None
    return {
        "Wang & Aitchison": 0.0,
        "Loshchilov & Hutter": 0.0,
        "Power Lines": -POWER_LINES * param_slope,
        "Fan et al.": fan,
    }


def _losses(arm: dict) -> np.ndarray:
    return np.array([[math.inf if v is None else v for v in row] for row in arm["seed_loss"]])


def chain_exponents(
    chain: dict,
    shrink: Callable[[str, int], float],
    steps_per_epoch: Callable[[int], int],
    param_slope: float,
) -> list[dict]:
    """One row per arm of a study chain (as in runs.json): lambda* (the geometric mean of
    the seeds'), c*, tau_epoch per axis point, the slopes with their t-interval over seeds,
    how many seeds (censored among them) and lambda points stand behind them, and each
    law's verdict.
    ``shrink(label, value)``: the probe tensor's c at ``weight_decay = 1`` for that arm."""
    rows = []
    xs = list(chain["values"])
    preds = predicted_slopes(
        chain["axis"], chain["optimizer"], chain["parametrization"], param_slope
    )
    for label in chain["points"][0]["arms"]:
        arms = [p["arms"][label] for p in chain["points"]]
        stars = [a["lam_star"] if a["decay_helps"] else None for a in arms]
        c_stars = [None if s is None else s * shrink(label, x) for s, x in zip(stars, xs)]
        tau = [
            None if c is None else 1.0 / (c * steps_per_epoch(p["n_train"]))
            for c, p in zip(c_stars, chain["points"])
        ]
        row = {
            "chain": f"{chain['axis']}/{chain['optimizer']}/{chain['parametrization']}",
            "label": label,
            "rule": arms[0]["rule"],
            "mode": arms[0]["mode"],
            "values": xs,
            "lam_star": stars,
            "c_star": c_stars,
            "tau_epoch": tau,
            "slope": None,
            "c_slope": None,
            "interval": None,
            "c_interval": None,
            "seeds": 0,
            "censored": 0,
            "points": 0,
            "predicted": preds,
            "verdict": {k: None for k in preds},
        }
        known = [i for i, s in enumerate(stars) if s is not None]
        if len(known) >= 3:
            kx = [xs[i] for i in known]
            iv, points = seed_slope_interval(kx, [arms[i] for i in known])
            # the rule's own dependence on x (c = s(x) * lam), the same for every seed
            sig_slope = ols_slope(kx, [c_stars[i] for i in known]) - ols_slope(
                kx, [stars[i] for i in known]
            )
            if iv is not None:
                row.update(
                    slope=iv.mean,
                    c_slope=iv.mean + sig_slope,
                    seeds=iv.n,
                    censored=iv.censored,
                    points=points,
                )
            if iv is not None and iv.low is not None:
                row["interval"] = (iv.low, iv.high)
                row["c_interval"] = (iv.low + sig_slope, iv.high + sig_slope)
                for law, p in preds.items():
                    if p is not None:
                        inside = row["c_interval"][0] <= p <= row["c_interval"][1]
                        row["verdict"][law] = "follows" if inside else "contradicts"
        rows.append(row)
    return rows


def _g(v, spec=".3g") -> str:
    return "-" if v is None else format(v, spec)


def exponent_table(rows: list[dict]) -> str:
    """Markdown: per arm, the slopes with their t-intervals, the seeds (censored) and fewest
    lambda points per seed behind them, and each law's prediction and verdict (f = follows,
    x = contradicts, - = no prediction or no interval)."""
    head = (
        "| chain | mode | rule | slope log λ\\* [95% t] | slope log c\\* [95% t] | seeds "
        "(censored), λ points per seed | "
        + " | ".join(f"{law} (pred.)" for law in LAWS)
        + " | λ\\* per point | "
        "c\\* = ηλ\\* per point | τ_epoch per point |"
    )
    lines = [head, "|" + "---|" * (9 + len(LAWS))]
    mark = {"follows": "f", "contradicts": "x", None: "-"}
    for r in rows:

        def slope(v, iv):
            return (
                "-" if v is None else f"{v:+.2f}" + (f" [{iv[0]:+.2f}, {iv[1]:+.2f}]" if iv else "")
            )

        laws = [f"{mark[r['verdict'][law]]} ({_g(r['predicted'][law], '+.2f')})" for law in LAWS]
        lines.append(
            f"| {r['chain']} | {r['mode']} | {r['rule']} | "
            f"{slope(r['slope'], r['interval'])} | "
            f"{slope(r['c_slope'], r['c_interval'])} | "
            f"{r['seeds']} ({r['censored']}), {r['points']} | "
            + " | ".join(laws)
            + " | "
            + ", ".join(_g(v) for v in r["lam_star"])
            + " | "
            + ", ".join(_g(v) for v in r["c_star"])
            + " | "
            + ", ".join(_g(v) for v in r["tau_epoch"])
            + " |"
        )
    return "\n".join(lines)


def chain_probe(study: dict, c: dict):
    """For one chain of a study: ``shrink(label, x)``, the probe tensor's per-step shrink
    at ``weight_decay = 1`` for the arm ``label`` at axis point ``x``, and
    ``n_train_at(x)``, the point's training-set size."""
    from .archs import Net
    from .models import Arm, decay_signature
    from .train import steps_per_epoch

    s = study["settings"]
    net = Net(s.get("arch", "mlp"), s["dataset"])  # runs.json from before archs: MLPs
    sizes = {p["value"]: p["n_train"] for p in c["points"]}

    def width_at(x):
        return x if c["axis"] == "width" else s["data_width"]

    def shrink(label, x):
        a = c["points"][0]["arms"][label]
        arm = Arm(c["optimizer"], c["parametrization"], a["rule"], a["mode"])
        m = steps_per_epoch(sizes[x], s["batch_size"])
        sig = decay_signature(
            arm,
            net=net,
            width=width_at(x),
            base_width=s["widths"][0],
            lr=s["lr"][c["optimizer"]],
            steps_per_epoch=m,
            epochs=s["epochs"],
        )
        return sig[net.probe]

    return shrink, sizes.__getitem__, width_at, net


def study_exponents(study: dict) -> list[dict]:
    """:func:`chain_exponents` for every chain of a study (as written to runs.json)."""
    from .train import steps_per_epoch

    s = study["settings"]
    rows = []
    for c in study["chains"].values():
        shrink, _, width_at, net = chain_probe(study, c)
        widths = [width_at(x) for x in c["values"]]
        p_slope = (
            ols_slope(widths, [net.param_count(w) for w in widths]) if c["axis"] == "width" else 0.0
        )
        rows += chain_exponents(c, shrink, lambda n: steps_per_epoch(n, s["batch_size"]), p_slope)
    return rows


def write_exponent_figure(rows: list[dict], path: str) -> str:
    """One panel per chain: c* of plain decay (both modes) against the axis on log axes,
    the fitted line, and each law's predicted slope drawn through the first point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    chains = list(dict.fromkeys(r["chain"] for r in rows))
    fig, axes = plt.subplots(1, len(chains), squeeze=False, figsize=(3.2 * len(chains), 3.2))
    styles = dict(zip(LAWS, [":", "--", "-.", (0, (1, 3))]))
    for chain, ax in zip(chains, axes[0]):
        plain = [r for r in rows if r["chain"] == chain and r["rule"] == "none"]
        for r, color in zip(plain, ("tab:blue", "tab:orange")):
            pts = [(x, c) for x, c in zip(r["values"], r["c_star"]) if c is not None]
            if not pts:
                continue
            xs, cs = zip(*pts)
            ax.plot(
                xs, cs, "o", color=color, ms=4, label=f"{r['mode']}: {_g(r['c_slope'], '+.2f')}"
            )
            if r["c_slope"] is not None:
                gm = math.exp(np.mean(np.log(cs)) - r["c_slope"] * np.mean(np.log(xs)))
                ax.plot(xs, [gm * x ** r["c_slope"] for x in xs], "-", color=color, lw=1)
        first = next((r for r in plain if r["c_star"][0] is not None), None)
        if first is not None:
            x0, c0, x1 = first["values"][0], first["c_star"][0], first["values"][-1]
            for law, k in first["predicted"].items():
                if k is not None:
                    ax.plot(
                        [x0, x1],
                        [c0, c0 * (x1 / x0) ** k],
                        linestyle=styles[law],
                        color="0.4",
                        lw=1,
                        label=f"{law} {k:+.2f}",
                    )
        ax.set_xscale("log")
        ax.set_yscale("log")
        # label the axis points themselves: log-scale minor labels overlap on short ranges
        values = next((r["values"] for r in plain), None)
        if values:
            ax.set_xticks(values)
            ax.set_xticklabels([f"{v:g}" for v in values])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(chain, fontsize=8)
        ax.set_xlabel("width" if chain.startswith("width") else "training samples", fontsize=7)
        ax.set_ylabel("c* = per-step shrink at λ*", fontsize=7)
        ax.tick_params(labelsize=6)
        if ax.get_legend_handles_labels()[0]:  # nothing identified: no legend
            ax.legend(fontsize=5, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
