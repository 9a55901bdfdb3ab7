"""The compiled kernels on a GPU (skipped without CUDA): reference parity per dtype, an lr
held in a 0-d CUDA tensor, CUDA-graph capture and replay, and a tensor over 2**31 elements."""

import pytest
import torch

import scaled_decay as sd
from scaled_decay import kernels as K
from scaled_decay.updates.adam import adam_math
from tests.helpers.triton_interpret import assert_close_ulps, triton  # noqa: F401  (importorskip)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

SIZES = [1, 7, 1023, 1025, 0, 65537, 1 << 20]


def _rand(seed, dtype, scale=1.0, positive=False):
    g = torch.Generator(device="cuda").manual_seed(seed)
    out = [torch.randn(n, generator=g, device="cuda") * scale for n in SIZES]
    return [(t.abs() if positive else t).to(dtype) for t in out]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_kernel_matches_reference_on_gpu(dtype, amsgrad):
    p, g = _rand(1, dtype), _rand(2, dtype)
    m, v = _rand(3, dtype, 0.1), _rand(4, dtype, 0.01, True)
    vmax = [x * 1.5 for x in v] if amsgrad else []
    steps = [torch.tensor(7.0, device="cuda") for _ in SIZES]
    hp = dict(
        l2_lams=None,
        decay=[1e-3 * (i + 1) for i in range(len(SIZES))],
        lr=3e-3,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        amsgrad=amsgrad,
        maximize=False,
    )
    before = [[t.float().clone() for t in x] for x in (p, m, v, vmax)]
    ref = [[t.float().clone() for t in x] for x in (p, g, m, v, vmax)]
    adam_math(*ref, [s.clone() for s in steps], **hp)
    K.adam_triton(p, g, m, v, vmax, steps, **hp)
    for out, r, b in zip((p, m, v, vmax), (ref[0], ref[2], ref[3], ref[4]), before):
        for o, rr, bb in zip(out, r, b):
            assert_close_ulps(o, rr, bb, "adam")


def test_lr_tensor_and_graph_capture():
    """Capture one SGD-momentum and one AdamW step per launch; replays with a changed lr
    tensor equal eager steps with that lr."""
    torch.manual_seed(0)
    p = [torch.randn(n, device="cuda") for n in (4097, 33, 1)]
    g = [torch.randn_like(x) for x in p]
    m, v = [torch.zeros_like(x) for x in p], [torch.zeros_like(x) for x in p]
    steps = [torch.zeros((), device="cuda") for _ in p]
    lr = torch.tensor(1e-2, device="cuda")
    hp = dict(
        l2_lams=None,
        decay=[1e-3] * 3,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        amsgrad=False,
        maximize=False,
    )
    ref = [[t.clone() for t in x] for x in (p, g, m, v, steps)]
    K.adam_triton(p, g, m, v, [], steps, lr=lr, **hp)  # warm-up: builds the tables
    K.adam_triton(*ref[:4], [], ref[4], lr=1e-2, **hp)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.cuda.graph(graph):
        K.adam_triton(p, g, m, v, [], steps, lr=lr, **hp)
    torch.cuda.current_stream().wait_stream(stream)
    for new_lr in (5e-3, 2e-3):
        lr.fill_(new_lr)
        graph.replay()
        K.adam_triton(*ref[:4], [], ref[4], lr=new_lr, **hp)
    torch.cuda.synchronize()
    for a, b in zip(p, ref[0]):
        torch.testing.assert_close(a, b, rtol=2e-6, atol=1e-7)
    assert [s.item() for s in steps] == [3.0] * 3


def test_capture_refuses_to_rebuild_tables():
    p = [torch.randn(100, device="cuda")]
    g = [torch.randn(100, device="cuda")]
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="capture"):
        with torch.cuda.graph(graph):
            K.sgd_triton(
                p,
                g,
                [None],
                l2_lams=None,
                decay=None,
                lr=0.1,
                momentum=0.0,
                dampening=0.0,
                nesterov=False,
                maximize=False,
            )


def test_more_than_2_31_elements():
    n = (1 << 31) + 4099
    free, _ = torch.cuda.mem_get_info()
    if free < 3 * n * 2:
        pytest.skip("not enough GPU memory")
    p = torch.zeros(n, dtype=torch.bfloat16, device="cuda")
    g = torch.ones(n, dtype=torch.bfloat16, device="cuda")
    K.sgd_triton(
        [p],
        [g],
        [None],
        l2_lams=None,
        decay=None,
        lr=0.5,
        momentum=0.0,
        dampening=0.0,
        nesterov=False,
        maximize=False,
    )
    assert p[-4099:].eq(-0.5).all() and p[:7].eq(-0.5).all()
    assert p.eq(-0.5).all()  # every element moved, the last ones past 2**31 included


