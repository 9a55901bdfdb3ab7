"""Joint lr x lambda grids at the base and the widest width: does lambda* move once the lr is
optimal at each width, and is the optimal per-step shrink c = eta * lambda what stays fixed?

The sweeps of the main study fix one lr per optimizer at the base width, so where that lr
is off at a width, lambda* partly absorbs it (a decay that only keeps training stable). Here
every (optimizer, parametrization, width) trains a grid: lrs a factor 2 apart around the
preset's lr (muP scales it per tensor from there), and at each lr a half-decade lambda sweep
of plain decoupled decay, centred where c = eta * lambda equals the preset's default and
grown until its optimum is inside. Per width: the lr whose best loss is lowest (lr*), lambda*
at it, and c* = eta_hidden(lr*) * lambda*; between the widths, the drift of each.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from .cache import RunCache
from .data import load_pool
from .fit import fit_optimum, mean_curve
from .models import Arm, decay_signature
from .outcomes import SweepState, loss_of
from .settings import StudySettings
from .sweeps import SweepPlan, lattice_grid
from .train import RunSpec

__all__ = [
    "JointSettings",
    "joint_planned_cost",
    "joint_rows",
    "joint_table",
    "run_joint",
    "write_joint_outputs",
]

LR_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)  # the lr axis: x2 steps around the preset's lr


@dataclass(frozen=True)
class JointSettings:
    """``study``: the preset whose data, epochs, batch, lrs and default lambdas are used;
    the grids run at its first and last width, ``seeds`` seeds each."""

    study: StudySettings
    seeds: int = 2
    lr_factors: tuple[float, ...] = LR_FACTORS
    max_extensions: int = 4
    combos: tuple[tuple[str, str], ...] = field(
        default=(("sgd", "sp"), ("sgd", "mup"), ("adamw", "sp"), ("adamw", "mup"))
    )

    def __post_init__(self):
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds!r}")
        f = self.lr_factors
        if len(f) < 3 or any(not (v > 0) for v in f) or list(f) != sorted(set(f)):
            raise ValueError(
                f"lr_factors must be at least 3 increasing positive numbers, got {f!r}"
            )

    @property
    def widths(self) -> tuple[int, int]:
        return self.study.widths[0], self.study.widths[-1]


def _hidden_lr(s: StudySettings, opt: str, par: str, width: int, lr: float) -> float:
    """The probe tensor's per-step shrink per unit lambda (decoupled: its own lr)."""
    arm = Arm(opt, par, "none", "decoupled")
    return decay_signature(arm, net=s.net, width=width, base_width=s.base_width, lr=lr)[s.net.probe]


class _Joint:
    """The grids' sweeps, scheduled like runner._Study (same pool, cache and resume)."""

    def __init__(self, js: JointSettings, cache: RunCache):
        self.js, self.s, self.cache = js, js.study, cache
        self.results: dict[str, dict] = {}
        self.specs: dict[str, RunSpec] = {}
        self.queue, self.queued = [], set()
        self.trained = self.cached = 0
        self.cells: dict[tuple, SweepState] = {}
        for opt, par in js.combos:
            for width in js.widths:
                for f in js.lr_factors:
                    lr = self.s.lr[opt] * f
                    rep = Arm(opt, par, "none", "decoupled")
                    centre = self.s.default_lam[opt] / f  # the preset's c at this lr
                    sw = SweepState(
                        SweepPlan(None, width, rep, {rep: 1.0}),
                        lattice_grid(centre, 3),
                        js.max_extensions,
                        lambda arm, lam, k, w=width, lr=lr: self.spec(arm, w, lr, lam, k),
                        js.seeds,
                    )
                    self.cells[(opt, par, width, f)] = sw
                    for lam in sw.lams:
                        for k in range(js.seeds):
                            self.need(sw.spec_for(lam, k))
                    for k in range(js.seeds):
                        self.need(self.spec(rep, width, lr, 0.0, k))

    def spec(self, arm: Arm, width: int, lr: float, lam: float, seed: int) -> RunSpec:
        s = self.s
        return RunSpec(
            dataset=s.dataset,
            n_train=s.n_train_at_width(width),
            width=width,
            base_width=s.base_width,
            arm=arm,
            weight_decay=float(lam),
            seed=seed,
            epochs=s.epochs,
            batch_size=s.batch_size,
            lr=float(lr),
            data_seed=s.data_seed,
            pool_needed=s.needed_pool(),
            arch=s.arch,
        )

    def need(self, spec: RunSpec) -> None:
        key = spec.key()
        if key in self.results or key in self.queued:
            return
        self.specs[key] = spec
        hit = self.cache.get(spec)
        if hit is not None:
            self.results[key], self.cached = hit, self.cached + 1
            return
        self.queued.add(key)
        heapq.heappush(self.queue, (-spec.cost(), key))

    def record(self, key: str, result: dict) -> None:
        self.queued.discard(key)
        self.results[key], self.trained = result, self.trained + 1

    def zero(self, cell: tuple) -> list[dict]:
        opt, par, width, f = cell
        rep = Arm(opt, par, "none", "decoupled")
        return [
            self.results.get(self.spec(rep, width, self.s.lr[opt] * f, 0.0, k).key())
            for k in range(self.js.seeds)
        ]

    def advance(self) -> None:
        for cell, sw in self.cells.items():
            zero = self.zero(cell)
            if not sw.done and all(z is not None for z in zero) and sw.complete(self.results):
                for lam, k in sw.evaluate(self.results, zero):
                    self.need(sw.spec_for(lam, k))


