"""low_precision="kahan"/"stochastic" and state_dtype (scaled_decay.updates.low_precision).

Scored against the exact arithmetic (fp64), never backend against backend: foreach rounds
per op, the Triton kernel computes in fp32 (see the issue's notes)."""

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import scaled_decay as sd
from scaled_decay.updates import low_precision as LP
from tests.helpers.triton_interpret import interpret, use_backend  # noqa: F401  (interpret: a fixture)

LR, WD = 1e-3, 0.1
BACKENDS = ["loop", "foreach", "triton"]


def _make(cls_name, params, backend, mode, **kw):
    if cls_name == "adamw":
        return sd.AdamW(params, lr=LR, weight_decay=WD, backend=backend, low_precision=mode, **kw)
    return sd.SGD(
        params, lr=LR, momentum=0.9, weight_decay=WD, backend=backend, low_precision=mode, **kw
    )


def _zero_grad_steps(opt, p, steps):
    for _ in range(steps):
        p.grad = torch.zeros_like(p)
        opt.step()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["kahan", "stochastic"])
@pytest.mark.parametrize("cls_name", ["adamw", "sgd"])
def test_bf16_decay_is_kept_over_1000_steps(cls_name, mode, backend, request):
    """Zero gradients, bf16: the norm shrinks by (1 - lr*wd)**1000 = 0.9048 within 1%
    (rounding to nearest keeps it at 1.0: the next test). 1,024 weights: one program of
    the kernel (the interpreter's time is per program and launch)."""
    use_backend(backend, request)
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(32, 32).bfloat16())
    n0 = p.detach().double().norm()
    opt = _make(cls_name, [p], backend, mode)
    _zero_grad_steps(opt, p, 1000)
    ratio = float(p.detach().double().norm() / n0)
    assert ratio == pytest.approx((1 - LR * WD) ** 1000, rel=0.01)
    assert opt.decay_report()[0].decay_kept == mode


@pytest.mark.parametrize("backend", [*BACKENDS, "torch_fused"])
def test_rounding_to_nearest_loses_the_decay_and_warns_once(backend, request):
    use_backend(backend, request)
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 64).bfloat16())
    before = p.detach().clone()
    opt = _make("adamw", [p], backend, None)
    with pytest.warns(UserWarning, match="low_precision='kahan' or 'stochastic'") as seen:
        _zero_grad_steps(opt, p, 50)
    assert len([w for w in seen if "low_precision" in str(w.message)]) == 1
    assert torch.equal(p.detach(), before)  # torch.optim's numbers: the decay is a no-op
    assert opt.decay_report()[0].decay_kept == "LOST"


def test_no_warning_where_the_decay_survives_or_is_kept():
    p = torch.nn.Parameter(torch.randn(8, 8).bfloat16())
    for opt in (
        sd.AdamW([p], lr=0.1, weight_decay=0.1),  # shrink 1e-2 > 2**-9
        sd.AdamW([p], lr=LR, weight_decay=WD, low_precision="kahan"),
        sd.AdamW([torch.nn.Parameter(torch.randn(8, 8))], lr=LR, weight_decay=WD),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for q in opt.param_groups[0]["params"]:
                q.grad = torch.zeros_like(q)
            opt.step()


@pytest.mark.parametrize("backend", ["foreach", "triton"])
def test_fp16_kahan_and_stochastic(backend, request):
    use_backend(backend, request)
    for mode in ("kahan", "stochastic"):
        torch.manual_seed(1)
        p = torch.nn.Parameter(torch.randn(32, 32).half())
        n0 = p.detach().double().norm()
        opt = sd.AdamW([p], lr=1e-4, weight_decay=0.1, backend=backend, low_precision=mode)
        _zero_grad_steps(opt, p, 400)  # shrink 1e-5 < half an fp16 ulp (2**-12)
        assert float(p.detach().double().norm() / n0) == pytest.approx((1 - 1e-5) ** 400, rel=2e-3)


# ---- the properties -------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    x=st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3),
    dtype=st.sampled_from([torch.bfloat16, torch.float16]),
    count=st.integers(0, 2**40),
    on_device=st.booleans(),
)
def test_stochastic_rounding_is_unbiased(x, dtype, count, on_device):
    """E[round(x)] = x: the mean over 20,000 draws is within 5 standard errors of x, and
    every draw is one of x's two neighbours in the dtype (bf16 by its bits, fp16 by its
    neighbours; random bits from the generator or, capturable, the counter hash)."""
    n = 20000
    xs = torch.full((n,), x, dtype=torch.float32)
    rounded = torch.empty(n, dtype=dtype)
    LP.stochastic_round_([rounded], [xs], torch.tensor(count), on_device=on_device)
    out = rounded.double()
    x32 = float(xs[0])
    lo, hi = float(out.min()), float(out.max())
    assert lo <= x32 <= hi and len(set(out.tolist())) <= 2
    spread = hi - lo
    assert abs(float(out.mean()) - x32) <= 5 * spread * 0.5 / n**0.5 + 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=6, deadline=None)
