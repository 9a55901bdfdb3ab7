"""Train one run of the study and measure it: the unit the cache and the workers deal in."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .archs import Net
from .data import load_pool
from .models import Arm, build_optimizer

__all__ = ["RunSpec", "steps_per_epoch", "train_run"]

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
    arch: str = "mlp"

    @property
    def net(self) -> Net:
        return Net(self.arch, self.dataset)

    def key(self) -> str:
        fields = asdict(self)
        if self.arch == "mlp":  # keeps the keys (and caches) of MLP runs from before archs
            del fields["arch"]
        text = json.dumps(dict(fields, version=TRAIN_CODE_VERSION), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        return cls(**dict(d, arm=Arm(**d["arm"])))

    def cost(self) -> float:
        """Estimated seconds of one core: multiply-adds plus a per-step overhead, with
        constants measured on a 2-core CPU (per MAC-sample ``MAC_SECONDS``, per step
        ``STEP_SECONDS``, by arch). For the ETA, the planned cost, and starting the expensive
        runs first."""
        macs = self.net.macs(self.width)
        steps = self.epochs * steps_per_epoch(self.n_train, self.batch_size)
        return (
            MAC_SECONDS[self.arch] * self.epochs * self.n_train * macs
            + STEP_SECONDS[self.arch] * steps
        )


# Least-squares fits to the recorded runs' times (seconds = a * MAC-samples + b * steps):
# per step (Python, autograd, optimizer step, small kernels) the MLP's 0.5 ms from its
# studies, the CNN's 4.5 ms from the first study's CNN arm (0.5 ms had underestimated its
# runs up to 3x at the narrow widths); per MAC-sample 1e-10 s (fits: 0.7-0.9e-10). The
# transformer's from the first study's transformer arm and preview (a = 0.55 and 0.66e-10,
# b = 8.5 and 8.2 ms). The first study's runs are in git, no longer in the tree:
# b2e852b:benchmarks/results/transfer/first_study/{cnn,transformer,transformer-quick}.
# All fitted on an Intel Xeon VM; an AMD EPYC VM runs the multiply-adds ~1.7x slower (tests
# plan for it).
MAC_SECONDS = {"mlp": 1e-10, "cnn": 1e-10, "transformer": 6e-11}
STEP_SECONDS = {"mlp": 5e-4, "cnn": 4.5e-3, "transformer": 8.3e-3}


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return -(-n_train // batch_size)


def _nll(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per prediction: per sample, or per position for the LM."""
    return F.cross_entropy(out.flatten(0, -2), y.flatten())


def _evaluate(model, x: torch.Tensor, y: torch.Tensor, max_logits: int = 1 << 22):
    """(mean NLL, accuracy) over all predictions, in chunks of at most ``max_logits``
    logits (the MLPs' sets fit in one chunk: their numbers are exactly one pass's)."""
    per_row = y[:1].numel() * model(x[:1]).shape[-1]
    rows = max(1, max_logits // per_row)
    if rows >= len(y):
        out = model(x)
        return _nll(out, y).item(), (out.argmax(-1) == y).float().mean().item()
    nll = correct = 0.0
    for i in range(0, len(y), rows):
        out = model(x[i : i + rows])
        nll += F.cross_entropy(
            out.flatten(0, -2), y[i : i + rows].flatten(), reduction="sum"
        ).item()
        correct += (out.argmax(-1) == y[i : i + rows]).sum().item()
    return nll / y.numel(), correct / y.numel()


def train_run(spec: RunSpec, cache_dir: str | None = None) -> dict:
    """Train ``spec`` from scratch; held-out NLL and accuracy at the end of training.

    Cosine lr schedule to zero, stepped per batch. A run whose training loss becomes
    non-finite stops and is reported as diverged with an infinite held-out loss.
    """
    pool = load_pool(spec.dataset, spec.data_seed, cache_dir, spec.pool_needed)
    x, y = pool.train_subset(spec.n_train)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    xh, yh = torch.from_numpy(pool.x_holdout), torch.from_numpy(pool.y_holdout)

    torch.manual_seed(spec.seed)
    model = spec.net.build(spec.width, spec.arm.parametrization, spec.base_width)
    m = steps_per_epoch(spec.n_train, spec.batch_size)
    opt = build_optimizer(
        model,
        spec.arm,
        net=spec.net,
        width=spec.width,
        lr=spec.lr,
        weight_decay=spec.weight_decay,
        base_width=spec.base_width,
        steps_per_epoch=m,
        epochs=spec.epochs,
    )
    total = spec.epochs * m
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))
    )
    order = torch.Generator().manual_seed(spec.seed + 1_000_003)

    start = time.perf_counter()
    diverged = False
    for _ in range(spec.epochs):
        perm = torch.randperm(len(y), generator=order)
        for i in range(0, len(y), spec.batch_size):
            idx = perm[i : i + spec.batch_size]
            loss = _nll(model(x[idx]), y[idx])
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
        nll, acc = _evaluate(model, xh, yh)
        train_nll, _ = _evaluate(model, x, y)
    if diverged or not math.isfinite(nll):
        diverged, nll = True, math.inf
    return {
        "holdout_nll": nll,
        "holdout_acc": acc,
        "train_nll": train_nll,
        "diverged": diverged,
        "seconds": time.perf_counter() - start,
    }
