"""From finished runs to answers: grow a sweep's grid, refine it around each seed's optimum,
read every arm off its shared sweep, and summarize each arm's lambda* drift along the
chain's axis (per seed, with a t-interval over the seeds: ``intervals.py``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .fit import decay_helps, drift, fit_optimum, mean_curve
from .intervals import t_interval, transfer_verdict
from .refine import fit_smooth, refine_window
from .sweeps import Chain, SweepPlan, lattice_index, lattice_value

__all__ = ["SweepState", "loss_of", "point_outcome", "summarize_chain"]


def loss_of(result: dict) -> float:
    return float("inf") if result.get("diverged") else float(result["holdout_nll"])


class SweepState:
    """One shared sweep at one axis point, for the representative arm's lambdas.

    Two phases: the coarse grid (``lams``, every seed) grows by half decades until the
    seed-mean optimum is inside it; then, with ``refine_half_span`` set and decay helping,
    each seed gets its own 1/8-decade window around its own coarse optimum (``fine[k]``).
    """

    def __init__(
        self,
        plan: SweepPlan,
        lams: list[float],
        max_extensions: int,
        make_spec: Callable,
        seeds: int,
        refine_half_span: float | None = None,
    ):
        self.plan = plan
        self.lams = sorted(lams)
        self.max_extensions = max_extensions
        self.extended = {"low": 0, "high": 0}
        self.make_spec = make_spec
        self.seeds = seeds
        self.refine_half_span = refine_half_span
        self.fine: dict[int, list[float]] = {}
        self.done = False
        self.note: str | None = None

    def spec_for(self, lam: float, seed: int):
        return self.make_spec(self.plan.rep, lam, seed)

    def _result(self, results: dict[str, dict], lam: float, seed: int):
        return results.get(self.spec_for(lam, seed).key())

    def complete(self, results: dict[str, dict]) -> bool:
        return all(
            self._result(results, lam, k) is not None
            for lam in self.lams
            for k in range(self.seeds)
        ) and all(
            self._result(results, lam, k) is not None
            for k, lams in self.fine.items()
            for lam in lams
        )

    def seed_lams(self, seed: int) -> list[float]:
        """Every lambda seed ``seed`` was trained at: the coarse grid and its own window."""
        return sorted(set(self.lams) | set(self.fine.get(seed, ())))

    def seed_curve(self, results: dict[str, dict], seed: int) -> tuple[list[float], list[float]]:
        lams = self.seed_lams(seed)
        return lams, [loss_of(self._result(results, lam, seed)) for lam in lams]

    def matrix(self, results: dict[str, dict], field: Callable = loss_of) -> np.ndarray:
        return np.array(
            [[field(self._result(results, lam, k)) for lam in self.lams] for k in range(self.seeds)]
        )

    def evaluate(
        self, results: dict[str, dict], zero: list[dict | None]
    ) -> list[tuple[float, int]]:
        """New (lambda, seed) runs to train, or [] and ``done`` once the best point is
        interior and the seeds' windows are in (or the grid may not grow further, or
        lambda = 0 already beats its low end)."""
        if self.fine:  # the refinement windows are complete
            self.done = True
            return []
        opt = fit_optimum(self.lams, mean_curve(self.matrix(results)))
        side = {"edge_low": "low", "edge_high": "high"}.get(opt.status)
        if side is None:
            return self._refine(results, zero, opt.index)
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
        self.lams = sorted([*self.lams, new])
        return [(new, k) for k in range(self.seeds)]

    def _refine(self, results, zero, best: int | None) -> list[tuple[float, int]]:
        """Each seed's 1/8-decade window around its own coarse optimum (kept even at an edge
        of the coarse grid: the window then reaches beyond it). Not where decay does not
        help: a flat curve's optimum is noise, and refining it would only cost runs."""
        self.done = True
        if self.refine_half_span is None or best is None or any(z is None for z in zero):
            return []
        loss = self.matrix(results)
        if not decay_helps([loss_of(r) for r in zero], loss[:, best]):
            self.note = "not refined: decay does not help"
            return []
        new = []
        for k in range(self.seeds):
            centre = fit_optimum(self.lams, loss[k]).lam
            if centre is None:  # every coarse run of this seed diverged
                continue
            self.fine[k] = refine_window(centre, self.refine_half_span)
            new += [(lam, k) for lam in self.fine[k] if lam not in self.lams]
        self.done = not new
        return new


