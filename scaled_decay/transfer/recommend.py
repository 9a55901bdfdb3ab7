"""The recommendation table (docs/study.md), computed from recorded studies (never written by hand).

``python -m scaled_decay.transfer.recommend DIR [DIR ...] > recommendation.md`` reads each
study's ``runs.json`` and, for every situation, puts each candidate rule's evidence side by
side -- per study: drift [95% t-interval over seeds], its verdict, the seeds (censored) and
the fewest lambda points per seed behind it. The rule recommended is the candidate whose
*worst* verdict over the studies is best (holds > holds within 2x > unresolved > does not
hold; a study that could not identify lambda*, or did not run the arm, counts as
unresolved), ties broken by its verdicts over all studies together (so a measured "holds
within 2x" on one arm beats a lambda* another arm could not identify), then by the smaller
largest |drift|. The row's verdict: see ``_agreement``; where studies differ it names each
study's verdict. A study that lacks an arm is not cited in the evidence.
"""

from __future__ import annotations

import argparse
import sys

from .names import RULE_LABELS
from .report import load_study

__all__ = ["SITUATIONS", "main", "recommendation_table"]

# situation -> (axis, chain suffix "optimizer/param", candidate (mode, rule) pairs)
SITUATIONS: list[tuple[str, str, list[str], list[tuple[str, str]]]] = [
    (
        "AdamW, muP, across width",
        "width",
        ["adamw/mup"],
        [("independent", "none"), ("decoupled", "none"), ("decoupled", "fan_in_inv")],
    ),
    (
        "SGD, muP, across width",
        "width",
        ["sgd/mup"],
        [("independent", "none"), ("decoupled", "none")],
    ),
    (
        "SGD, SP, across width",
        "width",
        ["sgd/sp"],
        [("decoupled", "none"), ("decoupled", "fan_in_inv")],
    ),
    (
        "AdamW, SP, across width",
        "width",
        ["adamw/sp"],
        [("decoupled", "none"), ("decoupled", "fan_in_inv")],
    ),
    (
        "any optimizer and parametrization, across width: the mean square",
        "width",
        ["sgd/sp", "sgd/mup", "adamw/sp", "adamw/mup"],
        [("decoupled", "param_count"), ("independent", "param_count")],
    ),
    (
        "SGD, across data (fixed epochs and batch)",
        "data",
        ["sgd/sp"],
        [
            ("decoupled", "none"),
            ("decoupled", "steps_per_epoch"),
            ("decoupled", "steps_per_epoch_T"),
        ],
    ),
    (
        "AdamW, across data (fixed epochs and batch)",
        "data",
        ["adamw/sp"],
        [
            ("decoupled", "none"),
            ("decoupled", "steps_per_epoch"),
            ("decoupled", "steps_per_epoch_T"),
        ],
    ),
]
RANK = {"holds": 0, "holds within 2x": 1, "unresolved": 2, "does not hold": 3}
_UNTOLD = {"unresolved", "not identifiable", "not run"}


def _row(study: dict, axis: str, combo: str, mode: str, rule: str) -> dict | None:
    chain = study["chains"].get(f"{axis}/{combo}")
    if chain is None:
        return None
    return next(
        (r for r in chain["summary"].values() if r["mode"] == mode and r["rule"] == rule), None
    )


def _cell(name: str, r: dict | None) -> str:
    if r is None:
        return f"{name}: not run"
    if not r["identifiable"]:
        return f"{name}: not identifiable ({r['reason']})"
    iv = "" if r.get("drift_low") is None else f" [{r['drift_low']:+.2f}, {r['drift_high']:+.2f}]"
    seeds = f"{r['seeds']} seed" + ("s" if r["seeds"] != 1 else "")
    return (
        f"{name}: {r['drift']:+.2f}{iv} {r['verdict']} ({seeds}, "
        f"{r['censored']} censored, {r['points']} pts)"
    )


def _agreement(verdicts: list[str], labels: list[str]) -> str:
    """The row's verdict from each study's (``labels``: "study: verdict", cited where the
    studies differ): their common verdict; "holds within 2x" where each holds at least within
    2x; "does not hold" where none holds (the others could not tell); "arms disagree"
    where one study holds and another does not; else "unresolved" (some study could not
    tell: unresolved, not identifiable or not run)."""
    if len(set(verdicts)) == 1:
        return verdicts[0] if verdicts[0] in RANK else "unresolved"
    if set(verdicts) <= {"holds", "holds within 2x"}:
        return "holds within 2x"  # every study within a factor 2
    if "does not hold" in verdicts and set(verdicts) - {"does not hold"} <= _UNTOLD:
        return "does not hold"
    if "does not hold" in verdicts and set(verdicts) & {"holds", "holds within 2x"}:
        return "arms disagree (" + "; ".join(labels) + ")"
    return "unresolved (" + "; ".join(labels) + ")"


def _study_name(study: dict, axis: str) -> str:
    s = study["settings"]
    if axis == "data":
        return f"{s.get('arch', 'mlp')} N {s['data_sizes'][0]}→{s['data_sizes'][-1]}"
    return f"{s.get('arch', 'mlp')} {s['widths'][0]}→{s['widths'][-1]}"


def recommendation_table(studies: dict[str, dict]) -> str:
    """Markdown: one row per situation (see the module docstring)."""
    lines = [
        "| situation | use | evidence: drift of λ\\* [95% t over seeds], verdict "
        "(seeds, censored, fewest λ points per seed), per study | verdict |",
        "|---|---|---|---|",
    ]
    for title, axis, combos, candidates in SITUATIONS:
        scored, evidence = [], []
        for mode, rule in candidates:
            rows = [
                (_study_name(st, axis), combo, _row(st, axis, combo, mode, rule))
                for st in studies.values()
                for combo in combos
            ]
            ran = [(n, c, r) for n, c, r in rows if r is not None]
            if not ran:
                continue
            name = f"`{RULE_LABELS[rule]}`, {mode}"
            evidence.append(
                f"**{name}**: "
                + "; ".join(_cell(n + (f" {c}" if len(combos) > 1 else ""), r) for n, c, r in ran)
            )
            # every study counts: one that did not run the arm, or could not identify its
            # lambda*, is unresolved there (so less evidence never ranks better)
            verdicts = [
                "not run"
                if r is None
                else r["verdict"]
                if r["identifiable"]
                else "not identifiable"
                for _, _, r in rows
            ]
            ranks = [RANK.get(v, RANK["unresolved"]) for v in verdicts]
            spread = max(
                (abs(r["drift"]) for _, _, r in ran if r["identifiable"]), default=float("inf")
            )
            labels = [
                n + (f" {c}" if len(combos) > 1 else "") + ": " + v
                for (n, c, _), v in zip(rows, verdicts)
            ]
            scored.append(((max(ranks), sum(ranks), spread), name, _agreement(verdicts, labels)))
        if not scored:
            continue
        ((worst, _, _), best, agree) = min(scored, key=lambda t: t[0])
        use = best
        if worst == RANK["does not hold"]:  # the evidence column says where each fails
            use = "none of these (each does not hold somewhere)"
            agree = agree if agree.startswith("arms disagree") else "does not hold"
        lines.append(f"| {title} | {use} | " + "<br>".join(evidence) + f" | {agree} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scaled_decay.transfer.recommend",
        description="The recommendation table from study folders.",
    )
    p.add_argument("dirs", nargs="+", help="study folders holding runs.json")
    args = p.parse_args(argv)
    studies = {}
    for d in args.dirs:
        try:
            studies[d] = load_study(d)
        except ValueError as e:
            p.error(str(e))
    sys.stdout.write(recommendation_table(studies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