@given(
    c=st.floats(1e-6, 1e-3),
    dtype=st.sampled_from([torch.bfloat16, torch.float16]),
    value=st.floats(0.1, 10.0),
)
def test_stochastic_decay_step_is_unbiased_on_every_backend(backend, c, dtype, value, request):
    """One decay step of 4,096 equal weights: their mean is value * (1 - c) (the fp64 ideal)
    within 5 standard errors of the rounding, for any shrink, dtype and value."""
    use_backend(backend, request)
    p = torch.nn.Parameter(torch.full((64, 64), value).to(dtype))
    v = float(p[0, 0])
    opt = sd.SGD([p], lr=1.0, weight_decay=c, backend=backend, low_precision="stochastic")
    p.grad = torch.zeros_like(p)
    opt.step()
    out = p.detach().double()
    ulp = float(torch.finfo(dtype).eps) * 2 * abs(v)
    assert abs(float(out.mean()) - v * (1 - c)) <= 5 * ulp * 0.5 / 64 + 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=5, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    c=st.floats(0.0, 1e-3),
    lr=st.floats(1e-4, 1e-2),
    dtype=st.sampled_from([torch.bfloat16, torch.float16]),
)
def test_kahan_sum_is_the_fp64_sum_within_one_ulp(backend, seed, c, lr, dtype, request):
    """SGD with Kahan compensation: p + comp after 200 steps of ``x = x(1 - c) - lr*g`` is
    the same recurrence in fp64 within one ulp of p's dtype."""
    use_backend(backend, request)
    torch.manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(16, 16).to(dtype))
    x = p.detach().double()
    opt = sd.SGD([p], lr=lr, weight_decay=c / lr, backend=backend, low_precision="kahan")
    for _ in range(200):
        g = (torch.randn(16, 16) * 0.01).to(dtype)
        x = x * (1 - c) - lr * g.double()
        p.grad = g
        opt.step()
    total = p.detach().double() + opt.state[p][LP.COMP].double()
    ulp = torch.finfo(dtype).eps * x.abs().clamp_min(torch.finfo(dtype).tiny)
    assert bool(((total - x).abs() <= ulp).all())


# ---- state: dtypes, checkpoints, GradScaler -------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["kahan", "stochastic"])
def test_resume_is_bit_identical(mode, backend, request):
    use_backend(backend, request)
    torch.manual_seed(2)
    grads = [torch.randn(8, 24).bfloat16() for _ in range(8)]

    def fresh(values):
        p = torch.nn.Parameter(values.clone())
        return p, sd.AdamW(
            [p],
            lr=1e-2,
            weight_decay=0.1,
            backend=backend,
            low_precision=mode,
            state_dtype=torch.float32,
        )

    p, opt = fresh(torch.randn(8, 24).bfloat16())
    for g in grads[:4]:
        p.grad = g.clone()
        opt.step()
    saved, middle = copy.deepcopy(opt.state_dict()), p.detach().clone()
    for g in grads[4:]:
        p.grad = g.clone()
        opt.step()
    q, opt2 = fresh(middle)
    opt2.load_state_dict(saved)
    assert {k: v.dtype for k, v in opt2.state[q].items()} == {
        k: v.dtype for k, v in opt.state[p].items()
    }
    for g in grads[4:]:
        q.grad = g.clone()
        opt2.step()
    assert torch.equal(p, q)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dtype_stores_the_moments(backend, request):
    use_backend(backend, request)
    for pdtype, sdtype in ((torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)):
        p = torch.nn.Parameter(torch.randn(8, 8).to(pdtype))
        opt = sd.AdamW([p], lr=1e-2, backend=backend, state_dtype=sdtype)
        b = torch.nn.Parameter(torch.randn(8, 8).to(pdtype))
        sgd = sd.SGD([b], lr=1e-2, momentum=0.9, backend=backend, state_dtype=sdtype)
        for _ in range(2):
            p.grad, b.grad = torch.randn(8, 8).to(pdtype), torch.randn(8, 8).to(pdtype)
            opt.step()
            sgd.step()
        assert opt.state[p]["exp_avg"].dtype == sdtype == opt.state[p]["exp_avg_sq"].dtype
        assert sgd.state[b]["momentum_buffer"].dtype == sdtype
        assert p.dtype == pdtype and b.dtype == pdtype


