"""Cautious weight decay (``cautious_decay=True``; Chen et al. 2025, arXiv 2510.12402).

x <- x - lr * (u + lam * 1[u * x >= 0] * x), u the update direction: against a plain
per-tensor reference written here, on every backend (loop, foreach, Triton under the
interpreter) and dtype (fp32, bf16), with fan-in scaling, GradScaler, low precision and
``with_scaled_decay``; torch's fused ops never run it; the report's column; bad input.
"""

import pytest
import torch

import scaled_decay as sd
from tests.helpers.problems import QuadraticLoss, clone_params, make_params, run_amp_steps
from tests.helpers.triton_interpret import interpret, use_backend  # noqa: F401  (interpret: a fixture)

LR, WD, STEPS = 0.02, 0.5, 3
SHAPES = [(6, 5), (5,), (3, 4)]


@pytest.fixture(params=["loop", "foreach", "triton"])
def backend(request):
    return use_backend(request.param, request)


def _grads(seed, params, steps=STEPS):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=g).to(p.dtype) for p in params] for _ in range(steps)]


def _run(opt, params, grads):
    for step in grads:
        for p, g in zip(params, step):
            p.grad = g.clone()
        opt.step()


# ---- the plain reference: one tensor at a time, in fp32 -------------------------------------
def _ref_adamw(x, grads, lam, betas=(0.9, 0.999), eps=1e-8, cautious=True):
    x, m, v = x.float().clone(), torch.zeros(x.shape), torch.zeros(x.shape)
    b1, b2 = betas
    masks = []
    for t, g in enumerate(grads, 1):
        g = g.float()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        mask = (u * x >= 0).float() if cautious else torch.ones(x.shape)
        x = x - LR * (u + lam * mask * x)
        masks.append(mask)
    return x, masks


def _ref_sgd(x, grads, lam, momentum=0.9, cautious=True):
    x, buf = x.float().clone(), None
    masks = []
    for g in grads:
        g = g.float()
        buf = g.clone() if buf is None else momentum * buf + g
        d = buf if momentum else g
        mask = (d * x >= 0).float() if cautious else torch.ones(x.shape)
        x = x - LR * (d + lam * mask * x)
        masks.append(mask)
    return x, masks


MAKERS = {
    "adamw": (lambda ps, **kw: sd.AdamW(ps, lr=LR, weight_decay=WD, **kw), _ref_adamw),
    "sgd_momentum": (
        lambda ps, **kw: sd.SGD(ps, lr=LR, momentum=0.9, weight_decay=WD, **kw),
        _ref_sgd,
    ),
}


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(MAKERS))
def test_matches_the_reference_with_fan_in_scaling(name, backend, dtype):
    make, ref = MAKERS[name]
    params = [p.detach().to(dtype).requires_grad_() for p in make_params(3, SHAPES)]
    before = [p.detach().clone() for p in params]
    opt = make(params, decay_scaling="fan_in", cautious_decay=True, backend=backend)
    grads = _grads(4, params)
    _run(opt, params, grads)
    report = opt.decay_report()
    assert len({r.lam for r in report}) > 1  # fan-in scaling: lam differs per tensor
    for i, (p, x0, row) in enumerate(zip(params, before, report)):
        expected, masks = ref(x0, [g[i] for g in grads], row.lam)
        torch.testing.assert_close(p.detach().float(), expected, **_tol(dtype))
        assert row.decayed == pytest.approx(
            float(masks[-1].mean()), abs=0.1 if dtype != torch.float32 else 1e-6
        )


@pytest.mark.parametrize("name", list(MAKERS))
def test_low_precision_kahan(name, backend):
    """The low-precision path (``wide_step`` / the kernels' Kahan store) masks too."""
    make, ref = MAKERS[name]
    params = [p.detach().to(torch.bfloat16).requires_grad_() for p in make_params(5, SHAPES)]
    before = [p.detach().clone() for p in params]
    opt = make(params, cautious_decay=True, backend=backend, low_precision="kahan")
    grads = _grads(6, params)
    _run(opt, params, grads)
    for i, (p, x0) in enumerate(zip(params, before)):
        comp = opt.state[p]["kahan_comp"] if "kahan_comp" in opt.state[p] else 0.0
        expected, _ = ref(x0, [g[i] for g in grads], WD)
        torch.testing.assert_close(p.detach().float() + comp, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["adamw", "sgd_plain"])
