"""Muon arm of the width study: does lambda* transfer across width with sd.MuonShape, and without?

    python benchmarks/muon_transfer/muon_transfer.py [--widths 32 128 512] [--epochs 20] [--out DIR]

The study's MLP 40 -> n -> n -> 10 on its MNIST-1D pool (4000 training samples, 1000 held
out; ``scaled_decay.transfer`` pieces, used read-only). The input and hidden weight matrices
train with ``torch.optim.Muon`` (``adjust_lr_fn="match_rms_adamw"``, lr 0.01, momentum 0.95,
decoupled decay lambda, swept); the output weight and the biases with ``torch.optim.AdamW``
(lr 0.01, no decay), so lambda acts on Muon's matrices only. Cosine lr schedule to zero per
batch, 20 epochs of batch 64, as the study. Two arms:

- ``none``: torch's Muon decay, ``c = lr * lam`` for every shape;
- ``MuonShape``: ``sd.MuonShape("match_rms_adamw", reference_shape=<the tensor's shape at the
  base width>)``, ``c = lr * lam * a(A, B) / a(base shape)``: equal to ``none`` at the base
  width (one shared sweep there), and the spectral radius ``a/(lam*s)`` fixed across width.

Prediction from the radius argument (``sd.MuonShape``'s docstring): without the rule,
lambda* must grow like ``a = 0.2*sqrt(max(A, B))``, i.e. ``sqrt(n)``: drift
log2(lambda*(n_last)/lambda*(n_base)) = 0.5 * log2(n_last/n_base) (+2 for 32 -> 512); with
it, 0. lambda* comes from the study's own fit (parabola in log lambda through the best point
of a half-decade grid and its neighbours; grids extend at an edge) and sanity gate.
Writes ``muon_transfer.md`` and ``muon_transfer.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import scaled_decay as sd
from scaled_decay.transfer.data import load_pool
from scaled_decay.transfer.fit import (
    decay_helps,
    drift,
    drift_range,
    fit_optimum,
    mean_curve,
    verdict,
)
from scaled_decay.transfer.models import build_mlp
from scaled_decay.transfer.train import steps_per_epoch

FN = "match_rms_adamw"
LR = 0.01
MUON_TENSORS = ("input.weight", "hidden.weight")
GRID_STEP = 0.5  # log10 lambda between grid points
MAX_EXTENSIONS = 3  # per side


def build_optimizers(model, arm: str, lam: float, base_width: int):
    """Muon (wrapped) for the input and hidden matrices, AdamW without decay for the rest."""
    base = dict(build_mlp(model.input.in_features, base_width).named_parameters())
    muon_groups, rest = [], []
    for name, p in model.named_parameters():
        if name not in MUON_TENSORS:
            rest.append(p)
            continue
        rule = (
            sd.MuonShape(FN, reference_shape=tuple(base[name].shape))
            if arm == "MuonShape"
            else None
        )
        muon_groups.append({"params": [p], "decay_scaling": rule})
    muon = sd.with_scaled_decay(torch.optim.Muon)(
        muon_groups, lr=LR, weight_decay=lam, adjust_lr_fn=FN
    )
    return [muon, torch.optim.AdamW(rest, lr=LR, weight_decay=0.0)]


def train_run(
    pool,
    width: int,
    arm: str,
    lam: float,
    base_width: int,
    epochs: int,
    batch_size: int,
    n_train: int,
    seed: int,
) -> dict:
    """One run; the held-out NLL at the end (inf if the training loss became non-finite)."""
    x, y = (torch.from_numpy(a) for a in pool.train_subset(n_train))
    xh, yh = torch.from_numpy(pool.x_holdout), torch.from_numpy(pool.y_holdout)
    torch.manual_seed(seed)
    model = build_mlp(x.shape[1], width)
    opts = build_optimizers(model, arm, lam, base_width)
    total = epochs * steps_per_epoch(n_train, batch_size)
    scheds = [
        torch.optim.lr_scheduler.LambdaLR(
            o, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))
        )
        for o in opts
    ]
    order = torch.Generator().manual_seed(seed + 1_000_003)
    start, diverged = time.process_time(), False
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=order)
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            if not torch.isfinite(loss):
                diverged = True
                break
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o, s in zip(opts, scheds):
                o.step()
                s.step()
        if diverged:
            break
    with torch.no_grad():
        nll = F.cross_entropy(model(xh), yh).item()
    if diverged or not math.isfinite(nll):
        nll = math.inf
    return {
        "width": width,
        "arm": arm,
        "lam": lam,
        "seed": seed,
        "holdout_nll": nll,
        "cpu_s": time.process_time() - start,
    }


def sweep(run, width: int, arm: str, center: float) -> dict:
    """lambda -> held-out NLL per seed on a half-decade grid around ``center``, extended at
    an edge of the seed-mean curve."""
    ks = list(range(-2, 3))
    curve = {}
    for _ in range(2 * MAX_EXTENSIONS + 1):
        for k in ks:
            lam = 10 ** (math.log10(center) + GRID_STEP * k)
            if lam not in curve:
                curve[lam] = run(width, arm, lam)
        best = fit_curve(curve)
        if best.status == "edge_low" and min(ks) > -2 - MAX_EXTENSIONS:
            ks.insert(0, min(ks) - 1)
        elif best.status == "edge_high" and max(ks) < 2 + MAX_EXTENSIONS:
            ks.append(max(ks) + 1)
        else:
            break
    return curve


def fit_curve(curve: dict, seed: int | None = None):
    """lambda* of the seed-mean curve, or of one seed's (by position)."""
    lams = sorted(curve)
    if seed is None:
        n_seeds = len(curve[lams[0]])
        losses = mean_curve([[curve[lam][i] for lam in lams] for i in range(n_seeds)])
    else:
        losses = [curve[lam][seed] for lam in lams]
    return fit_optimum(lams, losses)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--center", type=float, default=0.3, help="first grid's centre lambda")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # one core of a shared machine; also makes runs reproducible
    pool = load_pool("mnist1d", 0, needed=args.n_train)
    base = args.widths[0]
    runs = []

    def run(width, arm, lam):
        """Held-out NLL of each seed."""
        nlls = []
        for seed in range(args.seeds):
            r = train_run(
                pool,
                width,
                "none" if width == base else arm,
                lam,
                base,
                args.epochs,
                args.batch_size,
                args.n_train,
                seed,
            )
            runs.append(r)
            nlls.append(r["holdout_nll"])
            print(
                f"n={width:5d} {arm:9s} lam={lam:9.4g} seed {seed} "
                f"nll={r['holdout_nll']:.4f} ({r['cpu_s']:.1f} cpu-s)",
                flush=True,
            )
        return nlls

    zero = run(base, "none", 0.0)
    base_curve = sweep(run, base, "none", args.center)
    curves = {("none", base): base_curve, ("MuonShape", base): base_curve}
    for width in args.widths[1:]:
        for arm in ("none", "MuonShape"):
            curves[(arm, width)] = sweep(run, width, arm, args.center)
    results = summarize(curves, zero, args)
    results["runs"] = runs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "muon_transfer.json").write_text(json.dumps(results, indent=1))
    (out / "muon_transfer.md").write_text(markdown(results))
    print(markdown(results))


