"""The fused kernels against the reference math, launcher for launcher (CPU, interpreter).

``scaled_decay.kernels.adam_triton``/``sgd_triton`` take the reference's arguments; each test
runs one step of both on the same drawn tensors and compares with the per-dtype tolerance
table in ``triton_interpret`` (fp32 within 4 ulp of foreach, almost always 0 or 1; bf16/fp16
within 1 ulp of the fp32 math rounded once, and nearly always bit-equal to it).
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scaled_decay as sd
from scaled_decay import kernels as K
from scaled_decay.updates.adam import adam_math
from scaled_decay.updates.sgd import sgd_math
from tests.helpers.triton_interpret import assert_close_ulps, interpret  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("interpret")

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SIZES = [1, 7, 1023, 1025, 0, 4096, 8193]  # odd sizes, a block edge, empty
seeds = st.integers(0, 2**31 - 1)
size_lists = st.lists(st.sampled_from(SIZES), min_size=1, max_size=4)
decays = st.sampled_from(["none", "l2", "mult"])


def _tensors(seed, sizes, dtype, scale=1.0, positive=False):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        t = torch.randn(n, generator=g) * scale
        out.append((t.abs() if positive else t).to(dtype))
    return out


def _per_tensor(kind, seed, n):
    g = torch.Generator().manual_seed(seed)
    values = (torch.rand(n, generator=g, dtype=torch.float64) * 0.05).tolist()
    return (values if kind == "l2" else None), (values if kind == "mult" else None)


def _f32(ts):
    return [t.float().clone() for t in ts]


@given(
    seed=seeds,
    sizes=size_lists,
    dtype=st.sampled_from(DTYPES),
    kind=decays,
    amsgrad=st.booleans(),
    maximize=st.booleans(),
    t=st.integers(0, 3000),
    lr=st.floats(1e-4, 0.1),
    beta1=st.sampled_from([0.0, 0.5, 0.9]),
    beta2=st.sampled_from([0.9, 0.999]),
    eps=st.sampled_from([1e-8, 1e-3]),
)
def test_adam_kernel_matches_reference(
    seed, sizes, dtype, kind, amsgrad, maximize, t, lr, beta1, beta2, eps
):
    p = _tensors(seed, sizes, dtype)
    g = _tensors(seed + 1, sizes, dtype)
    m = _tensors(seed + 2, sizes, dtype, 0.1)
    v = _tensors(seed + 3, sizes, dtype, 0.01, positive=True)
    vmax = [x * 1.5 for x in v] if amsgrad else []
    steps = [torch.tensor(float(t)) for _ in sizes]
    l2, c = _per_tensor(kind, seed, len(sizes))
    hp = dict(
        l2_lams=l2,
        decay=c,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        amsgrad=amsgrad,
        maximize=maximize,
    )
    before = [_f32(x) for x in (p, m, v, vmax)]
    ref = [_f32(x) for x in (p, g, m, v, vmax)] + [[s.clone() for s in steps]]
    adam_math(*ref, **hp)
    K.adam_triton(p, g, m, v, vmax, steps, **hp)
    for name, out, r, b in zip(
        ("p", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        (p, m, v, vmax),
        (ref[0], ref[2], ref[3], ref[4]),
        before,
    ):
        for o, rr, bb in zip(out, r, b):
            assert_close_ulps(o, rr, bb, name)
    assert [s.item() for s in steps] == [float(t + 1)] * len(sizes)


momenta = st.one_of(
    st.just((0.0, 0.0, False)),
    st.tuples(st.sampled_from([0.5, 0.9]), st.sampled_from([0.0, 0.3]), st.just(False)),
    st.tuples(st.sampled_from([0.5, 0.9]), st.just(0.0), st.just(True)),
)


@given(
    seed=seeds,
    sizes=size_lists,
    dtype=st.sampled_from(DTYPES),
    kind=decays,
    mom=momenta,
    first=st.booleans(),
    maximize=st.booleans(),
    lr=st.floats(1e-4, 0.5),
)
def test_sgd_kernel_matches_reference(seed, sizes, dtype, kind, mom, first, maximize, lr):
    momentum, dampening, nesterov = mom
    p = _tensors(seed, sizes, dtype)
    g = _tensors(seed + 1, sizes, dtype)
    bufs = [None] * len(sizes) if first or momentum == 0 else _tensors(seed + 2, sizes, dtype)
    l2, c = _per_tensor(kind, seed, len(sizes))
    hp = dict(
        l2_lams=l2,
        decay=c,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        maximize=maximize,
    )
    p_before = _f32(p)
    ref_p, ref_b = _f32(p), [None if b is None else b.float().clone() for b in bufs]
    sgd_math(ref_p, _f32(g), ref_b, **hp)
    bufs_before = [torch.zeros(n) if b is None else b.float().clone() for n, b in zip(sizes, bufs)]
    K.sgd_triton(p, g, bufs, **hp)
    for o, r, b in zip(p, ref_p, p_before):
        assert_close_ulps(o, r, b, "p")
    if momentum != 0:
        for o, r, b in zip(bufs, ref_b, bufs_before):
            assert o is not None and o.dtype == dtype
            assert_close_ulps(o, r, b, "momentum_buffer")


@pytest.mark.parametrize("family", ["adam", "sgd"])
def test_large_and_many_tensors_in_one_launch(family):
    """65537 elements (17 programs, ragged end) next to 120 small tensors of mixed sizes."""
    sizes = [65537] + [(i * 37) % 300 for i in range(120)]  # includes 0-element tensors
    p, g = _tensors(5, sizes, torch.float32), _tensors(6, sizes, torch.float32)
    ref_p = _f32(p)
    if family == "adam":
        m, v = _tensors(7, sizes, torch.float32, 0.1), _tensors(8, sizes, torch.float32, 0.01, True)
        steps = [torch.tensor(4.0) for _ in sizes]
        hp = dict(
            l2_lams=None,
            decay=[1e-3] * len(sizes),
            lr=1e-2,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
            amsgrad=False,
            maximize=False,
        )
        adam_math(ref_p, _f32(g), _f32(m), _f32(v), [], [s.clone() for s in steps], **hp)
        K.adam_triton(p, g, m, v, [], steps, **hp)
    else:
        bufs = _tensors(7, sizes, torch.float32)
        hp = dict(
            l2_lams=[1e-2] * len(sizes),
            decay=None,
            lr=0.1,
            momentum=0.9,
            dampening=0.0,
            nesterov=True,
            maximize=False,
        )
        sgd_math(ref_p, _f32(g), _f32(bufs), **hp)
        K.sgd_triton(p, g, bufs, **hp)
    for o, r, b in zip(p, ref_p, _tensors(5, sizes, torch.float32)):
        assert_close_ulps(o, r, b, "p")


@pytest.mark.parametrize("dtype", DTYPES)
def test_found_inf_skips_and_grad_scale_unscales(dtype):
    """found_inf set: nothing moves, steps included. grad_scale: the step equals the step on
    the unscaled grads, and the grads are left unscaled (as GradScaler.unscale_ leaves them)."""
    sizes = [1025, 7]
    p, g = _tensors(1, sizes, dtype), _tensors(2, sizes, dtype)
    m, v = _tensors(3, sizes, dtype, 0.1), _tensors(4, sizes, dtype, 0.01, True)
    steps = [torch.tensor(2.0) for _ in sizes]
    state = [x.clone() for x in p + m + v]
    hp = dict(
        l2_lams=None,
        decay=[0.01, 0.02],
        lr=1e-2,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        amsgrad=False,
        maximize=False,
    )
    K.adam_triton(
        p, g, m, v, [], steps, grad_scale=torch.tensor(1024.0), found_inf=torch.tensor(1.0), **hp
    )
    assert all(torch.equal(a, b) for a, b in zip(p + m + v, state))
    assert [s.item() for s in steps] == [2.0, 2.0]
    scaled = [x * 1024 for x in g]  # exact: a power of two
    ref = [[x.clone() for x in lst] for lst in (p, g, m, v)] + [[s.clone() for s in steps]]
    K.adam_triton(*ref[:4], [], ref[4], **hp)
    K.adam_triton(
        p,
        scaled,
        m,
        v,
        [],
        steps,
        grad_scale=torch.tensor(1024.0),
        found_inf=torch.tensor(0.0),
        **hp,
    )
    for a, b in zip(p + m + v + scaled, ref[0] + ref[2] + ref[3] + ref[1]):
        assert torch.equal(a, b)
    bufs = [None, None]  # SGD: a first step under found_inf creates no buffer
    K.sgd_triton(
        p,
        g,
        bufs,
        l2_lams=None,
        decay=None,
        lr=0.1,
        momentum=0.9,
        dampening=0.0,
        nesterov=False,
        maximize=False,
        found_inf=torch.tensor(1.0),
    )
    assert bufs == [None, None] and torch.equal(p[0], ref[0][0])


def test_non_dense_tensors_go_to_reference_math():
    """A strided slice cannot be addressed flat: the step plan sends it to the foreach math,
    the rest to the kernel, in one step; a transposed (dense) tensor takes the kernel."""
    base = torch.randn(40, 30)
    sliced, transposed = base[:, ::3], torch.randn(30, 20).t()
    start = [sliced, transposed, torch.randn(50)]
    runs = {}
    for backend in ("loop", "triton"):
        p = [x.clone() if backend == "loop" else x for x in start]
        p = [x.requires_grad_() for x in p]
        opt = sd.SGD(p, lr=0.1, weight_decay=1e-2, backend=backend)
        for k in range(2):
            for x in p:
                g = torch.randn(x.shape, generator=torch.Generator().manual_seed(k))
                x.grad = torch.empty_like(x).copy_(g)  # the param's strides, as autograd makes
            opt.step()
        runs[backend] = p
    (plan,) = opt._plan.step_plans[0].values()
    routes = {b.backend: (list(range(3)) if b.idx is None else b.idx) for b in plan.batches}
    assert routes == {"foreach": [0], "triton": [1, 2]}
    for a, b in zip(runs["triton"], runs["loop"]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert base[:, 1].ne(0).all()  # untouched columns of the sliced base stay as they were


def test_tables_are_built_once_for_steady_steps():
    from scaled_decay.kernels import tables

    p = _tensors(1, [100, 3000], torch.float32)
    g = _tensors(2, [100, 3000], torch.float32)
    hp = dict(
        l2_lams=None,
        decay=[1e-3, 2e-3],
        lr=0.1,
        momentum=0.9,
        dampening=0.0,
        nesterov=False,
        maximize=False,
    )
    bufs = [None, None]
    K.sgd_triton(p, g, bufs, **hp)  # first step: first-step flags
    K.sgd_triton(p, g, bufs, **hp)  # buffers exist now: new flags, same addresses
    interp_tables = __import__("sys").modules["scaled_decay._kernels_interpreted"].tables
    before = interp_tables.build_counts()
    for _ in range(3):
        K.sgd_triton(p, g, bufs, **hp)
    assert interp_tables.build_counts() == before
    g2 = [x.clone() for x in g]  # new grad storage: the address table is rebuilt once
    K.sgd_triton(p, g2, bufs, **hp)
    after = interp_tables.build_counts()
    assert after["layout"] == before["layout"] + 1 and after["values"] == before["values"]
    assert tables is not interp_tables  # the compiled package keeps its own caches
