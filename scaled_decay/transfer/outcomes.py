"""From finished runs to answers: grow a sweep's grid, read every arm off its shared sweep,
and summarize each arm's lambda* drift along the chain's axis."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from .fit import decay_helps, drift, drift_range, fit_optimum, mean_curve, verdict
from .sweeps import Chain, SweepPlan, lattice_index, lattice_value

__all__ = ["SweepState", "point_outcome", "summarize_chain", "loss_of"]


def loss_of(result: dict) -> float:
    return float("inf") if result.get("diverged") else float(result["holdout_nll"])


class SweepState:
    """One shared sweep at one axis point, for the representative arm's lambdas."""

    def __init__(self, plan: SweepPlan, lams: List[float], max_extensions: int,
                 make_spec: Callable, seeds: int):
        self.plan = plan
        self.lams = sorted(lams)
        self.max_extensions = max_extensions
        self.extended = {"low": 0, "high": 0}
        self.make_spec = make_spec
        self.seeds = seeds
        self.done = False
        self.note: Optional[str] = None

    def spec_for(self, lam: float, seed: int):
        return self.make_spec(self.plan.rep, lam, seed)

    def _result(self, results: Dict[str, dict], lam: float, seed: int):
        return results.get(self.spec_for(lam, seed).key())

    def complete(self, results: Dict[str, dict]) -> bool:
        return all(self._result(results, lam, k) is not None
                   for lam in self.lams for k in range(self.seeds))

    def matrix(self, results: Dict[str, dict], field: Callable = loss_of) -> np.ndarray:
        return np.array([[field(self._result(results, lam, k)) for lam in self.lams]
                         for k in range(self.seeds)])

    def evaluate(self, results: Dict[str, dict], zero: List[Optional[dict]]) -> List[float]:
        """New lambdas to train, or [] and ``done`` once the best point is interior (or the
        grid may not grow further, or lambda = 0 already beats its low end)."""
        opt = fit_optimum(self.lams, mean_curve(self.matrix(results)))
        side = {"edge_low": "low", "edge_high": "high"}.get(opt.status)
        if side is None:
            self.done = True
            return []
        if self.extended[side] >= self.max_extensions:
            self.done, self.note = True, f"grid limit reached at the {side} end"
            return []
        if side == "low" and all(z is not None for z in zero):
            z = np.mean([loss_of(r) for r in zero])
            if z <= mean_curve(self.matrix(results))[0]:
                self.done, self.note = True, "lambda = 0 beats the smallest lambda"
                return []
        j = lattice_index(self.lams[0]) - 1 if side == "low" else lattice_index(self.lams[-1]) + 1
        new = lattice_value(j)
        self.extended[side] += 1
        self.lams = sorted(self.lams + [new])
        return [new]


def point_outcome(chain: Chain, value: int, sweeps: List[SweepState],
                  zero: List[dict], results: Dict[str, dict]) -> dict:
    """Every arm's curve, lambda* and gate at one axis point, relabelled from its sweep."""
    zero_loss = [loss_of(r) for r in zero]
    out = {"value": value, "width": chain.width_at(value), "n_train": chain.n_train_at(value),
           "zero_loss": zero_loss, "zero_acc": [r["holdout_acc"] for r in zero], "arms": {}}
    for sw in sweeps:
        loss = sw.matrix(results)
        acc = sw.matrix(results, lambda r: r["holdout_acc"])
        for arm, factor in sw.plan.factors.items():
            lams = [lam / factor for lam in sw.lams]
            mean = mean_curve(loss)
            opt = fit_optimum(lams, mean)
            seeds = [fit_optimum(lams, row) for row in loss]
            helps = opt.index is not None and decay_helps(zero_loss, loss[:, opt.index])
            out["arms"][arm.label] = {
                "rule": arm.rule, "mode": arm.mode, "trained_as": sw.plan.rep.label,
                "factor": factor, "lams": lams, "mean_loss": _plain(mean),
                "seed_loss": [_plain(row) for row in loss], "mean_acc": _plain(acc.mean(0)),
                "lam_star": opt.lam if opt.status == "ok" else None, "status": opt.status,
                "center_lam": opt.lam, "decay_helps": bool(helps),
                "seed_lam_star": [o.lam for o in seeds],
                "seed_status": [o.status for o in seeds], "note": sw.note,
            }
    return out


def _plain(a) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=float)]


def summarize_chain(chain: Chain, outcomes: List[dict]) -> Dict[str, dict]:
    """Per arm: lambda* at the first and last axis point, the drift, its seed range, and
    whether lambda* is identifiable at all (the sanity gate)."""
    first, last = outcomes[0], outcomes[-1]
    axis = "n" if chain.axis == "width" else "n_train"
    summary = {}
    for label, a0 in first["arms"].items():
        a1 = last["arms"][label]
        row = {"rule": a0["rule"], "mode": a0["mode"], "lam_first": a0["lam_star"],
               "lam_last": a1["lam_star"], "drift": None, "drift_low": None,
               "drift_high": None, "within_2x": None, "identifiable": False, "reason": None}
        if not a0["decay_helps"]:
            row["reason"] = f"decay does not help at {axis}={first['value']}"
        elif not a1["decay_helps"]:
            row["reason"] = f"decay does not help at {axis}={last['value']}"
        elif a0["lam_star"] is None or a1["lam_star"] is None:
            where = first if a0["lam_star"] is None else last
            st = (a0 if a0["lam_star"] is None else a1)["status"]
            row["reason"] = f"lambda* outside the grid at {axis}={where['value']} ({st})"
        else:
            row["identifiable"] = True
            row["drift"] = drift(a0["lam_star"], a1["lam_star"])
            pairs = [(x, y) for x, y in zip(a0["seed_lam_star"], a1["seed_lam_star"])
                     if x is not None and y is not None]
            lo, hi = drift_range([p[0] for p in pairs], [p[1] for p in pairs]) if pairs \
                else (row["drift"], row["drift"])
            row["drift_low"], row["drift_high"] = lo, hi
            row["within_2x"] = verdict(row["drift"], lo, hi)
        summary[label] = row
    return summary