def summarize(curves: dict, zero: list, args) -> dict:
    widths = args.widths
    optima = {}
    for (arm, width), curve in curves.items():
        lams = sorted(curve)
        opt = fit_curve(curve)
        per_seed = [fit_curve(curve, i) for i in range(args.seeds)]
        optima[f"{arm}/{width}"] = {
            "lam": opt.lam,
            "status": opt.status,
            "seed_lams": [o.lam if o.status == "ok" else None for o in per_seed],
            "curve": [[lam, sum(curve[lam]) / len(curve[lam])] for lam in lams],
        }
    base_curve = curves[("none", widths[0])]
    best_lam = min(base_curve, key=lambda lam: sum(base_curve[lam]))
    helps = bool(decay_helps(zero, base_curve[best_lam]))
    arms = {}
    for arm in ("none", "MuonShape"):
        first, last = optima[f"{arm}/{widths[0]}"], optima[f"{arm}/{widths[-1]}"]
        d = drift(first["lam"], last["lam"]) if first["status"] == last["status"] == "ok" else None
        seeds_ok = None not in first["seed_lams"] + last["seed_lams"]
        low, high = drift_range(first["seed_lams"], last["seed_lams"]) if seeds_ok else (None, None)
        arms[arm] = {
            "drift": d,
            "seed_range": [low, high],
            "transfers": verdict(d, low, high)
            if helps and d is not None and seeds_ok
            else "not identifiable",
        }
    return {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "optimizer": f"Muon({FN}, lr={LR}) on {list(MUON_TENSORS)}; AdamW(lr={LR}, "
        f"no decay) on the rest",
        "gate": {
            "zero_nll": zero,
            "best_lam": best_lam,
            "best_nll": base_curve[best_lam],
            "decay_helps": helps,
        },
        "predicted_drift": {"none": 0.5 * math.log2(widths[-1] / widths[0]), "MuonShape": 0.0},
        "optima": optima,
        "arms": arms,
    }


