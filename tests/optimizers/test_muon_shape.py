"""sd.MuonShape: the factor is torch's own lr adjustment, and it does what its docstring's
math says: with a constant gradient, wrapped Muon converges to W* = -(R) O with radius
R = a(A, B) / lam without the rule and R = a(reference) / lam with it, for every shape."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scaled_decay as sd
from scaled_decay.rules import TensorInfo, as_rules, rules_to_plain
from tests.helpers.checkpoints import save_load

FNS = [None, "original", "match_rms_adamw"]
dims = st.integers(1, 300)
needs_muon = pytest.mark.skipif(
    not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9"
)


def _info(shape):
    return TensorInfo(shape=shape, fan_in=shape[1], total_count=shape[0] * shape[1])


@given(a=dims, b=dims, fn=st.sampled_from(FNS))
def test_factor_is_the_closed_form(a, b, fn):
    want = 0.2 * math.sqrt(max(a, b)) if fn == "match_rms_adamw" else math.sqrt(max(1, a / b))
    assert sd.MuonShape(fn).scale(_info((a, b))) == pytest.approx(want, rel=1e-12)
    ref = sd.MuonShape(fn, reference_shape=(a, b))
    assert ref.scale(_info((a, b))) == 1.0  # lam == weight_decay at the reference shape


@needs_muon
@given(a=dims, b=dims, fn=st.sampled_from(FNS))
def test_factor_is_torchs_adjustment(a, b, fn):
    """torch's private helper, read where it exists, so a change in torch shows here."""
    adjust = getattr(torch.optim._muon, "_adjust_lr", None)
    if adjust is None:
        pytest.skip("torch.optim._muon._adjust_lr not present in this torch")
    assert sd.MuonShape(fn).scale(_info((a, b))) == pytest.approx(
        adjust(1.0, fn, torch.Size((a, b))), rel=1e-12
    )


def test_plain_dict_form_round_trips_through_weights_only_load():
    rules = (sd.MuonShape("match_rms_adamw", (64, 32)), sd.FanIn(power=0.5))
    assert as_rules(save_load(rules_to_plain(rules))) == rules
    assert as_rules([{"rule": "MuonShape", "adjust_lr_fn": None, "reference_shape": [3, 4]}]) == (
        sd.MuonShape(None, (3, 4)),
    )


@needs_muon
def test_report_shows_the_decay_at_the_adjusted_lr():
    params = [torch.randn(64, 16, requires_grad=True), torch.randn(16, 64, requires_grad=True)]
    opt = sd.with_scaled_decay(torch.optim.Muon)(
        params,
        lr=0.02,
        weight_decay=0.1,
        adjust_lr_fn="match_rms_adamw",
        decay_scaling=sd.MuonShape("match_rms_adamw", reference_shape=(32, 32)),
    )
    a_ref = 0.2 * math.sqrt(32)
    for row in opt.decay_report():
        a = 0.2 * math.sqrt(64)
        assert row.decay_factor == pytest.approx(1 - 0.02 * a * 0.1 / a_ref, rel=1e-12)


def _direction(shape, fn, grad):
    """O = NS(G): one step of plain Muon (lr 1, no decay) from W = 0 moves W by -a O."""
    w = torch.zeros(shape, requires_grad=True)
    opt = torch.optim.Muon([w], lr=1.0, weight_decay=0.0, adjust_lr_fn=fn)
    w.grad = grad.clone()
    opt.step()
    a = sd.MuonShape(fn).scale(_info(shape))
    return -w.detach() / a


def _equilibrium(shape, fn, rule, lam, steps):
    g = torch.Generator().manual_seed(sum(shape))
    grad = torch.randn(shape, generator=g)
    w = (0.1 * torch.randn(shape, generator=g)).requires_grad_()
    opt = sd.with_scaled_decay(torch.optim.Muon)(
        [w], lr=0.5, weight_decay=lam, adjust_lr_fn=fn, decay_scaling=rule
    )
    for _ in range(steps):
        w.grad = grad.clone()
        opt.step()
    return w.detach(), _direction(shape, fn, grad)


@needs_muon
@pytest.mark.parametrize("fn", ["match_rms_adamw", None])
def test_muon_shape_fixes_the_spectral_radius_across_shapes(fn):
    lam, ref = 0.8, (16, 16)  # c = 0.5 * lam * s >= 0.28: 30 steps converge to 1e-4
    for shape in [(8, 8), (32, 32), (32, 8)]:
        a = sd.MuonShape(fn).scale(_info(shape))
        for rule, radius in [
            (None, a / lam),
            (sd.MuonShape(fn, ref), sd.MuonShape(fn).scale(_info(ref)) / lam),
        ]:
            w, o = _equilibrium(shape, fn, rule, lam, steps=30)
            # W* = -R O: direction and size (Muon's bf16 O differs a little from step to
            # step: up to 1.5% on 8 x 8; the two radii differ by 1.4x to 2x where they differ)
            assert torch.nn.functional.cosine_similarity(w.flatten(), -o.flatten(), dim=0) > 0.995
            assert w.norm() / o.norm() == pytest.approx(radius, rel=0.03), (shape, rule)
