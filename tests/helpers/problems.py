"""Shared test problems: parameter sets and deterministic losses, built from a drawn seed."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from hypothesis import strategies as st
from torch import nn

import scaled_decay as sd

# Shapes that exercise the edge cases: 0-element, 1-element, vectors, matrices, conv-like.
SHAPES = [(0,), (1,), (7,), (3, 5), (4, 2, 3), (6, 4, 1, 2), (1, 1)]

shape_lists = st.lists(st.sampled_from(SHAPES), min_size=1, max_size=5)
seeds = st.integers(0, 2**31 - 1)

DECAY_MODES = ["decoupled", "independent", "corrected", "l2"]
# no rule, each built-in rule by name, StepsPerEpoch, and a product of two rules
SCALINGS = [
    None,
    "fan_in",
    "param_count",
    sd.StepsPerEpoch(10, epochs=4),
    (sd.FanIn(reference=4.0, power=-1.0), sd.ParamCount(reference=50.0)),
]


def make_params(seed: int, shapes: Sequence, non_contiguous: bool = True) -> list[torch.Tensor]:
    """Leaf parameters; every 2-D+ one with more than one row is a transposed (strided) view
    when ``non_contiguous``, so the optimizers see non-contiguous params."""
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        if non_contiguous and len(shape) >= 2 and shape[0] > 1 and shape[-1] > 1:
            t = torch.randn(*reversed(shape), generator=g).permute(*reversed(range(len(shape))))
        else:
            t = torch.randn(*shape, generator=g)
        params.append(t.detach().requires_grad_())
    return params


def clone_params(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    # clone(preserve_format) keeps strides, so the copies are as non-contiguous as the source
    return [p.detach().clone().requires_grad_() for p in params]


class QuadraticLoss:
    """``sum_i 0.5*|a_i*(p_i - t_i)|^2 + <n_i(step), p_i>``: smooth, bounded below, with fresh
    gradient noise each call (from its own generator, so two runs see the same noise)."""

    def __init__(self, seed: int, params: Sequence[torch.Tensor], sign: float = 1.0):
        g = torch.Generator().manual_seed(seed + 1)
        self.targets = [torch.randn(p.shape, generator=g) for p in params]
        self.scales = [torch.rand(p.shape, generator=g) + 0.5 for p in params]
        self.noise = torch.Generator().manual_seed(seed + 2)
        self.sign = sign

    def __call__(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for p, t, a in zip(params, self.targets, self.scales):
            n = 0.3 * torch.randn(p.shape, generator=self.noise)
            total = total + 0.5 * ((a * (p - t)) ** 2).sum() + (n * p).sum()
        return self.sign * total


def run_steps(
    opt,
    params,
    loss: QuadraticLoss,
    steps: int,
    *,
    scheduler=None,
    use_closure: bool = False,
    skip_grad: Callable[[int, int], bool] | None = None,
):
    """``steps`` optimizer steps on ``loss``; ``skip_grad(step, i)`` leaves p_i's grad None."""
    for k in range(steps):

        def closure(k=k):  # bound now: opt.step calls it within this iteration
            opt.zero_grad(set_to_none=True)
            value = loss(params)
            value.backward()
            if skip_grad is not None:
                for i, p in enumerate(params):
                    if skip_grad(k, i):
                        p.grad = None
            return value

        if use_closure:
            opt.step(closure)
        else:
            closure()
            opt.step()
        if scheduler is not None:
            scheduler.step()


def run_amp_steps(opt, params, loss: QuadraticLoss, scaler, steps: int, overflow_at=None):
    """``steps`` steps through ``scaler`` (a torch.amp.GradScaler, or None: plain steps).
    At step ``overflow_at`` one gradient entry is set to inf; returns the (params, state
    dict) copies taken just before and just after that step."""
    snapshots = []
    for k in range(steps):
        opt.zero_grad()
        value = loss(params)
        (scaler.scale(value) if scaler else value).backward()
        if k == overflow_at:
            params[0].grad[(0,) * params[0].dim()] = float("inf")
            snapshots.append((clone_params(params), copy.deepcopy(opt.state_dict())))
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if k == overflow_at:
            snapshots.append((clone_params(params), copy.deepcopy(opt.state_dict())))
    return snapshots


def small_net() -> nn.Module:
    """Linear, Tanh, LayerNorm, Linear (6 -> 16 -> 3), seeded: the same weights every call."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.LayerNorm(16), nn.Linear(16, 3))


def assert_all_equal(xs, ys):
    """Bit for bit, tensor by tensor; the message is the largest difference."""
    for x, y in zip(xs, ys):
        assert torch.equal(x, y), (x - y).abs().max()
