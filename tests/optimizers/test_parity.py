"""Parity: with no scaling, sd's optimizers are torch.optim's, step for step, on every backend.

loop and foreach run torch's operations in torch's order, so they must match torch's for-loop
implementation bit for bit; torch_fused (and auto, which picks it on the CPU) must match it
to float32 rounding: torch's fused kernels order the arithmetic differently. (torch's own
``fused=True`` SGD cannot be the reference: it raises when only some tensors have a momentum
buffer, which the grads-None cases below produce.)
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scaled_decay as sd
from tests.helpers.problems import (
    QuadraticLoss,
    clone_params,
    make_params,
    run_steps,
    seeds,
    shape_lists,
)

BACKENDS = ["loop", "foreach", "torch_fused", "auto"]
STEPS = 50

lrs = st.floats(1e-4, 5e-2)
wds = st.sampled_from([0.0, 1e-3, 0.1, 1.0])
betas = st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.9, 0.99, 0.999]))
epss = st.sampled_from([1e-8, 1e-6, 1e-3])


def _split_groups(params, hp_second):
    """Two param groups when there are 2+ tensors, the second with its own hyperparameters."""
    if len(params) < 2:
        return [{"params": params}]
    return [{"params": params[::2]}, {"params": params[1::2], **hp_second}]


def _compare(make_sd, make_torch, seed, shapes, *, maximize, sched, closure, skip, exact):
    params = make_params(seed, shapes)
    ours, ref = clone_params(params), clone_params(params)
    opt, opt_ref = make_sd(ours), make_torch(ref)
    sign = -1.0 if maximize else 1.0  # maximize a concave loss: the same stable problem
    schedulers = [None, None]
    if sched:
        schedulers = [
            torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.7) for o in (opt, opt_ref)
        ]
    skip_grad = (lambda k, i: (k + i) % 5 == 0) if skip else None
    for o, ps, s in ((opt, ours, schedulers[0]), (opt_ref, ref, schedulers[1])):
        run_steps(
            o,
            ps,
            QuadraticLoss(seed, ps, sign),
            STEPS,
            scheduler=s,
            use_closure=closure,
            skip_grad=skip_grad,
        )
    for a, b in zip(ours, ref):
        if exact:
            assert torch.equal(a, b), (a - b).abs().max()
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


common = dict(
    seed=seeds,
    shapes=shape_lists,
    maximize=st.booleans(),
    sched=st.booleans(),
    closure=st.booleans(),
    skip=st.booleans(),
)


@pytest.mark.parametrize("backend", BACKENDS)
@given(lr=lrs, wd=wds, betas=betas, eps=epss, amsgrad=st.booleans(), **common)
def test_adamw_matches_torch(
    backend, lr, wd, betas, eps, amsgrad, seed, shapes, maximize, sched, closure, skip
):
    kw = dict(lr=lr, betas=betas, eps=eps, weight_decay=wd, amsgrad=amsgrad, maximize=maximize)
    second = dict(lr=lr * 0.5, weight_decay=wd * 2)
    _compare(
        lambda p: sd.AdamW(_split_groups(p, second), backend=backend, **kw),
        lambda p: torch.optim.AdamW(_split_groups(p, second), foreach=False, **kw),
        seed,
        shapes,
        maximize=maximize,
        sched=sched,
        closure=closure,
        skip=skip,
        exact=backend in ("loop", "foreach"),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@given(lr=lrs, wd=wds, betas=betas, eps=epss, amsgrad=st.booleans(), **common)
def test_adam_matches_torch(
    backend, lr, wd, betas, eps, amsgrad, seed, shapes, maximize, sched, closure, skip
):
    kw = dict(lr=lr, betas=betas, eps=eps, weight_decay=wd, amsgrad=amsgrad, maximize=maximize)
    second = dict(betas=(0.8, 0.95), weight_decay=wd * 0.5)
    _compare(
        lambda p: sd.Adam(_split_groups(p, second), backend=backend, **kw),
        lambda p: torch.optim.Adam(_split_groups(p, second), foreach=False, **kw),
        seed,
        shapes,
        maximize=maximize,
        sched=sched,
        closure=closure,
        skip=skip,
        exact=backend in ("loop", "foreach"),
    )


sgd_momentum = st.one_of(
    st.just((0.0, 0.0, False)),
    st.tuples(st.sampled_from([0.5, 0.9]), st.sampled_from([0.0, 0.3]), st.just(False)),
    st.tuples(st.sampled_from([0.5, 0.9]), st.just(0.0), st.just(True)),
)


@pytest.mark.parametrize("backend", BACKENDS)
@given(lr=lrs, wd=wds, mom=sgd_momentum, **common)
def test_sgd_l2_matches_torch(backend, lr, wd, mom, seed, shapes, maximize, sched, closure, skip):
    momentum, dampening, nesterov = mom
    kw = dict(
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=wd,
        nesterov=nesterov,
        maximize=maximize,
    )
    second = dict(lr=lr * 2, weight_decay=wd * 3)
    _compare(
        lambda p: sd.SGD(_split_groups(p, second), decay_mode="l2", backend=backend, **kw),
        lambda p: torch.optim.SGD(_split_groups(p, second), foreach=False, **kw),
        seed,
        shapes,
        maximize=maximize,
        sched=sched,
        closure=closure,
        skip=skip,
        exact=backend in ("loop", "foreach"),
    )
