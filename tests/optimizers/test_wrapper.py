"""sd.with_scaled_decay: the package's decay in front of any torch.optim optimizer.

Exactness: torch.optim.SGD/Adam wrapped equal sd.SGD/sd.AdamW bit for bit; a zero-gradient
step of every wrapped optimizer multiplies each tensor by exactly the ``decay_factor`` of its
``decay_report()`` row; with lam = 0 (and in mode "l2" with no rule) the wrapper is the plain
optimizer bit for bit.
"""

import re

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import scaled_decay as sd
from tests.helpers.problems import (
    QuadraticLoss,
    assert_all_equal,
    clone_params,
    make_params,
    run_steps,
    seeds,
    shape_lists,
)

RULES = [
    None,
    "fan_in",
    "param_count",
    sd.StepsPerEpoch(5, epochs=2),
    (sd.FanIn(reference=4.0, power=0.5), sd.ParamCount(reference=50)),
]
MULT_MODES = ["decoupled", "independent", "corrected"]

# (torch class, extra kwargs): every optimizer's own update is exactly zero at zero gradient
# with these settings (Adagrad: initial_accumulator_value=0, so it divides 0 by eps).
WRAPPED = {
    "RAdam": (torch.optim.RAdam, {}),
    "NAdam": (torch.optim.NAdam, {}),
    "Adamax": (torch.optim.Adamax, {}),
    "Adagrad": (torch.optim.Adagrad, {}),
    "RMSprop": (torch.optim.RMSprop, {"momentum": 0.9, "centered": True}),
    "Adam-fused": (torch.optim.Adam, {"fused": True}),
    "SGD-foreach": (torch.optim.SGD, {"momentum": 0.9, "foreach": True}),
}
if hasattr(torch.optim, "Adafactor"):
    WRAPPED["Adafactor"] = (torch.optim.Adafactor, {})
HAS_MUON = hasattr(torch.optim, "Muon")
if HAS_MUON:
    WRAPPED["Muon"] = (torch.optim.Muon, {})
MATRIX_SHAPES = [(3, 5), (6, 2), (1, 7)]  # Muon takes 2-D parameters only


def _shapes(name, drawn):
    if name == "Muon":
        return MATRIX_SHAPES
    if name == "Adafactor":  # torch's Adafactor divides by numel: no empty tensors
        return [s for s in drawn if 0 not in s] or [(3,)]
    return drawn


def _run_pair(make_a, make_b, seed, shapes, steps=4, maximize=False, **run_kw):
    params = make_params(seed, shapes)
    a, b = clone_params(params), clone_params(params)
    opt_a, opt_b = make_a(a), make_b(b)
    sched = [torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1.0 / (1 + t)) for o in (opt_a, opt_b)]
    sign = -1.0 if maximize else 1.0
    run_steps(opt_a, a, QuadraticLoss(seed, a, sign), steps, scheduler=sched[0], **run_kw)
    run_steps(opt_b, b, QuadraticLoss(seed, b, sign), steps, scheduler=sched[1], **run_kw)
    return a, b, opt_a, opt_b


# ---- wrapped SGD / Adam are sd.SGD / sd.AdamW ------------------------------------------------
@given(
    seed=seeds,
    shapes=shape_lists,
    mode=st.sampled_from(MULT_MODES),
    rule=st.sampled_from(RULES),
    foreach=st.booleans(),
    maximize=st.booleans(),
    nesterov=st.booleans(),
)
@example(
    seed=0,
    shapes=[(3, 5), (7,)],
    mode="decoupled",
    rule="fan_in",
    foreach=False,
    maximize=True,
    nesterov=True,
)
def test_wrapped_sgd_is_sd_sgd(seed, shapes, mode, rule, foreach, maximize, nesterov):
    kw = dict(
        lr=0.05,
        momentum=0.9,
        nesterov=nesterov,
        weight_decay=0.3,
        maximize=maximize,
        decay_mode=mode,
        decay_scaling=rule,
    )
    a, b, *_ = _run_pair(
        lambda p: sd.with_scaled_decay(torch.optim.SGD)(p, foreach=foreach, **kw),
        lambda p: sd.SGD(p, backend="foreach" if foreach else "loop", **kw),
        seed,
        shapes,
        maximize=maximize,
        skip_grad=lambda k, i: (k + i) % 3 == 0,
    )
    assert_all_equal(a, b)


