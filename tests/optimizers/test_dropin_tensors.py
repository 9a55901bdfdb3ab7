"""Drop-in for torch.optim, continued: complex parameters, sparse gradients and tensor
``betas``, each compared with the matching torch.optim class."""

import re

import pytest
import torch
from torch import nn

import scaled_decay as sd
from tests.helpers.dropin_pairs import PAIRS, assert_same_params, make_params
from tests.helpers.triton_interpret import interpret  # noqa: F401  (fixture)

BACKENDS = ["loop", "foreach", "torch_fused", "auto"]


# ---- complex parameters ------------------------------------------------------------------------
def _complex_run(make, steps=5):
    g = torch.Generator().manual_seed(0)
    params = [
        torch.randn(4, 3, dtype=torch.complex64, generator=g).requires_grad_(),
        torch.randn(5, generator=g).requires_grad_(),
        torch.randn(2, 2, dtype=torch.complex64, generator=g).t().requires_grad_(),
    ]
    opt = make(params)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=g)
        opt.step()
    return params, [{k: v.dtype for k, v in opt.state[p].items()} for p in params]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", PAIRS)
def test_complex_params_are_updated_as_torch_optim_does(name, backend):
    """As torch.optim: Adam updates the real view (its second moment holds re**2 and im**2
    apart; complex arithmetic, ``g * g``, was 5e-2 off after 5 steps), SGD computes in complex
    arithmetic (its real view rounds ``p - lr * d`` differently: 1 ulp off). loop and foreach
    match torch bit for bit; the fused backends (real views) within rounding. State keeps the
    param's complex dtype."""
    t_params, t_state = _complex_run(PAIRS[name][0])
    s_params, s_state = _complex_run(lambda ps: PAIRS[name][1](ps, backend=backend))
    assert s_state == t_state
    if backend in ("loop", "foreach"):
        for t, s in zip(t_params, s_params):
            assert torch.equal(t, s), (t - s).abs().max()
    assert_same_params(t_params, s_params)


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_complex_params_on_the_triton_backend(name):
    t_params, t_state = _complex_run(PAIRS[name][0], steps=2)
    s_params, s_state = _complex_run(lambda ps: PAIRS[name][1](ps, backend="triton"), steps=2)
    assert s_state == t_state
    assert_same_params(t_params, s_params)


def test_rules_count_a_complex_tensor_as_the_module_sees_it():
    """Fan-in and shape of the complex tensor (not of its real view, which has a trailing 2),
    and ParamCount's N in complex elements, as ``sum(p.numel())`` counts a model's size."""
    w = torch.randn(8, 4, dtype=torch.complex64, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    opt = sd.AdamW([w, b], weight_decay=0.1, decay_scaling=("fan_in", "param_count"))
    row_w, row_b = opt.decay_report()
    assert row_w.shape == (8, 4) and row_w.fan_in == 4
    assert row_w.scale == pytest.approx((1 / 4) * (1 / 35))
    assert row_b.scale == pytest.approx(1 / 35)


# ---- sparse gradients --------------------------------------------------------------------------
class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 4, sparse=True)
        self.out = nn.Linear(4, 2)

    def forward(self, idx):
        return self.out(self.emb(idx)).square().sum()


def _sparse_run(make, steps=4, scaler=None):
    model = _Model()
    opt = make(model.named_parameters())
    for k in range(steps):
        opt.zero_grad()
        idx = torch.tensor([[k, 2 * k + 1, 3], [7, k, k]])
        loss = model(idx)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    return [p.detach() for p in model.parameters()], opt


SGD_SETTINGS = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.5, dampening=0.3, maximize=True),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", SGD_SETTINGS)
def test_sgd_takes_sparse_gradients_as_torch_does(kw, backend):
    t_params, _ = _sparse_run(lambda ps: torch.optim.SGD(ps, lr=0.1, **kw))
    s_params, s_opt = _sparse_run(lambda ps: sd.SGD(ps, lr=0.1, backend=backend, **kw))
    # The embedding takes torch's own sparse ops on every backend, but its later grads go
    # through the dense layer: bit-equal where that layer runs torch's for-loop arithmetic
    # (loop, foreach); with a fused kernel for the dense layer, its rounding (which differs by
    # CPU: 2.9e-6 on one 2-core x86 VM) reaches the embedding, so fp32 tolerance there.
    if backend in ("loop", "foreach"):
        assert torch.equal(s_params[0], t_params[0])
    assert_same_params(t_params, s_params)
    if kw.get("momentum"):
        weight = next(iter(s_opt.state))
        assert s_opt.state[weight]["momentum_buffer"].is_sparse


