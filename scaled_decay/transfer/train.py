"""Train one run of the study and measure it: the unit the cache and the workers deal in."""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .data import input_dim, load_pool
from .models import Arm, build_mlp, build_optimizer, init_mlp

__all__ = ["RunSpec", "train_run", "steps_per_epoch"]

# Bump when a change to the training code changes results: old cache entries then miss.
TRAIN_CODE_VERSION = 1


@dataclass(frozen=True)
class RunSpec:
    """Everything one training run depends on; its hash names the run's cache file."""

    dataset: str
    n_train: int
    width: int
    base_width: int
    arm: Arm
    weight_decay: float
    seed: int
    epochs: int
    batch_size: int
    lr: float
    data_seed: int = 0
    pool_needed: int = 0  # the training pool's size request (see data.max_train_size)

    def key(self) -> str:
        text = json.dumps(dict(asdict(self), version=TRAIN_CODE_VERSION), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(**dict(d, arm=Arm(**d["arm"])))

    def cost(self) -> float:
        """Estimated seconds of one core: multiply-adds plus a per-step overhead, with
        constants measured on a 2-core CPU (1e-10 s per MAC-sample, 0.5 ms per step). For
        the ETA, and for starting the expensive runs first."""
        d = input_dim(self.dataset)
        macs = d * self.width + self.width * self.width + 10 * self.width
        steps = self.epochs * steps_per_epoch(self.n_train, self.batch_size)
        return 1e-10 * self.epochs * self.n_train * macs + 5e-4 * steps


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return -(-n_train // batch_size)


def train_run(spec: RunSpec, cache_dir: str = None) -> dict:
    """Train ``spec`` from scratch; held-out NLL and accuracy at the end of training.

    Cosine lr schedule to zero, stepped per batch. A run whose training loss becomes
    non-finite stops and is reported as diverged with an infinite held-out loss.
    """
    pool = load_pool(spec.dataset, spec.data_seed, cache_dir, spec.pool_needed)
    x, y = pool.train_subset(spec.n_train)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    xh, yh = torch.from_numpy(pool.x_holdout), torch.from_numpy(pool.y_holdout)

    torch.manual_seed(spec.seed)
    model = build_mlp(x.shape[1], spec.width)
    init_mlp(model, spec.arm.parametrization, spec.base_width)
    m = steps_per_epoch(spec.n_train, spec.batch_size)
    opt = build_optimizer(model, spec.arm, lr=spec.lr, weight_decay=spec.weight_decay,
                          base_width=spec.base_width, steps_per_epoch=m, epochs=spec.epochs)
    total = spec.epochs * m
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total)))
    order = torch.Generator().manual_seed(spec.seed + 1_000_003)

    start = time.perf_counter()
    diverged = False
    for _ in range(spec.epochs):
        perm = torch.randperm(len(y), generator=order)
        for i in range(0, len(y), spec.batch_size):
            idx = perm[i:i + spec.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if diverged:
            break
    with torch.no_grad():
        out = model(xh)
        nll = F.cross_entropy(out, yh).item()
        acc = (out.argmax(1) == yh).float().mean().item()
        train_nll = F.cross_entropy(model(x), y).item()
    if diverged or not math.isfinite(nll):
        diverged, nll = True, math.inf
    return {"holdout_nll": nll, "holdout_acc": acc, "train_nll": train_nll,
            "diverged": diverged, "seconds": time.perf_counter() - start}