def test_optimizer_auto_picks_triton_and_matches_torch_fused():
    torch.manual_seed(0)
    params = [torch.randn(64, 33, device="cuda", requires_grad=True) for _ in range(3)]
    ref = [p.detach().clone().requires_grad_() for p in params]
    opt = sd.AdamW(params, lr=1e-3)
    opt_ref = torch.optim.AdamW(ref, lr=1e-3, fused=True)
    for _ in range(5):
        for a, b in zip(params, ref):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        opt.step()
        opt_ref.step()
    for a, b in zip(params, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    from scaled_decay import backends as B

    assert B.resolve_backend("auto", params[0]) == "triton"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("build", ["gpt2", "llama"])
def test_real_models_triton_matches_loop_on_gpu(build, dtype):
    """Tiny GPT-2 and Llama on CUDA, grads from a real backward (tied embeddings, Conv1D
    layouts): AdamW fan_in + independent and SGD-momentum FanIn x ParamCount through the
    Triton kernels track the loop backend over 4 steps, within the fused tolerance."""
    from tests.helpers.framework_models import tiny_gpt2, tiny_llama

    pytest.importorskip("transformers")
    torch.manual_seed(0)
    make = {"gpt2": tiny_gpt2, "llama": tiny_llama}[build]
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1.6e-2, atol=1e-3)
    for opt_kind in ("adamw", "sgd"):
        models = [make().to("cuda", dtype) for _ in range(2)]
        models[1].load_state_dict(models[0].state_dict())

        def opt(model, backend, opt_kind=opt_kind):
            groups = sd.param_groups(model, 0.1)
            if opt_kind == "adamw":
                return sd.AdamW(
                    groups,
                    lr=1e-3,
                    decay_scaling="fan_in",
                    decay_mode="independent",
                    backend=backend,
                )
            return sd.SGD(
                groups,
                lr=1e-2,
                momentum=0.9,
                backend=backend,
                decay_scaling=(sd.FanIn(), sd.ParamCount()),
            )

        opts = [opt(models[0], "auto"), opt(models[1], "loop")]
        assert sd.backends.resolve_backend("auto", next(models[0].parameters())) == "triton"
        ids = torch.randint(0, 50, (4, 8), device="cuda")
        for _ in range(4):
            models[0].zero_grad()
            models[0](input_ids=ids, labels=ids).loss.backward()
            for a, b in zip(models[0].parameters(), models[1].parameters()):
                b.grad = a.grad.clone()  # same strides
            for o in opts:
                o.step()
        for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
            torch.testing.assert_close(
                a, b, **tol, msg=lambda m, k=opt_kind, n=name: f"{k} {n}: {m}"
            )


@pytest.mark.parametrize("mode", ["decoupled", "independent", "corrected"])
def test_captured_optimizer_step_follows_the_scheduler_on_replay(mode):
    """Issue 16: sd.AdamW(capturable=True) captured in a CUDA graph; after each
    ``scheduler.step()`` a replay equals an eager step at the new lr (the lr is read from its
    tensor inside the kernel, and the plan's tables stay alive and unchanged)."""
    torch.manual_seed(0)
    start = [torch.randn(n, device="cuda") for n in (4097, 33, 5)]
    grads = [torch.randn_like(x) for x in start]
    runs = {}
    for captured in (False, True):
        ps = [x.clone().requires_grad_() for x in start]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        opt = sd.AdamW(
            ps,
            lr=torch.tensor(1e-2, device="cuda"),
            weight_decay=0.1,
            decay_mode=mode,
            decay_scaling="fan_in",
            capturable=captured,
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6)
        opt.step()  # lazy state, plan and tables outside the capture
        sched.step()
        if captured:
            graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                with torch.cuda.graph(graph, stream=stream):
                    opt.step()
            torch.cuda.current_stream().wait_stream(stream)
            sched.step()
        else:
            opt.step()
            sched.step()
        for _ in range(3):
            graph.replay() if captured else opt.step()
            sched.step()
        torch.cuda.synchronize()
        runs[captured] = ps
    for a, b in zip(runs[False], runs[True]):
        torch.testing.assert_close(b, a, rtol=2e-6, atol=1e-7)
