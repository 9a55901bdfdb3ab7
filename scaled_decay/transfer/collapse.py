"""The collapse figure: transfer at a glance.

Per arm (optimizer x parametrization x decay mode, plain decay), held-out loss against the
probe tensor's per-step shrink ``c = eta * lambda`` (what one step removes of the hidden
weight; for the data arm ``c * M``, the shrink per epoch = 1 / tau_epoch), every width (or
training-set size) on one axis: the seed band (min to max over seeds on the common coarse
grid), the seed mean, each seed's refinement points, the optimum (star) and the loss without
decay (dashed, the width's colour). Where a constant per-step shrink transfers, the curves'
minima line up vertically; where they slide sideways, lambda must be retuned.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["collapse_curves", "write_collapse_figure"]


def collapse_curves(study: dict, chain: dict, label: str) -> list[dict]:
    """Per axis point of ``chain``: the arm ``label``'s curves on the shrink axis.

    Each dict: ``value``, ``x`` (coarse grid, in c or c*M), ``mean``, ``low``, ``high`` (over
    seeds; None where a seed diverged), ``fine`` (x, loss) of the refinement points,
    ``star`` (x of lambda*, or None), ``zero`` (mean loss at lambda = 0, or None)."""
    from .exponents import chain_probe
    from .train import steps_per_epoch

    shrink, n_train_at, _, _ = chain_probe(study, chain)
    per_epoch = chain["axis"] == "data"
    out = []
    for p in chain["points"]:
        a = p["arms"][label]
        scale = shrink(label, p["value"])
        if per_epoch:
            scale *= steps_per_epoch(n_train_at(p["value"]), study["settings"]["batch_size"])
        rows = np.array([[math.nan if v is None else v for v in r] for r in a["seed_loss"]])
        ok = np.isfinite(rows).all(axis=0)
        fine = [
            (lam * scale, y)
            for lams, curve in zip(a.get("seed_lams", []), a.get("seed_curve", []))
            for lam, y in zip(lams, curve)
            if y is not None and lam not in a["lams"]
        ]
        zero = [v for v in p["zero_loss"] if v is not None and math.isfinite(v)]
        out.append(
            {
                "value": p["value"],
                "x": [lam * scale for lam in a["lams"]],
                "mean": [float(m) if k else None for m, k in zip(rows.mean(0), ok)],
                "low": [float(m) if k else None for m, k in zip(rows.min(0), ok)],
                "high": [float(m) if k else None for m, k in zip(rows.max(0), ok)],
                "fine": fine,
                "star": a["lam_star"] * scale if a["lam_star"] and a["decay_helps"] else None,
                "zero": float(np.mean(zero)) if len(zero) == len(p["zero_loss"]) else None,
            }
        )
    return out


def write_collapse_figure(study: dict, path: str) -> str:
    """One panel per chain (rows) and decay mode (columns), plain decay: see the module."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chains = list(study["chains"].values())
    modes = list(dict.fromkeys(a["mode"] for a in chains[0]["points"][0]["arms"].values()))
    fig, axes = plt.subplots(
        len(chains), len(modes), squeeze=False, figsize=(3.6 * len(modes), 2.6 * len(chains))
    )
    cmap = plt.get_cmap("viridis")
    for c, ax_row in zip(chains, axes):
        for mode, ax in zip(modes, ax_row):
            label = next(
                (
                    k
                    for k, a in c["points"][0]["arms"].items()
                    if a["rule"] == "none" and a["mode"] == mode
                ),
                None,
            )
            if label is None:
                ax.set_visible(False)
                continue
            _panel(ax, study, c, label, mode, cmap)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _panel(ax, study, chain, label, mode, cmap) -> None:
    curves = collapse_curves(study, chain, label)
    sym = "n" if chain["axis"] == "width" else "N"
    for i, cv in enumerate(curves):
        color = cmap(i / max(len(curves) - 1, 1))
        band = [(x, lo, hi) for x, lo, hi in zip(cv["x"], cv["low"], cv["high"]) if lo is not None]
        if band:
            xs, lo, hi = zip(*band)
            ax.fill_between(xs, lo, hi, color=color, alpha=0.25, lw=0)
        mean = [(x, m) for x, m in zip(cv["x"], cv["mean"]) if m is not None]
        if mean:
            ax.plot(*zip(*mean), "-", color=color, lw=1, label=f"{sym}={cv['value']}")
        if cv["fine"]:
            ax.plot(*zip(*cv["fine"]), ".", color=color, ms=2)
        if cv["zero"] is not None:
            ax.axhline(cv["zero"], color=color, ls="--", lw=0.8)
        if cv["star"] is not None and mean:
            ax.plot(
                [cv["star"]], [min(m for _, m in mean)], "*", color=color, ms=8, mec="k", mew=0.4
            )
    ax.set_xscale("log")
    ax.set_title(
        f"{chain['axis']}: {chain['optimizer']}/{chain['parametrization']}/{mode}", fontsize=8
    )
    ax.set_xlabel(
        "c = η·λ, hidden weight's shrink per step"
        if chain["axis"] == "width"
        else "c·M, shrink per epoch (1/τ_epoch)",
        fontsize=7,
    )
    ax.set_ylabel("held-out NLL (dashed: λ = 0)", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=5, frameon=False)
