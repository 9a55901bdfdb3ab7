"""``scaled-decay demo``: torch.optim.AdamW against sd.AdamW under each scaling rule.

Built-in data (no download): scikit-learn's digits when installed, else a fixed synthetic
teacher-network task; a 2-hidden-layer MLP; the held-out loss of each optimizer, and the
decay report of the last one, so a user sees what the rules did.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import scaled_decay as sd


def builtin_data(seed: int = 0):
    """(x_train, y_train, x_test, y_test, n_classes): sklearn digits, else a teacher task."""
    try:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.data, dtype=torch.float32) / 16.0
        y = torch.tensor(d.target)
        name = "scikit-learn digits"
    except ImportError:
        g = torch.Generator().manual_seed(1234)
        x = torch.randn(2000, 64, generator=g)
        teacher = torch.randn(64, 10, generator=g)
        y = (x @ teacher + 2.0 * torch.randn(2000, 10, generator=g)).argmax(1)
        name = "synthetic teacher task"
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_test = len(x) // 4
    return name, x[n_test:], y[n_test:], x[:n_test], y[:n_test], int(y.max()) + 1


def _mlp(n_in: int, width: int, n_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n_in, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, n_out),
    )


def _train(model, opt, data, epochs: int, seed: int) -> float:
    _, xtr, ytr, xte, yte, _ = data
    g = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for idx in torch.randperm(len(xtr), generator=g).split(64):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
    with torch.no_grad():
        return loss_fn(model(xte), yte).item()


def run_demo(
    width: int = 256, epochs: int = 30, weight_decay: float = 0.1, seed: int = 0, lr: float = 1e-3
) -> int:
    data = builtin_data(seed)
    name, xtr, _, xte, _, n_out = data
    steps_per_epoch = (len(xtr) + 63) // 64
    print(
        f"data: {name}, {len(xtr)} train / {len(xte)} held out; MLP {xtr.shape[1]}->"
        f"{width}->{width}->{n_out}; {epochs} epochs, lr={lr}, weight_decay={weight_decay}"
    )
    runs = [
        ("torch.optim.AdamW", None),
        ("sd.AdamW (no scaling)", None),
        ("sd.AdamW fan_in", "fan_in"),
        ("sd.AdamW FanIn(power=-1)", sd.FanIn(power=-1.0)),
        ("sd.AdamW param_count", "param_count"),
        ("sd.AdamW StepsPerEpoch", sd.StepsPerEpoch(steps_per_epoch)),
    ]
    print(f"{'optimizer':<28} {'held-out loss':>13}")
    opt: Any = None  # torch.optim.AdamW, then sd.AdamW (whose report is printed)
    for label, scaling in runs:
        torch.manual_seed(seed)
        model = _mlp(xtr.shape[1], width, n_out)
        if label.startswith("torch"):
            # the same groups (biases and norms undecayed): sd.AdamW without scaling must match
            opt = torch.optim.AdamW(sd.param_groups(model, weight_decay), lr=lr)
        else:
            opt = sd.AdamW(sd.param_groups(model, weight_decay), lr=lr, decay_scaling=scaling)
        print(f"{label:<28} {_train(model, opt, data, epochs, seed):>13.4f}", flush=True)
    print("\ndecay_report() of the last optimizer:")
    print(opt.decay_report())
    return 0
