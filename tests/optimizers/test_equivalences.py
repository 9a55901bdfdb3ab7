"""The update equivalences the package promises, checked against independent computations:
for SGD, decoupled decay equals l2 equals an autograd penalty; l2 with ParamCount is the mean
square penalty; StepsPerEpoch(M) divides the plain decay by M; independent is decoupled
relabelled at a constant lr; zero gradients decay geometrically along the lr schedule; lam = 0
is no decay in every mode; every backend agrees for every mode and rule."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scaled_decay as sd
from tests.helpers.problems import (
    DECAY_MODES,
    QuadraticLoss,
    clone_params,
    make_params,
    run_steps,
    seeds,
    shape_lists,
)

BACKENDS = ["loop", "foreach", "torch_fused"]
lams = st.floats(1e-3, 2.0)
lrs = st.floats(1e-3, 0.1)

rules = st.one_of(
    st.none(),
    st.just("fan_in"),
    st.just("param_count"),
    st.builds(
        sd.FanIn, reference=st.sampled_from([1.0, 16.0]), power=st.sampled_from([1.0, -1.0, 0.5])
    ),
    st.builds(sd.StepsPerEpoch, steps_per_epoch=st.integers(1, 50)),
    st.tuples(st.just("fan_in"), st.builds(sd.StepsPerEpoch, st.integers(1, 9), st.integers(1, 9))),
)


def _autograd_sgd(params, loss, penalty, lr, steps):
    """Plain gradient descent on loss + penalty, with autograd: the independent reference."""
    for _ in range(steps):
        for p in params:
            p.grad = None
        (loss(params) + penalty(params)).backward()
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p -= lr * p.grad


@pytest.mark.parametrize("backend", BACKENDS)
@given(seed=seeds, shapes=shape_lists, lam=lams, lr=lrs)
def test_sgd_decoupled_equals_l2_equals_autograd_sum_penalty(backend, seed, shapes, lam, lr):
    params = make_params(seed, shapes)
    runs = {}
    for mode in ("decoupled", "l2"):
        ps = clone_params(params)
        run_steps(
            sd.SGD(ps, lr=lr, weight_decay=lam, decay_mode=mode, backend=backend),
            ps,
            QuadraticLoss(seed, ps),
            20,
        )
        runs[mode] = ps
    ref = clone_params(params)
    _autograd_sgd(
        ref, QuadraticLoss(seed, ref), lambda ps: sum(lam / 2 * (p**2).sum() for p in ps), lr, 20
    )
    for a, b, c in zip(runs["decoupled"], runs["l2"], ref):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@given(seed=seeds, shapes=shape_lists, lam=st.floats(1.0, 50.0), lr=lrs)
def test_l2_param_count_is_the_mean_square_penalty(backend, seed, shapes, lam, lr):
    """``l2`` + ParamCount() ≡ autograd of loss + (lam/2)·mean(w²) over all parameters."""
    params = make_params(seed, shapes)
    ours = clone_params(params)
    groups = [{"params": ours[:1]}, {"params": ours[1:]}] if len(ours) > 1 else ours
    opt = sd.SGD(
        groups,
        lr=lr,
        weight_decay=lam,
        decay_mode="l2",
        decay_scaling="param_count",
        backend=backend,
    )
    run_steps(opt, ours, QuadraticLoss(seed, ours), 20)
    ref = clone_params(params)
    n = sum(p.numel() for p in ref)

    def mean_square(ps):
        return lam / 2 * sum((p**2).sum() for p in ps) / max(n, 1)

    _autograd_sgd(ref, QuadraticLoss(seed, ref), mean_square, lr, 20)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", DECAY_MODES)
@given(seed=seeds, shapes=shape_lists, lam=lams, m=st.integers(1, 100), t=st.integers(1, 100))
def test_steps_per_epoch_equals_plain_decay_divided(mode, seed, shapes, lam, m, t):
    params = make_params(seed, shapes)
    for rule, factor in (
        (sd.StepsPerEpoch(m), 1 / m),
        (sd.StepsPerEpoch(m, epochs=t), 1 / math.sqrt(m * t)),
    ):
        scaled, plain = clone_params(params), clone_params(params)
        run_steps(
            sd.AdamW(scaled, lr=0.01, weight_decay=lam, decay_mode=mode, decay_scaling=rule),
            scaled,
            QuadraticLoss(seed, scaled),
            10,
        )
        run_steps(
            sd.AdamW(plain, lr=0.01, weight_decay=lam * factor, decay_mode=mode),
            plain,
            QuadraticLoss(seed, plain),
            10,
        )
        for a, b in zip(scaled, plain):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("opt_cls", [sd.SGD, sd.AdamW])
@given(seed=seeds, shapes=shape_lists, lam=st.floats(0.01, 1.0), lr=lrs)
def test_independent_is_decoupled_relabelled_at_constant_lr(opt_cls, seed, shapes, lam, lr):
    """At lr = initial_lr, independent(lam) removes the fraction lam per step: it is
    decoupled with weight_decay = lam / lr."""
    params = make_params(seed, shapes)
    ind, dec = clone_params(params), clone_params(params)
    run_steps(
        opt_cls(ind, lr=lr, weight_decay=lam, decay_mode="independent"),
        ind,
        QuadraticLoss(seed, ind),
        15,
    )
    run_steps(
        opt_cls(dec, lr=lr, weight_decay=lam / lr, decay_mode="decoupled"),
        dec,
        QuadraticLoss(seed, dec),
        15,
    )
    for a, b in zip(ind, dec):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _zero_grad_run(opt_cls, mode, lam, lr, steps, scheduler=None, backend="auto"):
    p = torch.linspace(-2, 2, 11).requires_grad_()
    opt = opt_cls([p], lr=lr, weight_decay=lam, decay_mode=mode, backend=backend)
    sched = scheduler(opt) if scheduler else None
    lrs_seen = []
    for _ in range(steps):
        p.grad = torch.zeros_like(p)
        lrs_seen.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched:
            sched.step()
    return p.detach(), lrs_seen


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opt_cls", [sd.SGD, sd.AdamW])
@pytest.mark.parametrize("mode", ["decoupled", "independent", "corrected"])
def test_zero_gradients_give_geometric_decay_following_the_schedule(backend, opt_cls, mode):
    """p_t = p_0 · Π(1 − c_t): c = lr·lam, (lr/lr0)·lam, (lr²/lr0)·lam, under a scheduler."""
    lam, lr0 = 0.3, 0.05
    sched = lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)  # noqa: E731
    p, seen = _zero_grad_run(opt_cls, mode, lam, lr0, 12, sched, backend)
    factor = {
        "decoupled": lambda lr: lr * lam,
        "independent": lambda lr: lr / lr0 * lam,
        "corrected": lambda lr: lr * lr / lr0 * lam,
    }[mode]
    expected = torch.linspace(-2, 2, 11, dtype=torch.float64)
    for lr in seen:
        expected = expected * (1 - factor(lr))
    torch.testing.assert_close(p, expected.float(), rtol=1e-5, atol=1e-7)
    if mode != "decoupled":  # constant lr: (1 - c)^t exactly the closed form
        q, _ = _zero_grad_run(opt_cls, mode, lam, lr0, 12, None, backend)
        c = factor(lr0)
        torch.testing.assert_close(
            q, torch.linspace(-2, 2, 11) * (1 - c) ** 12, rtol=1e-5, atol=1e-7
        )


def test_sgd_l2_zero_gradients_decay_geometrically():
    p, _ = _zero_grad_run(sd.SGD, "l2", 0.3, 0.05, 12)
    torch.testing.assert_close(p, torch.linspace(-2, 2, 11) * (1 - 0.05 * 0.3) ** 12)


@pytest.mark.parametrize("mode", DECAY_MODES)
@pytest.mark.parametrize("opt_name", ["SGD", "Adam", "AdamW"])
def test_zero_lambda_is_no_decay_in_every_mode(mode, opt_name):
    params = make_params(5, [(4, 3), (3,)])
    ours, ref = clone_params(params), clone_params(params)
    run_steps(
        getattr(sd, opt_name)(
            ours,
            lr=0.01,
            weight_decay=0.0,
            decay_mode=mode,
            decay_scaling="fan_in",
            backend="foreach",
        ),
        ours,
        QuadraticLoss(5, ours),
        20,
    )
    run_steps(
        getattr(torch.optim, opt_name)(ref, lr=0.01, weight_decay=0.0),
        ref,
        QuadraticLoss(5, ref),
        20,
    )
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("opt_name", ["SGD", "AdamW"])
@given(
    seed=seeds,
    shapes=shape_lists,
    mode=st.sampled_from(DECAY_MODES),
    rule=rules,
    lam=lams,
    momentum=st.sampled_from([0.0, 0.9]),
)
def test_backends_agree_for_every_mode_and_rule(opt_name, seed, shapes, mode, rule, lam, momentum):
    """foreach ≡ loop bit for bit; torch_fused to float32 rounding."""
    params = make_params(seed, shapes)
    extra = {"momentum": momentum} if opt_name == "SGD" else {"amsgrad": momentum > 0}
    results = {}
    for backend in BACKENDS:
        ps = clone_params(params)
        opt = getattr(sd, opt_name)(
            ps,
            lr=0.01,
            weight_decay=lam,
            decay_mode=mode,
            decay_scaling=rule,
            backend=backend,
            **extra,
        )
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
        run_steps(opt, ps, QuadraticLoss(seed, ps), 12, scheduler=sched)
        results[backend] = ps
    for a, b, c in zip(results["loop"], results["foreach"], results["torch_fused"]):
        assert torch.equal(a, b)
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-6)
