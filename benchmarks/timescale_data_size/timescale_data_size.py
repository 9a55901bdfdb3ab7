"""One model at two data sizes: does tau_epoch transfer with no retuning, where lambda does not?

    python benchmarks/timescale_data_size/timescale_data_size.py [--sizes 1000 4000]
        [--epochs 30] [--seeds 3]

Wang & Aitchison 2024 (arXiv 2405.13698): AdamW's weights are an EMA of recent updates with
timescale tau_iter = 1 / (lr * lambda) steps; the optimal tau_epoch = tau_iter / M (M = steps
per epoch) stays put as the dataset grows, so the optimal lambda falls as 1/M. Here: the
study's MLP 40 -> 128 -> 128 -> 10 on its MNIST-1D pool (``scaled_decay.transfer``, read-only;
the same 1000 held-out samples for both sizes), ``sd.AdamW`` (lr 0.01, cosine to 0 per step,
batch 64, the same number of epochs at both sizes) with
``timescale=sd.Timescale(epochs=tau_epoch, steps_per_epoch=M)`` on the weight matrices
(biases: no decay), tau_epoch on a factor-2 grid, plus no decay. For each size: tau_epoch* and
the lambda it means (fitted: parabola in log tau through the best grid point and its
neighbours, the study's fit); then, at the larger size, the held-out NLL at the smaller
size's best tau_epoch ("keep tau_epoch") against the NLL at the same lambda ("keep lambda":
tau_epoch divided by the size ratio). Writes ``timescale_data_size.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import scaled_decay as sd
from scaled_decay.transfer.data import load_pool
from scaled_decay.transfer.fit import fit_optimum, mean_curve
from scaled_decay.transfer.models import build_mlp
from scaled_decay.transfer.train import steps_per_epoch

LR, WIDTH = 0.01, 128
GRID = [2.0**k for k in range(-4, 5)]  # tau_epoch: 1/16 ... 16 epochs


def train_run(pool, n_train: int, tau_epoch, epochs: int, batch_size: int, seed: int) -> dict:
    """Held-out NLL after training on the first ``n_train`` samples (tau_epoch None: no
    decay)."""
    x, y = (torch.from_numpy(a) for a in pool.train_subset(n_train))
    xh, yh = torch.from_numpy(pool.x_holdout), torch.from_numpy(pool.y_holdout)
    torch.manual_seed(seed)
    model = build_mlp(x.shape[1], WIDTH)
    m = steps_per_epoch(n_train, batch_size)
    decay = (
        dict(weight_decay=0.0)
        if tau_epoch is None
        else dict(timescale=sd.Timescale(epochs=tau_epoch, steps_per_epoch=m))
    )
    opt = sd.AdamW(sd.param_groups(model, **decay), lr=LR)
    total = epochs * m
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))
    )
    order = torch.Generator().manual_seed(seed + 1_000_003)
    start = time.process_time()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=order)
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        nll = F.cross_entropy(model(xh), yh).item()
    return {
        "n_train": n_train,
        "tau_epoch": tau_epoch,
        "seed": seed,
        "steps_per_epoch": m,
        "weight_decay": opt.param_groups[0]["weight_decay"],
        "holdout_nll": nll if math.isfinite(nll) else math.inf,
        "cpu_s": time.process_time() - start,
    }


def summarize(runs: list, sizes: list, seeds: int) -> dict:
    out = {}
    for n in sizes:
        mine = [r for r in runs if r["n_train"] == n]
        curve = [
            [
                next(r["holdout_nll"] for r in mine if r["tau_epoch"] == tau and r["seed"] == s)
                for tau in GRID
            ]
            for s in range(seeds)
        ]
        mean = mean_curve(curve)
        best = fit_optimum(GRID, mean)
        m = mine[0]["steps_per_epoch"]
        zero = [r["holdout_nll"] for r in mine if r["tau_epoch"] is None]
        out[n] = {
            "steps_per_epoch": m,
            "tau_epoch": best.lam,
            "status": best.status,
            "lam": None if best.lam is None else 1.0 / (LR * best.lam * m),
            "curve": dict(zip(map(str, GRID), mean.tolist())),
            "no_decay": sum(zero) / len(zero),
            "best_grid_nll": float(min(mean)),
        }
    small, large = sizes[0], sizes[-1]
    ratio = out[large]["steps_per_epoch"] / out[small]["steps_per_epoch"]
    kept = min(GRID, key=lambda t: abs(math.log(t / out[small]["tau_epoch"])))
    same_lam = min(GRID, key=lambda t: abs(math.log(t / (kept / ratio))))
    out["transfer"] = {
        "keep_tau_epoch": kept,
        "keep_lam_tau_epoch": same_lam,
        "nll_keep_tau_epoch": out[large]["curve"][str(kept)],
        "nll_keep_lam": out[large]["curve"][str(same_lam)],
        "nll_best": out[large]["best_grid_nll"],
    }
    return out


def markdown(res: dict, sizes: list, args) -> str:
    lines = [
        "# tau_epoch across data size "
        "(`python benchmarks/timescale_data_size/timescale_data_size.py`)",
        "",
        f"MLP 40-{WIDTH}-{WIDTH}-10, MNIST-1D, sd.AdamW lr {LR} cosine, batch "
        f"{args.batch_size}, {args.epochs} epochs, {args.seeds} seeds; held-out NLL "
        f"(mean over seeds).",
        "",
        "| n_train | steps/epoch | tau_epoch* | lambda* = 1/(lr tau_epoch* M) | best NLL "
        "| no decay |",
        "|---|---|---|---|---|---|",
    ]
    for n in sizes:
        r = res[n]
        lam = "-" if r["lam"] is None else f"{r['lam']:.3g}"
        tau = "-" if r["tau_epoch"] is None else f"{r['tau_epoch']:.3g} ({r['status']})"
        lines.append(
            f"| {n} | {r['steps_per_epoch']} | {tau} | {lam} | "
            f"{r['best_grid_nll']:.4f} | {r['no_decay']:.4f} |"
        )
    t = res["transfer"]
    lines += [
        "",
        f"At n = {sizes[-1]}, settings carried over from n = {sizes[0]}:",
        "",
        "| carried over | tau_epoch | held-out NLL |",
        "|---|---|---|",
        f"| tau_epoch (`sd.Timescale(epochs=...)`) | {t['keep_tau_epoch']:g} | "
        f"{t['nll_keep_tau_epoch']:.4f} |",
        f"| lambda (`weight_decay=`) | {t['keep_lam_tau_epoch']:g} | {t['nll_keep_lam']:.4f} |",
        f"| best of the grid | | {t['nll_best']:.4f} |",
        "",
        "Curves (tau_epoch: NLL):",
        "",
    ]
    for n in sizes:
        lines.append(
            f"- n = {n}: " + ", ".join(f"{float(k):g}: {v:.4f}" for k, v in res[n]["curve"].items())
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[1000, 4000])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # one core of a shared machine; also makes runs reproducible
    pool = load_pool("mnist1d", 0, needed=max(args.sizes))
    runs = []
    for n in args.sizes:
        for tau in [None, *GRID]:
            for seed in range(args.seeds):
                r = train_run(pool, n, tau, args.epochs, args.batch_size, seed)
                runs.append(r)
                print(
                    f"n={n} tau_epoch={tau} seed {seed} wd={r['weight_decay']:.4g} "
                    f"nll={r['holdout_nll']:.4f} ({r['cpu_s']:.1f} cpu-s)",
                    flush=True,
                )
    res = summarize(runs, args.sizes, args.seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "timescale_data_size.json").write_text(
        json.dumps(
            {"args": vars(args), "summary": {str(k): v for k, v in res.items()}, "runs": runs},
            indent=1,
        )
    )
    (out / "timescale_data_size.md").write_text(markdown(res, args.sizes, args))
    print(markdown(res, args.sizes, args))


if __name__ == "__main__":
    main()