@given(
    seed=seeds,
    shapes=shape_lists,
    mode=st.sampled_from(MULT_MODES),
    rule=st.sampled_from(RULES),
    foreach=st.booleans(),
    amsgrad=st.booleans(),
    maximize=st.booleans(),
)
def test_wrapped_adam_is_sd_adamw(seed, shapes, mode, rule, foreach, amsgrad, maximize):
    kw = dict(
        lr=0.01,
        weight_decay=0.2,
        amsgrad=amsgrad,
        maximize=maximize,
        decay_mode=mode,
        decay_scaling=rule,
    )
    a, b, *_ = _run_pair(
        lambda p: sd.with_scaled_decay(torch.optim.Adam)(p, foreach=foreach, **kw),
        lambda p: sd.AdamW(p, backend="foreach" if foreach else "loop", **kw),
        seed,
        shapes,
        maximize=maximize,
        skip_grad=lambda k, i: (k * i) % 4 == 1,
    )
    assert_all_equal(a, b)


@pytest.mark.parametrize("foreach", [False, True])
def test_wrapped_adam_l2_is_sd_adam(foreach):
    kw = dict(lr=0.01, weight_decay=0.2, maximize=True, decay_mode="l2", decay_scaling="fan_in")
    a, b, *_ = _run_pair(
        lambda p: sd.with_scaled_decay(torch.optim.Adam)(p, foreach=foreach, **kw),
        lambda p: sd.Adam(p, backend="foreach" if foreach else "loop", **kw),
        3,
        [(3, 5), (7,), (2, 3, 2)],
        maximize=True,
    )
    assert_all_equal(a, b)