def markdown(r: dict) -> str:
    s, widths = r["settings"], r["settings"]["widths"]
    lines = [
        "# Muon: does lambda* transfer across width?",
        "",
        f"`python benchmarks/muon_transfer/muon_transfer.py` — MLP 40→n→n→10, n = "
        f"{' → '.join(map(str, widths))}, MNIST-1D ({s['n_train']} train / 1000 held out), "
        f"{s['epochs']} epochs of batch {s['batch_size']}, cosine schedule, {s['seeds']} seeds. "
        f"{r['optimizer']}. λ on half-decade grids (extended at an edge), λ* from a parabola "
        f"in log λ through the best point of the seed-mean held-out NLL and its neighbours; "
        f"the range is the drift of each seed's own curves; transfers = within a factor 2.",
        "",
        f"Sanity gate at n = {widths[0]}: held-out NLL (mean over seeds) "
        f"{mean(r['gate']['zero_nll']):.4f} at λ = 0, {mean(r['gate']['best_nll']):.4f} at "
        f"λ = {r['gate']['best_lam']:.3g}: decay "
        f"{'helps' if r['gate']['decay_helps'] else 'does NOT measurably help'}.",
        "",
        "| arm | "
        + " | ".join(f"λ* (n={w})" for w in widths)
        + f" | drift log2 λ*({widths[-1]})/λ*({widths[0]}) [seed range] | predicted | "
        f"transfers |",
        "|---|" + "---|" * len(widths) + "---|---|---|",
    ]
    for arm in ("none", "MuonShape"):
        cells = []
        for w in widths:
            o = r["optima"][f"{arm}/{w}"]
            cells.append(f"{o['lam']:.3g}" + ("" if o["status"] == "ok" else f" ({o['status']})"))
        a = r["arms"][arm]
        d, (low, high) = a["drift"], a["seed_range"]
        rng = "" if low is None else f" [{low:+.2f}, {high:+.2f}]"
        lines.append(
            f"| {arm} | " + " | ".join(cells) + f" | {'n/a' if d is None else f'{d:+.2f}'}{rng} | "
            f"{r['predicted_drift'][arm]:+.2f} | {a['transfers']} |"
        )
    lines += ["", "Held-out NLL per λ (mean over seeds):", ""]
    for key, o in r["optima"].items():
        if key.startswith("MuonShape/") and key.endswith(f"/{widths[0]}"):
            continue  # the same runs as none/base
        lines.append(f"- {key}: " + ", ".join(f"{lam:.3g}: {nll:.4f}" for lam, nll in o["curve"]))
    cpu = sum(run["cpu_s"] for run in r.get("runs", []))
    lines += [
        "",
        f"{len(r.get('runs', []))} runs, {cpu / 60:.1f} CPU-minutes "
        f"(torch {torch.__version__}, 1 thread, {os.cpu_count()}-core machine).",
    ]
    return "\n".join(lines) + "\n"


def mean(values) -> float:
    return sum(values) / len(values)


if __name__ == "__main__":
    main()
