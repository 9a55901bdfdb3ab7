"""sd.EquilibriumMonitor: measured rotational equilibrium against Kosson et al.'s predictions."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

import scaled_decay as sd
from scaled_decay.equilibrium import predict_angular_update, predict_rms

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _train_scale_invariant(make_opt, steps, *, seed=0, d=32, batch=16, reset_at=None):
    """A weight followed by a norm layer (so its gradient is orthogonal to it), trained on
    fresh random batches with random labels: gradient noise, as the theory assumes."""
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(d, d, generator=g) * 0.1)
    readout = torch.randn(10, d, generator=g)
    opt = make_opt([w])
    mon = sd.EquilibriumMonitor(opt, beta=0.995)
    for t in range(steps):
        x = torch.randn(batch, d, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        loss = F.cross_entropy(F.layer_norm(x @ w.T, (d,)) @ readout.T, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.update()
        if t == (reset_at if reset_at is not None else steps // 2):
            mon.reset()  # average over the second half only: at equilibrium
    (row,) = mon.report()
    return row


@settings(max_examples=3, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    mode=st.sampled_from(["decoupled", "l2"]),
)
@example(seed=0, momentum=0.9, mode="decoupled")
def test_sgd_angular_update_matches_prediction_within_5_percent(seed, momentum, mode):
    # c = lr * lam = 0.005: equilibrium after a few hundred steps
    row = _train_scale_invariant(
        lambda p: sd.SGD(p, lr=0.1, momentum=momentum, weight_decay=0.05, decay_mode=mode),
        2000,
        seed=seed,
    )
    assert row.grad_cos < 1e-4  # the norm layer makes the weight scale-invariant
    expected = (
        math.sqrt(2 * 0.005 * (1 - momentum) / (1 + momentum))
        if mode != "l2"
        else math.sqrt(2 * 0.1 * 0.05 / (1 + momentum))
    )
    assert row.angular_pred == pytest.approx(expected, rel=1e-9)
    assert row.ratio == pytest.approx(1.0, abs=0.05)
    assert row.rms_pred is None  # SGD's equilibrium norm depends on the gradient's size


def test_torch_sgd_l2_is_predicted_as_coupled_decay():
    row = _train_scale_invariant(
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.05), 2000
    )
    assert row.decay_mode == "l2" and row.c == 0.0
    assert row.angular_pred == pytest.approx(math.sqrt(2 * 0.1 * 0.05 / 1.9))
    assert row.ratio == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("opt_cls", [sd.AdamW, torch.optim.AdamW])
def test_adamw_rms_and_angular_update_match_prediction_within_20_percent(opt_cls):
    # Measured on this toy: angular ~0.88x and RMS ~1.06-1.14x of the predictions (the
    # theory takes Adam's per-element update as exactly lr * sqrt((1-b1)/(1+b1)) in RMS).
    row = _train_scale_invariant(lambda p: opt_cls(p, lr=0.01, weight_decay=0.5), 2000)
    assert row.c == pytest.approx(0.005)
    assert row.rms_pred == pytest.approx(math.sqrt(0.01 / (2 * 0.5)))
    assert row.angular_pred == pytest.approx(math.sqrt(2 * 0.005 * 0.1 / 1.9))
    assert row.rms == pytest.approx(row.rms_pred, rel=0.2)
    assert row.ratio == pytest.approx(1.0, abs=0.2)


def test_angle_is_measured_exactly_even_when_tiny():
    w = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    opt = torch.optim.SGD([w], lr=0.0)
    mon = sd.EquilibriumMonitor(opt, beta=0.0)  # beta 0: the last step's values
    for theta in (1e-4, 0.3):
        with torch.no_grad():
            w.copy_(torch.tensor([[2 * math.cos(theta), 2 * math.sin(theta)], [0.0, 0.0]]))
        mon.update()
        (row,) = mon.report()
        assert row.angular == pytest.approx(theta, rel=1e-5)
        assert row.rms == pytest.approx(1.0)  # |w| = 2 over 4 elements
        with torch.no_grad():
            w.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        mon.update()


def test_independent_mode_uses_the_per_step_shrink_of_decay_report():
    w = torch.nn.Parameter(torch.randn(4, 4))
    opt = sd.AdamW([w], lr=0.1, weight_decay=0.01, decay_mode="independent")
    for group in opt.param_groups:
        group["lr"] = 0.05  # as a scheduler would: c = (lr / initial_lr) * lam
    mon = sd.EquilibriumMonitor(opt)
    w.grad = torch.randn(4, 4)
    opt.step()
    mon.update()
    (row,) = mon.report()
    (rep,) = opt.decay_report()
    assert row.c == pytest.approx(1 - rep.decay_factor) and row.c == pytest.approx(0.005)
    assert row.angular_pred == pytest.approx(
        predict_angular_update("adam", "independent", 0.005, 0.05, 0.01, 0.9)
    )
    assert row.rms_pred == pytest.approx(0.05 / math.sqrt(0.01))


def test_no_prediction_where_the_theory_gives_none():
    w = torch.nn.Parameter(torch.randn(3, 3))
    cases = [
        (torch.optim.Adam([w], lr=0.1, weight_decay=0.1), "Adam with L2"),
        (sd.SGD([w], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1), "nesterov"),
        (sd.AdamW([w], lr=0.1, weight_decay=0.0), "no decay"),
        (torch.optim.RMSprop([w], lr=0.1, weight_decay=0.1), "RMSprop"),
    ]
    for opt, note in cases:
        mon = sd.EquilibriumMonitor(opt)
        w.grad = torch.randn(3, 3)
        opt.step()
        mon.update()
        (row,) = mon.report()
        assert row.angular_pred is None and row.ratio is None and note in row.note
        assert row.angular > 0 and row.steps == 1  # still measured
    assert predict_rms("sgd", "decoupled", 0.01, 0.1) is None


def test_attach_updates_on_every_step_until_detached_and_defaults_skip_biases():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = sd.AdamW(sd.param_groups(model, 0.1), lr=0.01)
    mon = sd.EquilibriumMonitor(opt, attach=True)
    report = mon.report()
    assert [r.name for r in report] == ["0.weight"] and report[0].steps == 0
    assert report[0].angular is None
    for _ in range(3):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
    assert mon.report()[0].steps == 3
    mon.detach()
    opt.step()
    assert mon.report()[0].steps == 3
    assert "0.weight" in str(mon.report()) and mon.report().to_dicts()[0]["steps"] == 3


def test_bad_input_raises_value_error_naming_the_argument():
    w = torch.nn.Parameter(torch.randn(3, 3))
    opt = sd.SGD([w], lr=0.1)
    with pytest.raises(ValueError, match=re.escape("optimizer must be a torch.optim.Optimizer")):
        sd.EquilibriumMonitor([w])
    for beta in (1.0, -0.1, True, "0.9", float("nan")):
        with pytest.raises(ValueError, match="beta"):
            sd.EquilibriumMonitor(opt, beta=beta)
    with pytest.raises(ValueError, match="not held by the optimizer"):
        sd.EquilibriumMonitor(opt, params=[torch.nn.Parameter(torch.randn(2, 2))])
    with pytest.raises(ValueError, match="params must be tensors"):
        sd.EquilibriumMonitor(opt, params=["weight"])
    bias_only = sd.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    with pytest.raises(ValueError, match="no tensor to watch"):
        sd.EquilibriumMonitor(bias_only)
