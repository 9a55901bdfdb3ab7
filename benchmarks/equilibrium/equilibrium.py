"""Rotational equilibrium across widths: measured per tensor against the predictions.

Trains a normalized MLP 64 -> n -> n -> 10 (each hidden Linear without bias, followed by a
LayerNorm without affine, so its weight is scale-invariant) on scikit-learn's digits for
several widths, with SGD-momentum and AdamW at a constant lr, and reads
``sd.EquilibriumMonitor`` over the second half of training. The "adamw-mup" arm gives the
hidden and output weights lr * b/n, b the first width (muP's per-tensor AdamW lr) with plain
decoupled decay: its per-step shrink lr*lam, and with it the predicted angular update, falls
with width.

    python benchmarks/equilibrium/equilibrium.py  # writes results/equilibrium.md beside it

About a minute of one core (widths 32, 128, 512).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

import scaled_decay as sd

# (lr, weight_decay): the same per-step shrink c = lr * lam = 0.005 at the base width
ARMS = {"sgd": (0.1, 0.05), "adamw": (0.01, 0.5), "adamw-mup": (0.01, 0.5)}


def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0 - 0.3) / 0.4  # roughly standardized
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def normalized_mlp(width: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            [
                ("input", nn.Linear(64, width, bias=False)),
                ("norm1", nn.LayerNorm(width, elementwise_affine=False)),
                ("act1", nn.ReLU()),
                ("hidden", nn.Linear(width, width, bias=False)),
                ("norm2", nn.LayerNorm(width, elementwise_affine=False)),
                ("act2", nn.ReLU()),
                ("output", nn.Linear(width, 10)),
            ]
        )
    )


def optimizer(model: nn.Module, arm: str, width: int, base: int):
    lr, wd = ARMS[arm]
    groups = []
    for group in sd.param_groups(model, wd):
        for name, p in zip(group["param_names"], group["params"]):
            scale = (
                base / width
                if arm == "adamw-mup" and name in ("hidden.weight", "output.weight")
                else 1.0
            )
            groups.append(
                {
                    "params": [p],
                    "param_names": [name],
                    "lr": lr * scale,
                    "weight_decay": group["weight_decay"],
                }
            )
    if arm == "sgd":
        return sd.SGD(groups, lr=lr, momentum=0.9)
    return sd.AdamW(groups, lr=lr)


def run(arm: str, width: int, base: int, steps: int, x, y, seed: int = 0):
    torch.manual_seed(seed)
    model = normalized_mlp(width)
    opt = optimizer(model, arm, width, base)
    mon = sd.EquilibriumMonitor(opt, beta=0.995)
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.update()
        if t == steps // 2:
            mon.reset()  # average over the second half: at equilibrium
    return mon.report(), loss.item()


def fmt(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="32,128,512", help="the first is muP's base width")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "equilibrium.md")
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    widths = [int(w) for w in args.widths.split(",")]
    x, y = digits()
    start, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    lines = [
        "| arm | width | tensor | c = lr·λ | grad cos | RMS measured | RMS predicted "
        "| angular measured | angular predicted | measured / predicted |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = {}
    for arm in ARMS:
        for width in widths:
            report, _ = run(arm, width, widths[0], args.steps, x, y)
            for r in report:
                lines.append(
                    f"| {arm} | {width} | {r.name} | {fmt(r.c)} "
                    f"| {fmt(r.grad_cos, '.1e')} | {fmt(r.rms)} | {fmt(r.rms_pred)} "
                    f"| {fmt(r.angular)} | {fmt(r.angular_pred)} | {fmt(r.ratio, '.2f')} |"
                )
                if r.name != "output.weight" and r.ratio is not None:
                    ratios.setdefault(arm, []).append(r.ratio)
            print(lines[-1], flush=True)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    core_s = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    summary = "; ".join(f"{arm} {min(v):.2f}-{max(v):.2f}" for arm, v in ratios.items())
    text = "\n".join(
        [
            "# Rotational equilibrium across widths "
            "(`python benchmarks/equilibrium/equilibrium.py`)",
            "",
            "Normalized MLP 64 -> n -> n -> 10 on scikit-learn's digits (hidden Linears without "
            "bias, each followed by a LayerNorm without affine: their weights are "
            f"scale-invariant; the output layer is not), batch 64, {args.steps} steps at a "
            "constant lr, measured by "
            f"`sd.EquilibriumMonitor(beta=0.995)` over the second half. SGD: lr 0.1, momentum "
            f"0.9, λ 0.05; AdamW: lr 0.01, λ 0.5 (both c = lr·λ = 0.005 per step); adamw-mup: "
            f"the same with hidden and output lr × {widths[0]}/n. Predictions: angular update "
            f"sqrt(2c(1-μ)/(1+μ)) (μ = momentum or β1), AdamW RMS sqrt(lr/(2λ)); grad cos = "
            f"mean |cos(weight, gradient)| (0 for a scale-invariant weight).",
            "",
            *lines,
            "",
            f"Measured / predicted angular update of the scale-invariant tensors: {summary}.",
            "",
            f"{core_s:.0f} core-seconds ({time.perf_counter() - start:.0f} s wall), "
            f"torch {torch.__version__}, one thread.",
            "",
        ]
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