def test_sgd_decoupled_decay_with_sparse_gradients_scales_the_whole_param():
    """Decoupled decay scales the whole param first (``p *= 1 - lr * lam``), then the sparse
    update applies: torch.optim.SGD has no decoupled decay, so the reference applies the
    factor by hand before each step."""
    lr, wd = 0.1, 0.05

    class Decayed(torch.optim.SGD):
        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.mul_(1 - lr * wd)
            return super().step(closure)

    t_params, _ = _sparse_run(lambda ps: Decayed(ps, lr=lr, momentum=0.9))
    s_params, _ = _sparse_run(lambda ps: sd.SGD(ps, lr=lr, momentum=0.9, weight_decay=wd))
    assert_same_params(t_params, s_params)


def test_sgd_l2_decay_refuses_sparse_gradients_as_torch_does():
    with pytest.raises(RuntimeError):
        _sparse_run(lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.1))
    with pytest.raises(RuntimeError, match=re.escape("emb.weight")):
        _sparse_run(lambda ps: sd.SGD(ps, lr=0.1, weight_decay=0.1, decay_mode="l2"))


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_refuses_sparse_gradients_as_torch_does(name):
    with pytest.raises(RuntimeError):
        _sparse_run(PAIRS[name][0])
    with pytest.raises(RuntimeError, match=re.escape("emb.weight")):
        _sparse_run(PAIRS[name][1])


def test_an_unnamed_sparse_parameter_is_named_by_its_position():
    groups = [
        {"params": [torch.randn(3, requires_grad=True)]},
        {"params": [torch.randn(3, requires_grad=True)]},
    ]
    opt = sd.Adam(groups)
    groups[1]["params"][0].grad = torch.randn(3).to_sparse()
    with pytest.raises(RuntimeError, match=r"param_groups\[1\]\['params'\]\[0\]"):
        opt.step()


def test_sparse_gradients_under_gradscaler_equal_the_unscaled_run():
    make = lambda ps: sd.SGD(ps, lr=0.1, momentum=0.9)  # noqa: E731
    plain, _ = _sparse_run(make)
    scaled, _ = _sparse_run(make, scaler=torch.amp.GradScaler("cpu", init_scale=2.0**10))
    for a, b in zip(plain, scaled):
        assert torch.equal(a, b)


# ---- tensor betas ------------------------------------------------------------------------------
def test_tensor_betas_are_read_at_every_step():
    """Tensor betas changed in place (as a schedule might) take effect at the next step:
    the same as float betas with the new value, and torch's for-loop Adam to fp32 rounding
    (it computes with the tensors in fp32)."""

    def run(make_betas, cls, change, **kw):
        params = make_params()
        betas = make_betas()
        opt = cls(params, lr=0.1, betas=betas, weight_decay=0.1, **kw)
        g = torch.Generator().manual_seed(1)
        for step in range(6):
            if step == 3:
                betas = change(opt, betas)
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        return params

    def set_tensors(opt, betas):
        betas[0].fill_(0.5)
        return betas

    def set_floats(opt, betas):
        opt.param_groups[0]["betas"] = (0.5, betas[1])
        return betas

    tensors = lambda: (torch.tensor(0.9), torch.tensor(0.99))  # noqa: E731
    floats = lambda: tuple(float(b) for b in tensors())  # noqa: E731  (fp32 values)
    got = run(tensors, sd.AdamW, set_tensors, backend="loop")
    for t, s in zip(run(floats, sd.AdamW, set_floats, backend="loop"), got):
        assert torch.equal(t, s)
    for t, s in zip(run(tensors, torch.optim.AdamW, set_tensors, foreach=False), got):
        torch.testing.assert_close(t, s, rtol=1e-6, atol=1e-6)
