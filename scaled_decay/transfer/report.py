"""The study's outputs: the drift table (markdown), the figures (PNG) and every run (JSON)."""

from __future__ import annotations

import json
import math
import os

from .figures import write_drift_figure, write_figures
from .names import RULE_LABELS

__all__ = [
    "drift_table",
    "load_study",
    "summary_table",
    "to_strict_json",
    "write_drift_figure",
    "write_figures",
    "write_outputs",
]


def _lam(v, arm: dict) -> str:
    """lambda* where decay helps there; "-" where it does not (the value would be noise)."""
    return "-" if v is None or not arm["decay_helps"] else f"{v:.3g}"


def _signed(v: float) -> str:
    return f"{v:+.2f}"


def _chains(study: dict, axis: str) -> list[dict]:
    return [c for c in study["chains"].values() if c["axis"] == axis]


def drift_table(study: dict) -> str:
    """Markdown: one row per arm, lambda* at both ends of the axis and its drift."""
    s = study["settings"]
    lines = [
        f"Dataset: {s['dataset']}; {s['seeds']} seed(s), {s['epochs']} epochs, batch "
        f"{s['batch_size']}, lr {s['lr']} (base width), held-out NLL at the end of "
        f"training. lambda*: geometric mean over seeds of each seed's own optimum "
        f"(coarse half-decade grid, then a 1/8-decade window of +-{s.get('refine_half_span', 0)} "
        f"decade around it, weighted quadratic fit in log lambda). drift = mean over seeds "
        f"of log2(lambda*(last) / lambda*(first)) [95% t-interval over seeds]; n: seeds "
        f"(censored: an optimum at the edge of the seed's lambdas, kept at the edge), pts: "
        f"fewest lambdas behind one seed's optimum. verdict: holds (interval within +-1 "
        f"and containing 0), holds within 2x (within +-1, excluding 0), does not hold "
        f"(beyond +-1), else unresolved; with 1 seed the point decides."
    ]
    if study.get("partial"):
        lines.append(
            "PARTIAL: written from the runs finished so far (--finished-only); "
            + "; ".join(f"{k}: {v}" for k, v in study["partial"].items())
            + "."
        )
    if study.get("wall_seconds") is not None:
        lines.append(
            f"Wall time {study['wall_seconds'] / 60:.1f} min: {study['trained']} "
            f"runs trained, {study['cached']} taken from the cache."
        )
    lines.append("")
    for axis, title in (("width", "Width arm"), ("data", "Data arm")):
        chains = _chains(study, axis)
        if not chains:
            continue
        first, last = chains[0]["values"][0], chains[0]["values"][-1]
        sym = "n" if axis == "width" else "n_train"
        fixed = (
            f"n_train = {s['n_train']}"
            if axis == "width"
            else f"width = {s['data_width']}, standard parametrization"
        )
        lines += [
            f"### {title}: {sym} = {first} -> {last} ({fixed})",
            "",
            f"| optimizer | param. | mode | rule | lambda*({sym}={first}) | "
            f"lambda*({sym}={last}) | drift [95% t] | n (censored), pts | verdict | "
            f"NLL at {sym}={last}: lambda=0 -> best |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in chains:
            end = c["points"][-1]
            zero = _mean(end["zero_loss"])
            for label, row in c["summary"].items():
                a0, a1 = c["points"][0]["arms"][label], end["arms"][label]
                best = min(
                    (v for v in end["arms"][label]["mean_loss"] if v is not None), default=None
                )
                if row["identifiable"]:
                    d, ok = _drift_text(row), row["verdict"]
                    n = f"{row['seeds']} ({row['censored']}), {row['points']}"
                else:
                    d, ok, n = f"not identifiable: {row['reason']}", "-", "-"
                lines.append(
                    f"| {c['optimizer']} | {c['parametrization']} | {row['mode']} | "
                    f"{RULE_LABELS[row['rule']]} | {_lam(row['lam_first'], a0)} | "
                    f"{_lam(row['lam_last'], a1)} | {d} | {n} | {ok} | "
                    f"{_loss(zero)} -> {_loss(best)} |"
                )
        lines.append("")
    return "\n".join(lines)


def summary_table(study: dict) -> str:
    """Markdown, one row per optimizer x parametrization x rule, the two modes side by side:
    drift [t-interval] and its verdict, for docs/study.md."""
    lines = (
        []
        if not study.get("partial")
        else [
            "PARTIAL (--finished-only): "
            + "; ".join(f"{k}: {v}" for k, v in study["partial"].items()),
            "",
        ]
    )
    for axis in ("width", "data"):
        chains = _chains(study, axis)
        if not chains:
            continue
        v = chains[0]["values"]
        sym = "n" if axis == "width" else "n_train"
        modes = list(dict.fromkeys(r["mode"] for r in chains[0]["summary"].values()))
        lines += [
            f"| {axis} arm, {sym} {v[0]} -> {v[-1]} | rule | "
            + " | ".join(f"drift, {m}" for m in modes)
            + " |",
            "|---|---|" + "---|" * len(modes),
        ]
        for c in chains:
            rules = list(dict.fromkeys(r["rule"] for r in c["summary"].values()))
            for rule in rules:
                cells = []
                for m in modes:
                    r = next(
                        r for r in c["summary"].values() if r["rule"] == rule and r["mode"] == m
                    )
                    cells.append(_drift_cell(r))
                lines.append(
                    f"| {c['optimizer']} / {c['parametrization']} | "
                    f"{RULE_LABELS[rule]} | " + " | ".join(cells) + " |"
                )
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


def to_strict_json(obj):
    """The study as strict JSON data: non-finite floats become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict_json(v) for v in obj]
    return obj


def write_outputs(study: dict, out_dir: str) -> dict[str, str]:
    """Write drift.md, runs.json and the figure(s) into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"table": os.path.join(out_dir, "drift.md"), "json": os.path.join(out_dir, "runs.json")}
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
    paths["exponent_figure"] = write_exponent_figure(rows, os.path.join(out_dir, "exponents.png"))
    paths.update(write_figures(study, out_dir))
    paths["drift_figure"] = write_drift_figure(study, out_dir)
    from .collapse import write_collapse_figure

    paths["collapse_figure"] = write_collapse_figure(study, os.path.join(out_dir, "collapse.png"))
    if study["settings"].get("tokens_per_param"):
        from .tokens import token_table

        paths["tokens"] = os.path.join(out_dir, "tokens.md")
        with open(paths["tokens"], "w") as f:
            f.write(token_table(study))
    return paths