def test_coordinates_whose_sign_disagrees_keep_their_value(name, backend):
    """Fails without the mask: x = +1 with an update pushing it up (u < 0) does not decay,
    x = +1 with an update pushing it down decays by exactly the plain decay's factor."""
    p = torch.tensor([1.0, 1.0, -2.0, -2.0]).requires_grad_()
    g = torch.tensor([-1.0, 1.0, -1.0, 1.0])  # u = sign(g) at the first step (Adam, SGD)
    make = (
        (lambda ps, **kw: sd.AdamW(ps, lr=LR, weight_decay=WD, **kw))
        if name == "adamw"
        else (lambda ps, **kw: sd.SGD(ps, lr=LR, weight_decay=WD, **kw))
    )
    out = {}
    for cautious in (False, True):
        q = p.detach().clone().requires_grad_()
        opt = make([q], cautious_decay=cautious, backend=backend)
        q.grad = g.clone()
        opt.step()
        out[cautious] = q.detach()
    plain, caut = out[False], out[True]
    keep = 1 - LR * WD
    step = plain - p.detach() * keep  # the update alone (exact here: small integers)
    # disagreeing signs (x > 0, u < 0 and x < 0, u > 0): no decay at all
    for i in (0, 3):
        assert caut[i] == p[i] + step[i] and caut[i] != plain[i]
    for i in (1, 2):  # agreeing: the plain decay, bit for bit
        assert caut[i] == plain[i]
    assert opt.decay_report()[0].decayed == 0.5


def test_all_agreeing_is_the_plain_decay_bit_for_bit(backend):
    """Where every coordinate decays, cautious and plain steps give the same bits."""
    params = clone_params(make_params(8, SHAPES))
    grads = [[p.detach().sign() * (0.5 + torch.rand(p.shape)) for p in params]]
    out = []
    for cautious in (False, True):
        ps = clone_params(params)
        opt = sd.SGD(
            ps,
            lr=LR,
            weight_decay=WD,
            decay_scaling="fan_in",
            backend=backend,
            cautious_decay=cautious,
        )
        _run(opt, ps, grads)
        out.append(ps)
    for a, b in zip(*out):
        assert torch.equal(a, b)
    assert all(r.decayed == 1.0 for r in opt.decay_report())


@pytest.mark.parametrize("name", list(MAKERS))
def test_gradscaler_run_equals_unscaled_run_and_overflow_changes_nothing(name, backend):
    make, _ = MAKERS[name]

    def run(scaler, steps=3, overflow_at=None):
        ps = clone_params(make_params(7, SHAPES))
        opt = make(ps, decay_scaling="fan_in", cautious_decay=True, backend=backend)
        snaps = run_amp_steps(opt, ps, QuadraticLoss(7, ps), scaler, steps, overflow_at)
        return ps, snaps

    ours, _ = run(torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2))
    ref, _ = run(None)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b), (a - b).abs().max()
    _, snaps = run(torch.amp.GradScaler("cpu", init_scale=2.0**10), steps=2, overflow_at=1)
    (p_before, _), (p_after, _) = snaps
    for a, b in zip(p_before, p_after):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(MAKERS))
