"""The study's outputs: the drift table (markdown), the figures (PNG) and every run (JSON)."""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List

from .names import RULE_LABELS

__all__ = ["drift_table", "summary_table", "write_outputs", "write_figures", "write_drift_figure",
           "load_study", "to_strict_json"]


def _lam(v, arm: dict) -> str:
    """lambda* where decay helps there; "-" where it does not (the value would be noise)."""
    return "-" if v is None or not arm["decay_helps"] else f"{v:.3g}"


def _signed(v: float) -> str:
    return f"{v:+.2f}"


def _chains(study: dict, axis: str) -> List[dict]:
    return [c for c in study["chains"].values() if c["axis"] == axis]


def drift_table(study: dict) -> str:
    """Markdown: one row per arm, lambda* at both ends of the axis and its drift."""
    s = study["settings"]
    lines = [f"Dataset: {s['dataset']}; {s['seeds']} seed(s), {s['epochs']} epochs, batch "
             f"{s['batch_size']}, lr {s['lr']} (base width), held-out NLL at the end of "
             f"training. lambda*: geometric mean over seeds of each seed's own optimum "
             f"(coarse half-decade grid, then a 1/8-decade window of +-{s.get('refine_half_span', 0)} "
             f"decade around it, weighted quadratic fit in log lambda). drift = mean over seeds "
             f"of log2(lambda*(last) / lambda*(first)) [95% t-interval over seeds]; n: seeds "
             f"(censored: an optimum at the edge of the seed's lambdas, kept at the edge), pts: "
             f"fewest lambdas behind one seed's optimum. verdict: holds (interval within +-1 "
             f"and containing 0), holds within 2x (within +-1, excluding 0), does not hold "
             f"(beyond +-1), else unresolved; with 1 seed the point decides."]
    if study.get("wall_seconds") is not None:
        lines.append(f"Wall time {study['wall_seconds'] / 60:.1f} min: {study['trained']} "
                     f"runs trained, {study['cached']} taken from the cache.")
    lines.append("")
    for axis, title in (("width", "Width arm"), ("data", "Data arm")):
        chains = _chains(study, axis)
        if not chains:
            continue
        first, last = chains[0]["values"][0], chains[0]["values"][-1]
        sym = "n" if axis == "width" else "n_train"
        fixed = (f"n_train = {s['n_train']}" if axis == "width"
                 else f"width = {s['data_width']}, standard parametrization")
        lines += [f"### {title}: {sym} = {first} -> {last} ({fixed})", "",
                  f"| optimizer | param. | mode | rule | lambda*({sym}={first}) | "
                  f"lambda*({sym}={last}) | drift [95% t] | n (censored), pts | verdict | "
                  f"NLL at {sym}={last}: lambda=0 -> best |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c in chains:
            end = c["points"][-1]
            zero = _mean(end["zero_loss"])
            for label, row in c["summary"].items():
                a0, a1 = c["points"][0]["arms"][label], end["arms"][label]
                best = min((v for v in end["arms"][label]["mean_loss"] if v is not None),
                           default=None)
                if row["identifiable"]:
                    d, ok = _drift_text(row), row["verdict"]
                    n = f"{row['seeds']} ({row['censored']}), {row['points']}"
                else:
                    d, ok, n = f"not identifiable: {row['reason']}", "-", "-"
                lines.append(
                    f"| {c['optimizer']} | {c['parametrization']} | {row['mode']} | "
                    f"{RULE_LABELS[row['rule']]} | {_lam(row['lam_first'], a0)} | "
                    f"{_lam(row['lam_last'], a1)} | {d} | {n} | {ok} | "
                    f"{_loss(zero)} -> {_loss(best)} |")
        lines.append("")
    return "\n".join(lines)


def summary_table(study: dict) -> str:
    """Markdown, one row per optimizer x parametrization x rule, the two modes side by side:
    drift [seed range] and whether lambda* stays within 2x ("ok"), for the README."""
    lines = []
    for axis in ("width", "data"):
        chains = _chains(study, axis)
        if not chains:
            continue
        v = chains[0]["values"]
        sym = "n" if axis == "width" else "n_train"
        modes = list(dict.fromkeys(r["mode"] for r in chains[0]["summary"].values()))
        lines += [f"| {axis} arm, {sym} {v[0]} -> {v[-1]} | rule | "
                  + " | ".join(f"drift, {m}" for m in modes) + " |",
                  "|---|---|" + "---|" * len(modes)]
        for c in chains:
            rules = list(dict.fromkeys(r["rule"] for r in c["summary"].values()))
            for rule in rules:
                cells = []
                for m in modes:
                    r = next(r for r in c["summary"].values()
                             if r["rule"] == rule and r["mode"] == m)
                    cells.append(_drift_cell(r))
                lines.append(f"| {c['optimizer']} / {c['parametrization']} | "
                             f"{RULE_LABELS[rule]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _drift_text(r: dict) -> str:
    """drift [t-interval], or the point alone with one seed."""
    if r.get("drift_low") is None:
        return f"{_signed(r['drift'])} (1 seed)"
    return f"{_signed(r['drift'])} [{_signed(r['drift_low'])}, {_signed(r['drift_high'])}]"


def _drift_cell(r: dict) -> str:
    if not r["identifiable"]:
        return "not identifiable"
    if r.get("drift_low") is None:
        return f"{_drift_text(r)} {r['verdict']}"
    censored = f", {r['censored']} censored" if r.get("censored") else ""
    return f"{_drift_text(r)} {r['verdict']} (n={r['seeds']}{censored})"


def _mean(values) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if len(vals) == len(values) and vals else math.inf


def _loss(v) -> str:
    return "diverged" if v is None or not math.isfinite(v) else f"{v:.3f}"


def write_figures(study: dict, out_dir: str) -> Dict[str, str]:
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
        rows = [(c, mode) for c in chains
                for mode in dict.fromkeys(r["mode"] for r in c["summary"].values())]
        fig, axes = plt.subplots(len(rows), len(rules), squeeze=False,
                                 figsize=(3.3 * len(rules), 2.5 * len(rows)))
        cmap = plt.get_cmap("viridis")
        for (c, mode), ax_row in zip(rows, axes):
            for rule, ax in zip(rules, ax_row):
                label = next(k for k, r in c["summary"].items()
                             if r["rule"] == rule and r["mode"] == mode)
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
        for label, r in c["summary"].items():
            name = (f"{c['axis']}: {c['optimizer']}/{c['parametrization']}/{r['mode']}/"
                    f"{RULE_LABELS[r['rule']]}")
            rows.append((name, r))
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(rows) + 1.2))
    for i, (name, r) in enumerate(rows):
        if r["identifiable"]:
            color = {"holds": "tab:green", "holds within 2x": "tab:olive",
                     "does not hold": "tab:red"}.get(r["verdict"], "tab:orange")
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
    ax.set_xlabel("drift = log2(lambda*(last) / lambda*(first)), bar: 95% t-interval over "
                  "seeds; grey band: within 2x\ngreen: holds, olive: holds within 2x, red: "
                  "does not hold, orange: unresolved", fontsize=8)
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
    verdict = (f"drift {_signed(row['drift'])}: {row['verdict']}" if row["identifiable"]
               else "not identifiable")
    ax.set_xscale("log")
    ax.set_title(f"{chain['optimizer']}/{chain['parametrization']}/{row['mode']}\n"
                 f"{RULE_LABELS[row['rule']]}: {verdict}", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("lambda (the rule's weight_decay)", fontsize=7)
    ax.set_ylabel("held-out NLL", fontsize=7)


def to_strict_json(obj):
    """The study as strict JSON data: non-finite floats become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict_json(v) for v in obj]
    return obj


def write_outputs(study: dict, out_dir: str) -> Dict[str, str]:
    """Write drift.md, runs.json and the figure(s) into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"table": os.path.join(out_dir, "drift.md"),
             "json": os.path.join(out_dir, "runs.json")}
    with open(paths["table"], "w") as f:
        f.write(drift_table(study))
    paths["summary"] = os.path.join(out_dir, "summary.md")
    with open(paths["summary"], "w") as f:
        f.write(summary_table(study))
    with open(paths["json"], "w") as f:
        json.dump(to_strict_json(study), f, indent=1, allow_nan=False)
    from .exponents import study_exponents, write_exponent_figure

    rows = study_exponents(study)
    paths["exponents"] = os.path.join(out_dir, "exponents.md")
    with open(paths["exponents"], "w") as f:
        f.write(exponents_markdown(study, rows))
    paths["exponent_figure"] = write_exponent_figure(rows, os.path.join(out_dir,
                                                                        "exponents.png"))
    paths.update(write_figures(study, out_dir))
    paths["drift_figure"] = write_drift_figure(study, out_dir)
    from .collapse import write_collapse_figure

    paths["collapse_figure"] = write_collapse_figure(study, os.path.join(out_dir,
                                                                         "collapse.png"))
    if study["settings"].get("tokens_per_param"):
        from .tokens import token_table

        paths["tokens"] = os.path.join(out_dir, "tokens.md")
        with open(paths["tokens"], "w") as f:
            f.write(token_table(study))
    return paths


