"""sd.SGD/Adam/AdamW with backend="triton" (CPU, interpreter) against backend="foreach".

Every decay mode and scaling rule, LR schedules, grads that are None, transposed and sliced
params, 0-element and 100+ tensors in one group; and the dispatch rules: "triton" on CPU
without the interpreter raises, "auto" never picks Triton on CPU.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scaled_decay as sd
from scaled_decay import backends as B
from tests.helpers.problems import (
    DECAY_MODES,
    SCALINGS,
    QuadraticLoss,
    clone_params,
    make_params,
    run_steps,
    seeds,
    shape_lists,
)
from tests.helpers.triton_interpret import interpret  # noqa: F401  (fixture)

STEPS = 6


def _run(make_opt, params, seed, backend, *, sched=False, skip=None):
    ps = clone_params(params)
    opt = make_opt(ps, backend)
    s = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5) if sched else None
    run_steps(opt, ps, QuadraticLoss(seed, ps), STEPS, scheduler=s, skip_grad=skip)
    return ps, opt


def _same(a_params, a_opt, b_params, b_opt):
    for a, b in zip(a_params, b_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(a_params, b_params):
        for key, value in a_opt.state[a].items():
            torch.testing.assert_close(value, b_opt.state[b][key], rtol=1e-5, atol=1e-6)


optimizers = st.sampled_from(["adamw", "adam_amsgrad", "sgd", "sgd_nesterov", "sgd_damp"])


def _factory(name, mode, scaling, maximize):
    def make(ps, backend):
        kw = dict(
            weight_decay=0.1,
            decay_mode=mode,
            decay_scaling=scaling,
            maximize=maximize,
            backend=backend,
        )
        if name == "adamw":
            return sd.AdamW(ps, lr=1e-2, **kw)
        if name == "adam_amsgrad":
            return sd.Adam(ps, lr=1e-2, amsgrad=True, **kw)
        if name == "sgd":
            return sd.SGD(ps, lr=0.05, **kw)
        if name == "sgd_nesterov":
            return sd.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, **kw)
        return sd.SGD(ps, lr=0.05, momentum=0.8, dampening=0.3, **kw)

    return make


@pytest.mark.usefixtures("interpret")
@given(
    seed=seeds,
    shapes=shape_lists,
    name=optimizers,
    mode=st.sampled_from(DECAY_MODES),
    scaling=st.sampled_from(SCALINGS),
    maximize=st.booleans(),
    sched=st.booleans(),
    skip=st.booleans(),
)
def test_triton_backend_matches_foreach(seed, shapes, name, mode, scaling, maximize, sched, skip):
    """Transposed params come from make_params; skip leaves some grads None on some steps."""
    params = make_params(seed, shapes)
    make = _factory(name, mode, scaling, maximize)
    skip_grad = (lambda k, i: (k + i) % 3 == 0) if skip else None
    ours = _run(make, params, seed, "triton", sched=sched, skip=skip_grad)
    ref = _run(make, params, seed, "foreach", sched=sched, skip=skip_grad)
    _same(*ours, *ref)


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("name", ["adamw", "sgd_nesterov"])
def test_many_tensors_sliced_and_empty_in_one_group(name):
    """120 tensors (0-element ones included) plus a strided slice (reference path)."""
    shapes = [((i * 13) % 40,) for i in range(110)] + [(9, 11)] * 10
    params = make_params(11, shapes)
    base = torch.randn(12, 30)
    params.append(base[:, ::3].detach().requires_grad_())  # not dense: foreach fallback
    make = _factory(name, "decoupled", "fan_in", False)
    ours, ref = _run(make, params, 11, "triton"), _run(make, params, 11, "foreach")
    _same(*ours, *ref)


@pytest.mark.usefixtures("interpret")
def test_bf16_params_keep_bf16_state():
    p = torch.randn(300, dtype=torch.bfloat16, requires_grad=True)
    opt = sd.AdamW([p], lr=1e-2, backend="triton")
    p.grad = torch.randn_like(p)
    opt.step()
    state = opt.state[p]
    assert state["exp_avg"].dtype == torch.bfloat16 and state["exp_avg_sq"].dtype == torch.bfloat16
    assert state["step"].dtype == torch.float32 and state["step"].item() == 1.0


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    p = torch.randn(5, requires_grad=True)
    opt = sd.SGD([p], lr=0.1, backend="triton")
    p.grad = torch.ones_like(p)
    before = p.detach().clone()
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        opt.step()
    assert torch.equal(p.detach(), before)  # no silent fallback, nothing changed


@pytest.mark.usefixtures("interpret")
def test_auto_does_not_pick_triton_on_cpu():
    p = torch.randn(3)
    assert B.resolve_backend("auto", p) in ("torch_fused", "foreach")
    assert B.triton_available(torch.device("cpu"))
    assert B.resolve_backend("triton", p) == "triton"


# ---- the plan's tables (issue 16): built once, never by a schedule ----------------------------
def _interp_tables():
    from scaled_decay import kernels

    return kernels.package_for(torch.device("cpu")).tables  # the copy CPU tensors run on


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("mode", DECAY_MODES)
@pytest.mark.parametrize("name", ["adamw", "sgd_nesterov"])
def test_schedules_of_lr_and_weight_decay_build_no_table(name, mode):
    ps = make_params(0, [(9, 5), (33,), (4, 4)])
    opt = _factory(name, mode, "fan_in", False)(ps, "triton")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for k in range(2):  # SGD: new buffers at step 1, their flags and addresses at step 2
        for p in ps:
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(k))
        opt.step()
    tables = _interp_tables()
    before = tables.build_counts()
    for k in range(2, 6):
        for p in ps:  # same storage each step: the address table holds
            p.grad.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(k)))
        opt.step()
        sched.step()
        opt.param_groups[0]["weight_decay"] *= 0.8
    assert tables.build_counts() == before


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("name", ["adamw", "sgd_nesterov"])
def test_a_step_gradscaler_skips_leaves_nothing_behind(name):
    """found_inf set: the run goes on exactly as if that step had not been called (the
    kernels skip on the device; SGD's first step reads found_inf and makes no buffer; Adam's
    first step leaves torch's fresh state, zeros at step 0, as torch's fused Adam does)."""

    def grads(ps, k):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(k))

    runs = []
    for skips in ((), (0, 2)):  # skipped calls before the 1st and the 2nd real step
        ps = make_params(1, [(9, 5), (33,)])
        opt = _factory(name, "decoupled", "fan_in", False)(ps, "triton")
        for k in range(3):
            if k in skips:
                grads(ps, 99)
                opt.grad_scale, opt.found_inf = torch.tensor(8.0), torch.tensor(1.0)
                opt.step()
                del opt.grad_scale, opt.found_inf
            grads(ps, k)
            opt.step()
        runs.append((ps, opt))
    (a, a_opt), (b, b_opt) = runs
    for x, y in zip(a, b):
        assert torch.equal(x, y)
        assert a_opt.state[x].keys() == b_opt.state[y].keys()
        for key, value in a_opt.state[x].items():
            assert torch.equal(value, b_opt.state[y][key]), key


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("mode", ["decoupled", "independent", "corrected", "l2"])
def test_capturable_triton_step_reads_nothing_on_the_host(mode, monkeypatch):
    ps = make_params(2, [(9, 5), (33,)])
    ref = clone_params(ps)
    opt = sd.AdamW(
        ps,
        lr=torch.tensor(0.01),
        weight_decay=0.1,
        backend="triton",
        capturable=True,
        decay_mode=mode,
        decay_scaling="fan_in",
    )
    ref_opt = sd.AdamW(
        ref, lr=0.01, weight_decay=0.1, backend="foreach", decay_mode=mode, decay_scaling="fan_in"
    )
    for k in range(3):
        for p, r in zip(ps, ref):
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(k))
            r.grad = p.grad.clone()
        if k == 1:  # tables exist: the steady step must not read a tensor on the host

            def refuse(*args, **kwargs):
                raise AssertionError("a host sync in a capturable step")

            monkeypatch.setattr(torch.Tensor, "item", refuse)
            monkeypatch.setattr(torch.Tensor, "tolist", refuse)
        opt.step()
        monkeypatch.undo()
        ref_opt.step()
    _same(ps, opt, ref, ref_opt)
