"""sd.MuonShape on conv kernels: a > 2-D weight is the matrix Muon flattens it to,
(out, in*k*k), and its decay gets exactly the lr adjustment its update gets - measured on
each Muon implementation installed here that takes such weights (torch's refuses them before
its PR #180561; pytorch-optimizer's flattens them)."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scaled_decay as sd
from scaled_decay.rules import TensorInfo, muon_matrix_shape

FNS = [None, "original", "match_rms_adamw"]
dims = st.integers(1, 64)


def _info(shape):
    return TensorInfo(shape=tuple(shape), fan_in=math.prod(shape[1:]), total_count=math.prod(shape))


@given(o=dims, i=dims, k=st.integers(1, 5), fn=st.sampled_from(FNS))
def test_a_conv_kernel_is_its_flattened_matrix(o, i, k, fn):
    shape = (o, i, k, k)
    b = i * k * k
    want = 0.2 * math.sqrt(max(o, b)) if fn == "match_rms_adamw" else math.sqrt(max(1, o / b))
    assert muon_matrix_shape(shape) == (o, b)
    assert sd.MuonShape(fn).scale(_info(shape)) == pytest.approx(want, rel=1e-12)
    assert sd.MuonShape(fn, reference_shape=shape).scale(_info(shape)) == 1.0
    assert sd.MuonShape(fn, reference_shape=(o, b)).scale(_info(shape)) == 1.0
    assert sd.MuonShape(fn).scale(_info((o, i, k))) == pytest.approx(  # conv1d
        sd.MuonShape(fn).scale(_info((o, i * k))), rel=1e-12
    )


@given(shape=st.lists(dims, min_size=2, max_size=4), flag=st.booleans())
def test_factor_is_pytorch_optimizers_adjustment(shape, flag):
    base = pytest.importorskip("pytorch_optimizer.optimizer.muon.base")
    fn = "match_rms_adamw" if flag else "original"
    assert sd.MuonShape(fn).scale(_info(shape)) == pytest.approx(
        base.get_adjusted_lr(1.0, tuple(shape), use_adjusted_lr=flag), rel=1e-12
    )


def _torch_muon(params, fn, **kw):
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch >= 2.9")
    return sd.with_scaled_decay(torch.optim.Muon)(
        [{"params": [p]} for p in params], lr=1.0, adjust_lr_fn=fn, **kw
    )


def _po_muon(params, fn, weight_decay=0.0, **kw):
    po = pytest.importorskip("pytorch_optimizer")
    return sd.with_scaled_decay(po.Muon)(
        [{"params": [p], "use_muon": True, "weight_decay": weight_decay} for p in params],
        lr=1.0,
        use_adjusted_lr=fn == "match_rms_adamw",
        foreach=False,
        **kw,
    )


MUONS = {"torch.optim.Muon": _torch_muon, "pytorch_optimizer.Muon": _po_muon}


@pytest.mark.parametrize("muon", sorted(MUONS))
@pytest.mark.parametrize("fn", ["original", "match_rms_adamw"])
def test_the_decay_gets_the_adjustment_the_update_gets(muon, fn):
    conv = (64, 2, 2, 2)  # flattened 64 x 8: a = sqrt(8) ("original"); (64, 2) would be 4
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(conv, generator=g)
    # the update: from W = 0, no decay, the conv kernel against its flattened transpose
    # (8 x 64, a = 1 for "original"): the same orthogonalized matrix, scaled by each one's a
    w = torch.zeros(conv, requires_grad=True)
    m = torch.zeros(8, 64, requires_grad=True)
    try:
        opt = MUONS[muon]([w, m], fn, weight_decay=0.0, momentum=0.0, nesterov=False)
    except ValueError as e:
        if "2D" in str(e) and muon == "torch.optim.Muon":
            pytest.skip(f"this torch's Muon refuses > 2-D weights: {e}")
        raise
    w.grad, m.grad = grad.clone(), grad.reshape(64, 8).T.contiguous()
    opt.step()
    a_matrix = sd.MuonShape(fn).scale(_info((8, 64)))
    a_update = float(w.detach().norm() / m.detach().norm()) * a_matrix
    # the decay: a zero-gradient step of the wrapped optimizer with MuonShape
    v = torch.ones(conv, requires_grad=True)
    opt = MUONS[muon]([v], fn, weight_decay=0.01, decay_scaling=sd.MuonShape(fn))
    v.grad = torch.zeros(conv)
    opt.step()
    a_decay = (1 - float(v.detach().mean())) / 0.01
    assert a_update == pytest.approx(sd.MuonShape(fn).scale(_info(conv)), rel=1e-3)
    assert a_decay == pytest.approx(a_update, rel=1e-3)
    if fn == "original":
        assert a_update == pytest.approx(math.sqrt(8), rel=1e-3)  # not shape[:2]'s sqrt(32)


def test_vectors_are_still_refused_and_reference_shapes_of_any_rank_taken():
    with pytest.raises(ValueError, match=r"2 or more dims.*\(5,\)"):
        sd.MuonShape().scale(_info((5,)))
    assert sd.MuonShape(None, (4, 2, 3, 3)).reference_shape == (4, 2, 3, 3)
    with pytest.raises(ValueError, match=r"reference_shape.*two or more positive ints"):
        sd.MuonShape(None, (4, 0, 3))