def joint_planned_cost(js: JointSettings) -> float:
    """Cost (RunSpec.cost units) of the initial grids: 3 lambdas and lambda = 0 per cell."""
    s, total = js.study, 0.0
    for opt, par in js.combos:
        for width in js.widths:
            spec = RunSpec(
                dataset=s.dataset,
                n_train=s.n_train_at_width(width),
                width=width,
                base_width=s.base_width,
                arm=Arm(opt, par, "none", "decoupled"),
                weight_decay=0.1,
                seed=0,
                epochs=s.epochs,
                batch_size=s.batch_size,
                lr=s.lr[opt],
                arch=s.arch,
            )
            total += spec.cost() * 4 * js.seeds * len(js.lr_factors)
    return total


def run_joint(js: JointSettings, cache_dir: str, *, workers: int = 2) -> dict:
    """Train (or resume) every grid; returns the cells' curves, as joint.json holds them."""
    from .runner import _run_pool, _worker_run

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    cache = RunCache(cache_dir)
    load_pool(js.study.dataset, js.study.data_seed, cache.directory, js.study.needed_pool())
    st = _Joint(js, cache)
    st.advance()
    if workers == 1:
        while st.queue:
            key = heapq.heappop(st.queue)[-1]
            st.record(key, _worker_run(st.specs[key].to_dict(), cache.directory))
            st.advance()
    else:
        _run_pool(st, workers, cache.directory)
    s = js.study
    cells = []
    for (opt, par, width, f), sw in st.cells.items():
        lr = s.lr[opt] * f
        cells.append(
            {
                "optimizer": opt,
                "parametrization": par,
                "width": width,
                "lr_factor": f,
                "lr": lr,
                "lams": sw.lams,
                "shrink_per_lam": _hidden_lr(s, opt, par, width, lr),
                "seed_loss": [[_finite(v) for v in row] for row in sw.matrix(st.results)],
                "zero_loss": [_finite(loss_of(z)) for z in st.zero((opt, par, width, f))],
                "note": sw.note,
            }
        )
    return {
        "settings": {
            **s.to_dict(),
            "joint_seeds": js.seeds,
            "lr_factors": list(js.lr_factors),
            "joint_widths": list(js.widths),
        },
        "cells": cells,
        "trained": st.trained,
        "cached": st.cached,
    }


def _finite(v: float):
    return float(v) if math.isfinite(v) else None


def joint_rows(joint: dict) -> list[dict]:
    """Per (optimizer, parametrization, width): the best lr (the parabola in log lr through
    the best lr's seed-mean loss and its neighbours), lambda* there and c* = eta_h * lambda*,
    and lambda* at the preset's lr for comparison."""
    groups: dict[tuple, list[dict]] = {}
    for c in joint["cells"]:
        groups.setdefault((c["optimizer"], c["parametrization"], c["width"]), []).append(c)
    rows = []
    for (opt, par, width), cells in groups.items():
        cells = sorted(cells, key=lambda c: c["lr"])
        per_lr = []
        for c in cells:
            loss = mean_curve([[math.inf if v is None else v for v in r] for r in c["seed_loss"]])
            opt_ = fit_optimum(c["lams"], loss)
            per_lr.append((c, opt_, float(np.min(loss))))
        best_loss = [b for _, _, b in per_lr]
        lr_opt = fit_optimum([c["lr"] for c in cells], best_loss)
        i = lr_opt.index
        c, lam_opt, loss = per_lr[i] if i is not None else (cells[0], None, math.inf)
        at_base = next(((o, cc) for cc, o, _ in per_lr if cc["lr_factor"] == 1.0), None)
        rows.append(
            {
                "optimizer": opt,
                "parametrization": par,
                "width": width,
                "lr_star": lr_opt.lam,
                "lr_status": lr_opt.status,
                "lr_at_best": c["lr"],
                "lam_star": lam_opt.lam if lam_opt else None,
                "lam_status": lam_opt.status if lam_opt else None,
                "loss": loss,
                "c_star": lam_opt.lam * c["shrink_per_lam"] if lam_opt and lam_opt.lam else None,
                "lam_at_base_lr": at_base[0].lam if at_base else None,
                "seeds": len(c["seed_loss"]),
            }
        )
    return rows