def exponents_markdown(study: dict, rows: List[dict]) -> str:
    """exponents.md: fitted slopes of log lambda* and of log c* = eta*lambda* per arm
    (``rows`` from ``exponents.study_exponents``), with t-intervals over seeds, against
    the published laws (see ``exponents.py``)."""
    from .exponents import exponent_table

    s = study["settings"]
    return "\n".join([
        "# Exponents: slope of log λ* against log width and log N",
        "",
        f"Dataset {s['dataset']}, {s['seeds']} seed(s). Slopes by least squares over the axis "
        f"points where λ* is identified (at least 3 needed), one per seed from that seed's own "
        f"refined λ*; the mean slope with its 95% t-interval over the seeds (none with one "
        f"seed). Censored seeds have an optimum at the edge of their λs somewhere, kept at "
        f"that edge (so their slope is a bound). c* = the hidden weight's "
        f"per-step shrink at the initial lr (ηλ* for decoupled plain decay), τ_epoch = "
        f"1/(c* M). Laws predict the slope of log c* (f: inside the interval, x: outside, "
        f"-: no prediction or no interval); see scaled_decay/transfer/exponents.py.",
        "![c* against the axis, fitted and predicted slopes](exponents.png)", "",
        exponent_table(rows), ""])


def load_study(out_dir: str) -> dict:
    """A study as written by :func:`write_outputs` (its runs.json), to re-plot it."""
    path = os.path.join(out_dir, "runs.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"--replot: cannot read a study from {path}: {e}") from None