def exponents_markdown(study: dict, rows: list[dict]) -> str:
    """exponents.md: fitted slopes of log lambda* and of log c* = eta*lambda* per arm
    (``rows`` from ``exponents.study_exponents``), with t-intervals over seeds, against
    the published laws (see ``exponents.py``)."""
    from .exponents import exponent_table

    s = study["settings"]
    return "\n".join(
        [
            "# Exponents: slope of log λ\\* against log width and log N",
            "",
            f"Dataset {s['dataset']}, {s['seeds']} seed(s). Slopes by least squares over the "
            f"axis points where λ\\* is identified (at least 3 needed), one per seed from that "
            f"seed's own refined λ\\*; the mean slope with its 95% t-interval over the seeds "
            f"(none with one seed). Censored seeds have an optimum at the edge of their λs "
            f"somewhere, kept at that edge (so their slope is a bound). c\\* = the hidden "
            f"weight's per-step shrink at the initial lr (ηλ\\* for decoupled plain decay), "
            f"τ_epoch = 1/(c\\* M). Laws predict the slope of log c\\* (f: inside the interval, "
            f"x: outside, -: no prediction or no interval); see "
            f"scaled_decay/transfer/exponents.py.",
            "![c\\* against the axis, fitted and predicted slopes](exponents.png)",
            "",
            exponent_table(rows),
            "",
        ]
    )


def load_study(out_dir: str) -> dict:
    """A study as written by :func:`write_outputs` (its runs.json), to re-plot it."""
    path = os.path.join(out_dir, "runs.json")
    try:
        with open(path) as f:
            study = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"--replot: cannot read a study from {path}: {e}") from None
    from types import SimpleNamespace

    from .outcomes import summarize_chain

    for c in study["chains"].values():  # a study from before issue 18: its verdicts anew
        if any("verdict" not in r for r in c["summary"].values()):
            c["summary"] = summarize_chain(SimpleNamespace(axis=c["axis"]), c["points"])
    return study