def point_outcome(
    chain: Chain, value: int, sweeps: list[SweepState], zero: list[dict], results: dict[str, dict]
) -> dict:
    """Every arm's curve, lambda* and gate at one axis point, relabelled from its sweep."""
    zero_loss = [loss_of(r) for r in zero]
    out = {
        "value": value,
        "width": chain.width_at(value),
        "n_train": chain.n_train_at(value),
        "zero_loss": zero_loss,
        "zero_acc": [r["holdout_acc"] for r in zero],
        "arms": {},
    }
    for sw in sweeps:
        loss = sw.matrix(results)
        acc = sw.matrix(results, lambda r: r["holdout_acc"])
        curves = [sw.seed_curve(results, k) for k in range(sw.seeds)]
        for arm, factor in sw.plan.factors.items():
            lams = [lam / factor for lam in sw.lams]
            mean = mean_curve(loss)
            opt = fit_optimum(lams, mean)  # the coarse seed-mean optimum: centres the sweeps
            seed_lams = [[lam / factor for lam in c[0]] for c in curves]
            seeds = [fit_smooth(l, c[1]) for l, c in zip(seed_lams, curves)]
            helps = opt.index is not None and decay_helps(zero_loss, loss[:, opt.index])
            stars = [o.lam for o in seeds]
            out["arms"][arm.label] = {
                "rule": arm.rule,
                "mode": arm.mode,
                "trained_as": sw.plan.rep.label,
                "factor": factor,
                "lams": lams,
                "mean_loss": _plain(mean),
                "seed_loss": [_plain(row) for row in loss],
                "mean_acc": _plain(acc.mean(0)),
                # the geometric mean of the seeds' refined optima, where the coarse seed-mean
                # optimum is inside its grid
                "lam_star": (
                    10 ** float(np.mean(np.log10(stars)))
                    if opt.status == "ok" and None not in stars
                    else None
                ),
                "status": opt.status,
                "center_lam": opt.lam,
                "decay_helps": bool(helps),
                "seed_lam_star": stars,
                "seed_status": [o.status for o in seeds],
                "seed_lams": seed_lams,
                "seed_curve": [_plain(c[1]) for c in curves],
                "refined": bool(sw.fine),
                "note": sw.note,
            }
    return out


def _plain(a) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=float)]


def seed_drifts(a0: dict, a1: dict):
    """Each seed's own drift between two axis points, and how many of them are censored
    (an optimum at an edge of the seed's lambdas at either point). Seeds are paired by
    position; a seed with no optimum at one of the points (all runs diverged) is left out."""
    pairs = [
        (x, y, sx, sy)
        for x, y, sx, sy in zip(
            a0["seed_lam_star"], a1["seed_lam_star"], a0["seed_status"], a1["seed_status"]
        )
        if x is not None and y is not None
    ]
    drifts = [drift(x, y) for x, y, _, _ in pairs]
    censored = sum(1 for _, _, sx, sy in pairs if sx != "ok" or sy != "ok")
    return drifts, censored


def summarize_chain(chain: Chain, outcomes: list[dict]) -> dict[str, dict]:
    """Per arm: lambda* at the first and last axis point, the drift (mean of the seeds' own
    drifts) with its t-interval over seeds, how many seeds and lambda points stand behind
    it, and whether lambda* is identifiable at all (the sanity gate)."""
    first, last = outcomes[0], outcomes[-1]
    axis = "n" if chain.axis == "width" else "n_train"
    summary = {}
    for label, a0 in first["arms"].items():
        a1 = last["arms"][label]
        row = {
            "rule": a0["rule"],
            "mode": a0["mode"],
            "lam_first": a0["lam_star"],
            "lam_last": a1["lam_star"],
            "drift": None,
            "drift_low": None,
            "drift_high": None,
            "drift_min": None,
            "drift_max": None,
            "seeds": 0,
            "censored": 0,
            "points": _points(a0, a1),
            "verdict": None,
            "within_2x": None,
            "identifiable": False,
            "reason": None,
        }
        if not a0["decay_helps"]:
            row["reason"] = f"decay does not help at {axis}={first['value']}"
        elif not a1["decay_helps"]:
            row["reason"] = f"decay does not help at {axis}={last['value']}"
        elif a0["lam_star"] is None or a1["lam_star"] is None:
            where = first if a0["lam_star"] is None else last
            st = (a0 if a0["lam_star"] is None else a1)["status"]
            row["reason"] = f"lambda* outside the grid at {axis}={where['value']} ({st})"
        else:
            drifts, censored = seed_drifts(a0, a1)
            iv = t_interval(drifts, censored=censored)
            row.update(
                identifiable=True,
                drift=iv.mean,
                drift_low=iv.low,
                drift_high=iv.high,
                drift_min=min(drifts),
                drift_max=max(drifts),
                seeds=iv.n,
                censored=censored,
                verdict=transfer_verdict(iv),
            )
            row["within_2x"] = row["verdict"]
        summary[label] = row
    return summary


def _points(a0: dict, a1: dict) -> int:
    """The fewest lambdas any seed was trained at, at either end of the axis."""
    lams = a0.get("seed_lams", [a0["lams"]]) + a1.get("seed_lams", [a1["lams"]])
    return min(len(l) for l in lams)