def test_torch_fused_never_runs_cautious_tensors(name, monkeypatch):
    make, _ = MAKERS[name]
    params = clone_params(make_params(9, SHAPES, non_contiguous=False))
    opt = make(params, backend="torch_fused")
    _run(opt, params, _grads(1, params, 1))
    fused_before = [b.backend for plan in opt._plan.step_plans[0].values() for b in plan.batches]
    for op in ("_fused_adamw_", "_fused_adam_", "_fused_sgd_"):

        def refuse(*a, **k):
            raise AssertionError("torch's fused op ran a cautious step")

        monkeypatch.setattr(torch, op, refuse)
    opt.param_groups[0]["cautious_decay"] = True  # mid-run: a new plan (plan_key)
    _run(opt, params, _grads(2, params, 2))
    _, plan = list(opt._plan.step_plans[0].items())[-1]
    assert "torch_fused" in fused_before  # (else this test would prove nothing)
    assert {b.backend for b in plan.batches} == {"foreach"}
    assert opt.decay_report()[0].decayed is not None


def test_report_column():
    params = clone_params(make_params(2, SHAPES))
    opt = sd.AdamW(params, lr=LR, weight_decay=WD)
    _run(opt, params, _grads(3, params, 1))
    assert "decayed" not in str(opt.decay_report())
    assert all(r.decayed is None for r in opt.decay_report())
    opt = sd.AdamW(params, lr=LR, weight_decay=WD, cautious_decay=True)
    assert all(r.decayed is None for r in opt.decay_report())  # no step yet
    _run(opt, params, _grads(3, params, 1))
    report = opt.decay_report()
    assert "decayed" in str(report).splitlines()[0]
    assert all(0.0 < r.decayed < 1.0 for r in report)
    assert report.to_dicts()[0]["decayed"] == report[0].decayed


@pytest.mark.parametrize("cls", [sd.SGD, sd.Adam, sd.AdamW, sd.with_scaled_decay(torch.optim.Adam)])
def test_bad_input(cls):
    p = torch.zeros(3, requires_grad=True)
    for bad in (1, "yes", None):
        with pytest.raises(ValueError, match="cautious_decay"):
            cls([p], lr=0.1, cautious_decay=bad)
    with pytest.raises(ValueError, match=r"cautious_decay.*l2"):
        cls([p], lr=0.1, cautious_decay=True, decay_mode="l2")
    opt = cls([p], lr=0.1, weight_decay=0.1, decay_mode="decoupled")
    opt.param_groups[0]["cautious_decay"] = "on"  # a mid-run edit: refused at the step
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match="cautious_decay"):
        opt.step()


@pytest.mark.parametrize("wrapped", [torch.optim.Adam, torch.optim.RAdam, torch.optim.SGD])
def test_with_scaled_decay(wrapped):
    """u = (p_before - p_after) / lr of the wrapped step; p = p_after - c * mask * p_before."""
    params = clone_params(make_params(11, SHAPES))
    ref_params = clone_params(params)
    opt = sd.with_scaled_decay(wrapped)(
        params, lr=LR, weight_decay=WD, decay_scaling="fan_in", cautious_decay=True
    )
    plain = wrapped(ref_params, lr=LR)
    lams = [r.lam for r in opt.decay_report()]
    for step in _grads(12, params):
        before = [p.detach().clone() for p in ref_params]
        for p, q, g in zip(params, ref_params, step):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        plain.step()
        with torch.no_grad():
            masks = []
            for q, x, lam in zip(ref_params, before, lams):
                mask = ((x - q) * x >= 0).float()
                q.sub_(LR * lam * mask * x)
                masks.append(float(mask.mean()))
    for p, q in zip(params, ref_params):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    assert [r.decayed for r in opt.decay_report()] == pytest.approx(masks)


def test_capturable_tensor_math_matches():
    """capturable=True (lr, step counts and the decay factor stay tensors) masks alike."""
    out = []
    for cap in (False, True):
        params = clone_params(make_params(13, SHAPES))
        opt = sd.AdamW(
            params, lr=LR, weight_decay=WD, cautious_decay=True, capturable=cap, backend="foreach"
        )
        _run(opt, params, _grads(14, params))
        out.append((params, [r.decayed for r in opt.decay_report()]))
    for a, b in zip(out[0][0], out[1][0]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert out[0][1] == out[1][1]
