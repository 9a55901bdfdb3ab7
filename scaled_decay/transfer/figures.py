"""The study's figures: loss curves per rule and width (``transfer.png``,
``transfer_data.png``) and every arm's drift with its interval (``drift.png``)."""

from __future__ import annotations

import os

from .names import RULE_LABELS

__all__ = ["write_drift_figure", "write_figures"]


def _signed(v: float) -> str:
    return f"{v:+.2f}"


def _chains(study: dict, axis: str):
    return [c for c in study["chains"].values() if c["axis"] == axis]


def write_figures(study: dict, out_dir: str) -> dict[str, str]:
    """One panel per rule (columns) and optimizer/parametrization/mode (rows): held-out
    loss against lambda, one line per width (or data size), lambda* marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    for axis, name in (("width", "transfer.png"), ("data", "transfer_data.png")):
        chains = _chains(study, axis)
        if not chains:
            continue
        rules = list(dict.fromkeys(r["rule"] for r in chains[0]["summary"].values()))
        rows = [
            (c, mode)
            for c in chains
            for mode in dict.fromkeys(r["mode"] for r in c["summary"].values())
        ]
        fig, axes = plt.subplots(
            len(rows), len(rules), squeeze=False, figsize=(3.3 * len(rules), 2.5 * len(rows))
        )
        cmap = plt.get_cmap("viridis")
        for (c, mode), ax_row in zip(rows, axes):
            for rule, ax in zip(rules, ax_row):
                label = next(
                    k for k, r in c["summary"].items() if r["rule"] == rule and r["mode"] == mode
                )
                _panel(ax, c, label, cmap, axis)
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="upper center", ncol=len(names), frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / len(rows)))
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths[f"{axis}_figure"] = path
    return paths


def write_drift_figure(study: dict, out_dir: str) -> str:
    """Summary: every arm's drift with its seed range, and the factor-2 band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for c in study["chains"].values():
        for r in c["summary"].values():
            name = (
                f"{c['axis']}: {c['optimizer']}/{c['parametrization']}/{r['mode']}/"
                f"{RULE_LABELS[r['rule']]}"
            )
            rows.append((name, r))
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(rows) + 1.2))
    for i, (_, r) in enumerate(rows):
        if r["identifiable"]:
            color = {
                "holds": "tab:green",
                "holds within 2x": "tab:olive",
                "does not hold": "tab:red",
            }.get(r["verdict"], "tab:orange")
            if r.get("drift_low") is not None:
                ax.plot([r["drift_low"], r["drift_high"]], [i, i], "-", color=color, lw=2)
            ax.plot([r["drift"]], [i], "o", color=color, ms=4)
        else:
            ax.text(0, i, "not identifiable", fontsize=6, va="center", ha="center")
    ax.axvspan(-1, 1, color="0.9", zorder=0)
    ax.axvline(0, color="0.5", lw=0.5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([n for n, _ in rows], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel(
        "drift = log2(lambda*(last) / lambda*(first)), bar: 95% t-interval over "
        "seeds; grey band: within 2x\ngreen: holds, olive: holds within 2x, red: "
        "does not hold, orange: unresolved",
        fontsize=8,
    )
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "drift.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _panel(ax, chain: dict, label: str, cmap, axis: str) -> None:
    points = chain["points"]
    sym = "n" if axis == "width" else "n_train"
    for i, p in enumerate(points):
        a = p["arms"][label]
        color = cmap(i / max(len(points) - 1, 1))
        xs = [x for x, y in zip(a["lams"], a["mean_loss"]) if y is not None]
        ys = [y for y in a["mean_loss"] if y is not None]
        ax.plot(xs, ys, "o-", ms=2.5, lw=1, color=color, label=f"{sym}={p['value']}")
        for lams, curve in zip(a.get("seed_lams", []), a.get("seed_curve", [])):
            fine = [(x, y) for x, y in zip(lams, curve) if y is not None and x not in a["lams"]]
            if fine:  # the refinement windows, per seed
                ax.plot(*zip(*fine), ".", ms=2, color=color)
        if a["lam_star"] is not None and a["decay_helps"]:
            ax.plot([a["lam_star"]], [min(ys)], "*", ms=9, color=color, mec="k", mew=0.5)
    row = chain["summary"][label]
    verdict = (
        f"drift {_signed(row['drift'])}: {row['verdict']}"
        if row["identifiable"]
        else "not identifiable"
    )
    ax.set_xscale("log")
    ax.set_title(
        f"{chain['optimizer']}/{chain['parametrization']}/{row['mode']}\n"
        f"{RULE_LABELS[row['rule']]}: {verdict}",
        fontsize=8,
    )
    ax.tick_params(labelsize=7)
    ax.set_xlabel("lambda (the rule's weight_decay)", fontsize=7)
    ax.set_ylabel("held-out NLL", fontsize=7)
