"""The token-budget arm read as the laws state it: the EMA timescale tau = 1 / (eta * lambda*)
in tokens and in epochs, against tokens per parameter (TPP).

In one epoch, tau_epoch = tau_iter / steps = tau_tokens / D (D tokens seen). Power Lines
(Bergsma et al. 2025) fit tau_epoch ~ TPP^-0.52; Wang & Aitchison 2024 hold tau_epoch
constant. Along the width at a fixed 20 TPP both predict a constant tau_epoch, i.e.
tau_tokens ~ D ~ parameters (slope +1 of log tau_tokens on log P); along the TPP axis at a
fixed width they part: slope of log tau_epoch on log TPP -0.52 (Power Lines) against 0 (W&A).
Each seed gives its own slope; the interval is the t-interval over seeds.
"""

from __future__ import annotations

import numpy as np

from .intervals import seed_slopes, t_interval

__all__ = ["POWER_LINES_TAU", "token_rows", "token_table"]

POWER_LINES_TAU = -0.52


def token_rows(study: dict) -> list[dict]:
    """Per chain and arm (plain decay): per point TPP, lambda*, c*, tau in steps, tokens and
    epochs, and the slope of log tau_epoch on log TPP (data axis) or of log tau_tokens on
    log P (width axis) with its t-interval over seeds."""
    from .corpora import TEXT_CONTEXT
    from .exponents import chain_probe
    from .train import steps_per_epoch

    s = study["settings"]
    rows = []
    for c in study["chains"].values():
        shrink, n_train_at, width_at, net = chain_probe(study, c)
        for label, a0 in c["points"][0]["arms"].items():
            if a0["rule"] != "none":
                continue
            pts, seeds_tau, seeds_ok = [], [], True
            for p in c["points"]:
                a, x = p["arms"][label], p["value"]
                params = net.param_count(width_at(x))
                tokens = n_train_at(x) * TEXT_CONTEXT
                steps = steps_per_epoch(n_train_at(x), s["batch_size"]) * s["epochs"]
                per_step = shrink(label, x)
                c_star = a["lam_star"] * per_step if a["lam_star"] and a["decay_helps"] else None
                pts.append(
                    {
                        "value": x,
                        "params": params,
                        "tokens": tokens,
                        "tpp": tokens * s["epochs"] / params,
                        "c_star": c_star,
                        "tau_steps": 1 / c_star if c_star else None,
                        "tau_tokens": tokens * s["epochs"] / (c_star * steps) if c_star else None,
                        "tau_epoch": 1 / (c_star * steps) * s["epochs"] if c_star else None,
                    }
                )
                if c_star is None or None in a["seed_lam_star"]:
                    seeds_ok = False
                else:
                    seeds_tau.append(
                        [1 / (lam * per_step * steps) * s["epochs"] for lam in a["seed_lam_star"]]
                    )
            row = {
                "chain": f"{c['axis']}/{c['optimizer']}/{c['parametrization']}",
                "axis": c["axis"],
                "mode": a0["mode"],
                "points": pts,
                "slope": None,
                "interval": None,
                "seeds": 0,
                "censored": 0,
            }
            if seeds_ok and len(pts) >= 3:
                per_seed = np.array(seeds_tau).T  # seeds x points, tau_epoch
                if c["axis"] == "width":  # log tau_tokens on log P: tau_tokens = tau_epoch D
                    xs = [p["params"] for p in pts]
                    per_seed = per_seed * np.array([p["tokens"] for p in pts])
                else:
                    xs = [p["tpp"] for p in pts]
                censored = sum(
                    any(p["arms"][label]["seed_status"][k] != "ok" for p in c["points"])
                    for k in range(len(per_seed))
                )
                iv = t_interval(seed_slopes(xs, per_seed), censored=censored)
                row.update(
                    slope=iv.mean,
                    interval=None if iv.low is None else (iv.low, iv.high),
                    seeds=iv.n,
                    censored=censored,
                )
            rows.append(row)
    return rows


def _g(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def token_table(study: dict) -> str:
    """tokens.md: the timescales per point, and the slopes against the two laws."""
    s = study["settings"]
    lines = [
        f"# Token budget: one epoch on {s['tokens_per_param']:g} tokens per parameter "
        f"(width axis) and a tokens-per-parameter axis at width {s['data_width']}",
        "",
        f"{s['seeds']} seed(s), batch {s['batch_size']} windows, AdamW lr "
        f"{s['lr'].get('adamw')}. c\\* = the hidden weight's per-step shrink at λ\\* "
        f"(geometric mean over seeds), τ = 1/c\\* steps, τ_tokens = τ · tokens per step, "
        f"τ_epoch = τ / steps (one epoch). Predicted: width axis, slope of log τ_tokens "
        f"on log P = +1 for both Power Lines and Wang & Aitchison (fixed TPP: τ_epoch "
        f"constant); TPP axis, slope of log τ_epoch on log TPP = {POWER_LINES_TAU} "
        f"(Power Lines) or 0 (W&A). Interval: 95% t over seeds (censored: an optimum at "
        f"the edge of a seed's λs, kept at the edge).",
        "",
        "| chain | mode | slope [95% t] | seeds (censored) | TPP per point | λ\\*·η = c\\* "
        "per point | τ_tokens per point | τ_epoch per point |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in token_rows(study):
        slope = (
            "-"
            if r["slope"] is None
            else f"{r['slope']:+.2f}"
            + (f" [{r['interval'][0]:+.2f}, {r['interval'][1]:+.2f}]" if r["interval"] else "")
        )
        p = r["points"]
        lines.append(
            f"| {r['chain']} | {r['mode']} | {slope} | {r['seeds']} "
            f"({r['censored']}) | "
            + ", ".join(f"{q['tpp']:.3g}" for q in p)
            + " | "
            + ", ".join(_g(q["c_star"]) for q in p)
            + " | "
            + ", ".join(_g(q["tau_tokens"]) for q in p)
            + " | "
            + ", ".join(_g(q["tau_epoch"]) for q in p)
            + " |"
        )
    return "\n".join(lines) + "\n"