def test_fp32_moments_follow_the_fp64_ideal_closer():
    """bf16 weights: fp32 moments (state_dtype) track the fp64 run better than bf16 ones."""
    torch.manual_seed(3)
    w0, grads = torch.randn(64, 64), [torch.randn(64, 64) * 0.1 for _ in range(100)]
    ref = torch.nn.Parameter(w0.double())
    ref_opt = sd.AdamW([ref], lr=1e-3, weight_decay=0.1)
    errs = {}
    for sdtype in (None, torch.float32):
        p = torch.nn.Parameter(w0.bfloat16())
        opt = sd.AdamW([p], lr=1e-3, weight_decay=0.1, low_precision="kahan", state_dtype=sdtype)
        for g in grads:
            p.grad = g.bfloat16()
            opt.step()
        errs[sdtype] = p.detach().double() + opt.state[p][LP.COMP].double()
    for g in grads:
        ref.grad = g.bfloat16().double()
        ref_opt.step()
    dist = {k: float((v - ref.detach()).norm()) for k, v in errs.items()}
    assert dist[torch.float32] < dist[None]


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_scaler_skip_leaves_weights_and_compensation(backend, request):
    use_backend(backend, request)
    for mode in ("kahan", "stochastic"):
        p = torch.nn.Parameter(torch.randn(16, 16).bfloat16())
        opt = sd.AdamW([p], lr=1e-2, weight_decay=0.1, backend=backend, low_precision=mode)
        p.grad = torch.randn(16, 16).bfloat16()
        opt.step()
        before = {k: v.clone() for k, v in opt.state[p].items()}
        weights = p.detach().clone()
        opt.grad_scale, opt.found_inf = torch.tensor(4.0), torch.ones(())
        p.grad = torch.full((16, 16), float("inf")).bfloat16()
        opt.step()
        assert torch.equal(p.detach(), weights)
        for key in ("exp_avg", "exp_avg_sq", LP.COMP):
            if key in before:
                assert torch.equal(opt.state[p][key], before[key])


def test_torch_compile_stochastic_step():
    torch._dynamo.reset()
    p = torch.nn.Parameter(torch.randn(16, 16).bfloat16())
    opt = sd.AdamW([p], lr=1e-3, weight_decay=0.1, low_precision="stochastic")
    step = torch.compile(opt.step)
    n0 = p.detach().double().norm()
    for _ in range(30):
        p.grad = torch.zeros_like(p)
        step()
    assert float(p.detach().double().norm() / n0) == pytest.approx((1 - 1e-4) ** 30, rel=3e-3)
    assert int(opt.state[p][LP.COUNT]) == 30


# ---- any optimizer --------------------------------------------------------------------------
@pytest.mark.parametrize("inner", [torch.optim.Adam, torch.optim.RAdam, torch.optim.SGD])
@pytest.mark.parametrize("mode", ["kahan", "stochastic"])
def test_with_scaled_decay_keeps_the_decay(inner, mode):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 64).bfloat16())
    n0 = p.detach().double().norm()
    opt = sd.with_scaled_decay(inner)([p], lr=LR, weight_decay=WD, low_precision=mode)
    _zero_grad_steps(opt, p, 1000)
    assert float(p.detach().double().norm() / n0) == pytest.approx((1 - LR * WD) ** 1000, rel=0.01)
    assert p.dtype == torch.bfloat16 and p.grad.dtype == torch.bfloat16


def test_with_scaled_decay_resume_is_bit_identical():
    cls = sd.with_scaled_decay(torch.optim.Adam)
    torch.manual_seed(4)
    grads = [torch.randn(8, 8).bfloat16() for _ in range(6)]
    p = torch.nn.Parameter(torch.randn(8, 8).bfloat16())
    opt = cls([p], lr=1e-2, weight_decay=0.1, low_precision="stochastic")
    for g in grads[:3]:
        p.grad = g
        opt.step()
    saved, middle = copy.deepcopy(opt.state_dict()), p.detach().clone()
    for g in grads[3:]:
        p.grad = g
        opt.step()
    q = torch.nn.Parameter(middle)
    opt2 = cls([q], lr=1e-2, weight_decay=0.1, low_precision="stochastic")
    opt2.load_state_dict(saved)
    for g in grads[3:]:
        q.grad = g
        opt2.step()
    assert torch.equal(p, q)


# ---- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda ps: sd.AdamW(ps, low_precision="kahan32"),
        lambda ps: sd.SGD(ps, low_precision=True),
        lambda ps: sd.AdamW(ps, state_dtype=torch.int32),
        lambda ps: sd.Adam(ps, state_dtype="float32"),
        lambda ps: sd.with_scaled_decay(torch.optim.Adam)(ps, low_precision="fast"),
        lambda ps: sd.with_scaled_decay(torch.optim.Adam)(ps, state_dtype=torch.float32),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(make):
    with pytest.raises((ValueError, TypeError), match=r"low_precision|state_dtype"):
        make([torch.nn.Parameter(torch.randn(2, 2))])