def joint_table(joint: dict) -> str:
    """Markdown: per combo, the base and widest width side by side, and the drifts."""
    rows = joint_rows(joint)
    w0, w1 = joint["settings"]["joint_widths"]
    lines = [
        f"Joint lr x lambda grids, {joint['settings']['arch']} on "
        f"{joint['settings']['dataset']}, widths {w0} and {w1}, "
        f"{joint['settings']['joint_seeds']} seeds; lr factors "
        f"{joint['settings']['lr_factors']} of the preset's lr. lr\\*: parabola in log lr "
        f"through the lowest seed-mean loss; λ\\*, c\\* = η_hidden·λ\\* at the grid lr nearest "
        f"lr\\*; drift = log2(widest / base). Edge: the optimum at the end of the grid.",
        "",
        f"| optimizer / param. | lr\\* n={w0} | lr\\* n={w1} | λ\\* n={w0} | λ\\* n={w1} | "
        f"c\\* n={w0} | c\\* n={w1} | drift lr\\* | drift λ\\* | drift c\\* | drift λ\\* at the "
        f"preset's lr |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["optimizer"], r["parametrization"], r["width"]): r for r in rows}
    for opt, par in dict.fromkeys((r["optimizer"], r["parametrization"]) for r in rows):
        a, b = by[(opt, par, w0)], by[(opt, par, w1)]

        def d(key, a=a, b=b):  # a and b bound now: ruff B023 cannot see d is used only here
            return "-" if not (a[key] and b[key]) else f"{math.log2(b[key] / a[key]):+.2f}"

        def g(r, key, st=None):
            v = r[key]
            return (
                "-" if v is None else f"{v:.3g}" + (f" ({r[st]})" if st and r[st] != "ok" else "")
            )

        lines.append(
            f"| {opt} / {par} | {g(a, 'lr_star', 'lr_status')} | "
            f"{g(b, 'lr_star', 'lr_status')} | {g(a, 'lam_star', 'lam_status')} | "
            f"{g(b, 'lam_star', 'lam_status')} | {g(a, 'c_star')} | {g(b, 'c_star')} | "
            f"{d('lr_star')} | {d('lam_star')} | {d('c_star')} | "
            f"{d('lam_at_base_lr')} |"
        )
    return "\n".join(lines) + "\n"


def write_joint_outputs(joint: dict, out_dir: str) -> dict[str, str]:
    """joint.json, joint.md and joint.png (per combo and width: loss against c = eta_h *
    lambda, one line per lr; where c* stays fixed the minima line up across the widths)."""
    import json
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import to_strict_json

    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"joint.{k}") for k in ("json", "md", "png")}
    with open(paths["json"], "w") as f:
        json.dump(to_strict_json(joint), f, indent=1, allow_nan=False)
    with open(paths["md"], "w") as f:
        f.write(joint_table(joint))
    combos = list(dict.fromkeys((c["optimizer"], c["parametrization"]) for c in joint["cells"]))
    widths = joint["settings"]["joint_widths"]
    fig, axes = plt.subplots(
        len(combos), 2, squeeze=False, sharey="row", figsize=(7.2, 2.5 * len(combos))
    )
    cmap = plt.get_cmap("plasma")
    factors = joint["settings"]["lr_factors"]
    for (opt, par), row in zip(combos, axes):
        for width, ax in zip(widths, row):
            for c in joint["cells"]:
                if (c["optimizer"], c["parametrization"], c["width"]) != (opt, par, width):
                    continue
                loss = np.array([[np.nan if v is None else v for v in r] for r in c["seed_loss"]])
                color = cmap(factors.index(c["lr_factor"]) / max(len(factors) - 1, 1) * 0.85)
                ax.plot(
                    [lam * c["shrink_per_lam"] for lam in c["lams"]],
                    loss.mean(0),
                    "o-",
                    ms=2,
                    lw=1,
                    color=color,
                    label=f"lr x{c['lr_factor']:g}",
                )
            ax.set_xscale("log")
            ax.set_title(f"{opt}/{par}, width {width}", fontsize=8)
            ax.set_xlabel("c = η_hidden·λ", fontsize=7)
            ax.tick_params(labelsize=6)
        row[0].set_ylabel("held-out NLL", fontsize=7)
        row[0].legend(fontsize=5, frameon=False)
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=80)
    plt.close(fig)
    return paths