# ---- every wrapped optimizer: a zero-gradient step is exactly the reported decay -------------
@pytest.mark.parametrize("name", list(WRAPPED))
@given(
    seed=seeds, shapes=shape_lists, mode=st.sampled_from(MULT_MODES), rule=st.sampled_from(RULES)
)
def test_zero_gradient_step_is_the_reported_decay(name, seed, shapes, mode, rule):
    cls, extra = WRAPPED[name]
    params = make_params(seed, _shapes(name, shapes))
    opt = sd.with_scaled_decay(cls)(
        sd_named(params), lr=0.03, weight_decay=0.005, decay_mode=mode, decay_scaling=rule, **extra
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for step in range(3):
        for i, p in enumerate(params):  # the last tensor never gets a gradient
            p.grad = None if i == len(params) - 1 and i > 0 else torch.zeros_like(p)
        before = [p.detach().clone() for p in params]
        rows = opt.decay_report()
        opt.step()
        sched.step()
        for p, b, row in zip(params, before, rows):
            if p.grad is None:
                assert torch.equal(p, b), "a parameter without a gradient was changed"
            else:
                assert 0 < row.decay_factor < 1
                assert torch.equal(p, b * row.decay_factor), (name, step, row)


def sd_named(params):
    return [(f"p{i}", p) for i, p in enumerate(params)]


# ---- lam = 0, and "l2" without rules: the plain optimizer, bit for bit ----------------------
@pytest.mark.parametrize("name", list(WRAPPED))
@given(seed=seeds, shapes=shape_lists, rule=st.sampled_from(RULES))
def test_zero_decay_is_the_plain_optimizer(name, seed, shapes, rule):
    cls, extra = WRAPPED[name]
    a, b, *_ = _run_pair(
        lambda p: sd.with_scaled_decay(cls)(
            p, lr=0.01, weight_decay=0.0, decay_scaling=rule, **extra
        ),
        lambda p: cls(p, lr=0.01, weight_decay=0.0, **extra),
        seed,
        _shapes(name, shapes),
        skip_grad=lambda k, i: (k + 2 * i) % 5 == 0,
    )
    assert_all_equal(a, b)


@pytest.mark.parametrize("name", ["RAdam", "NAdam", "Adamax", "Adagrad", "RMSprop"])
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
def test_l2_without_rules_is_the_plain_coupled_decay(name, foreach, maximize):
    """The optimizers whose own weight_decay is coupled (g + wd * p after maximize)."""
    cls, extra = WRAPPED[name]
    a, b, *_ = _run_pair(
        lambda p: sd.with_scaled_decay(cls)(
            p,
            lr=0.01,
            weight_decay=0.3,
            decay_mode="l2",
            foreach=foreach,
            maximize=maximize,
            **extra,
        ),
        lambda p: cls(p, lr=0.01, weight_decay=0.3, foreach=foreach, maximize=maximize, **extra),
        5,
        [(3, 5), (7,), (2, 3, 2), (1,)],
        maximize=maximize,
    )
    assert_all_equal(a, b)


def test_l2_gives_the_users_gradient_back():
    params = make_params(1, [(3, 4), (5,)])
    opt = sd.with_scaled_decay(torch.optim.RAdam)(params, weight_decay=0.5, decay_mode="l2")
    grads = [torch.randn_like(p) for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    copies = [g.clone() for g in grads]
    opt.step()
    for p, g, c in zip(params, grads, copies):
        assert p.grad is g and torch.equal(g, c)


@pytest.mark.skipif(not HAS_MUON, reason="torch.optim.Muon needs torch >= 2.9")
@settings(max_examples=5)  # Muon's Newton-Schulz steps are slow on the CPU
@given(seed=seeds, wd=st.floats(0.0, 0.5))
def test_wrapped_muon_without_rules_is_torch_muon(seed, wd):
    """Muon's own decay is decoupled, ``p *= 1 - lr * wd``: the same op the wrapper uses."""
    a, b, *_ = _run_pair(
        lambda p: sd.with_scaled_decay(torch.optim.Muon)(p, lr=0.02, weight_decay=wd),
        lambda p: torch.optim.Muon(p, lr=0.02, weight_decay=wd),
        seed,
        MATRIX_SHAPES,
    )
    assert_all_equal(a, b)


def test_default_weight_decay_is_the_wrapped_classes():
    params = make_params(0, [(3, 4)])
    assert sd.with_scaled_decay(torch.optim.RAdam)(params).defaults["weight_decay"] == 0
    if HAS_MUON:
        assert sd.with_scaled_decay(torch.optim.Muon)(params).param_groups[0]["weight_decay"] == 0.1
    opt = sd.with_scaled_decay(torch.optim.Rprop)(params, weight_decay=0.2)  # has none
    assert opt.param_groups[0]["weight_decay"] == 0.2


# ---- the step: closures, hooks, schedulers, param groups ------------------------------------
def test_closure_gradients_are_the_ones_decayed():
    """The closure runs before the decay: tensors whose grad it creates are decayed."""
    a, b, *_ = _run_pair(
        lambda p: sd.with_scaled_decay(torch.optim.NAdam)(p, weight_decay=0.4),
        lambda p: sd.with_scaled_decay(torch.optim.NAdam)(p, weight_decay=0.4),
        2,
        [(3, 5), (4,)],
        use_closure=True,
    )
    assert_all_equal(a, b)
    params = make_params(2, [(3, 5)])
    opt = sd.with_scaled_decay(torch.optim.SGD)(params, lr=0.1, weight_decay=0.5)
    before = params[0].detach().clone()

    def closure():
        params[0].grad = torch.zeros_like(params[0])
        return torch.tensor(3.0)

    assert opt.step(closure).item() == 3.0
    assert torch.equal(params[0], before * (1 - 0.1 * 0.5))


def test_step_hooks_run_once_per_step():
    params = make_params(0, [(3, 4)])
    torch.optim.Adamax(make_params(1, [(2,)]))  # hooks the plain class's step as well
    opt = sd.with_scaled_decay(torch.optim.Adamax)(params, weight_decay=0.1)
    calls = []
    opt.register_step_pre_hook(lambda *a: calls.append("pre"))
    opt.register_step_post_hook(lambda *a: calls.append("post"))
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    assert calls == ["pre", "post"]


def test_groups_take_their_own_decay_keys_and_param_groups_metadata():
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    groups = sd.param_groups(model, 0.2, decay_mode="independent")
    opt = sd.with_scaled_decay(torch.optim.RAdam)(groups, lr=0.01, decay_scaling="fan_in")
    rows = {r.name: r for r in opt.decay_report()}
    assert rows["0.weight"].fan_in == 8 and rows["0.weight"].lam == pytest.approx(0.2 / 8)
    assert rows["2.weight"].lam == pytest.approx(0.2 / 4)
    assert rows["0.bias"].lam == 0 and rows["0.bias"].decay_mode == "independent"
    opt.add_param_group(
        {
            "params": [("extra", torch.zeros(3, 3, requires_grad=True))],
            "weight_decay": 0.9,
            "decay_mode": "corrected",
        }
    )
    last = opt.decay_report()[-1]
    assert (last.weight_decay, last.decay_mode, last.scale) == (0.9, "corrected", 1 / 3)


class SignDescent(torch.optim.Optimizer):
    """A third-party-style optimizer whose own decay is called ``wd``, with **kwargs."""

    def __init__(self, params, lr=0.01, wd=0.05, **kwargs):
        super().__init__(params, dict(lr=lr, wd=wd, **kwargs))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.mul_(1 - group["lr"] * group["wd"]).add_(p.grad.sign(), alpha=-group["lr"])


def test_third_party_optimizer_with_its_own_decay_name():
    wrapped = sd.with_scaled_decay(SignDescent, own_decay="wd")
    params = make_params(4, [(3, 5)])
    opt = wrapped(params, lr=0.1, weight_decay=0.5, decay_scaling="fan_in", extra=1)
    assert opt.param_groups[0]["wd"] == 0.0 and opt.param_groups[0]["extra"] == 1
    params[0].grad = torch.zeros_like(params[0])
    before = params[0].detach().clone()
    opt.step()
    assert torch.equal(params[0], before * (1 - 0.1 * 0.5 / 5))
    with pytest.raises(ValueError, match=r"wd=0.2.*both given"):
        wrapped(params, wd=0.2)
    with pytest.raises(ValueError, match=re.escape("wd=0.3")):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "wd": 0.3})
    assert len(opt.param_groups) == 1
