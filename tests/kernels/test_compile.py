"""torch.compile and tensor learning rates.

Supported: a compiled training step (forward, backward, ``opt.step()``) with backend
"auto" (= "foreach" while compiling), "foreach" or "loop", any decay mode and rule. A 0-d
tensor lr changed in place by an LR scheduler does not recompile; a float lr is a guarded
constant (a recompile when it changes, unless Dynamo's automatic dynamic has learned it), as
with torch.optim. In eager mode a tensor lr gives the same numbers as the float.
"""

import pytest
import torch

import scaled_decay as sd
from tests.helpers.problems import small_net

STEPS = 8


def _data(step):
    g = torch.Generator().manual_seed(step)
    return torch.randn(32, 6, generator=g), torch.randn(32, 3, generator=g)


def _run(make_opt, lr, step_fn=None, steps=STEPS, after_warmup=None):
    net = small_net()
    opt = make_opt(net, lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / (2 * steps))

    def train_step(x, y):
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    fn = step_fn(train_step) if step_fn else train_step
    lrs = []
    for step in range(steps):
        if step == 2 and after_warmup is not None:
            after_warmup.__enter__()  # steps 1-2 build the graphs (lazy state, then steady)
        fn(*_data(step))
        sched.step()
        lrs.append(float(opt.param_groups[0]["lr"]))
    if after_warmup is not None:
        after_warmup.__exit__(None, None, None)
    return net, opt, lrs


OPTIMIZERS = {
    "AdamW/independent/fan_in": lambda net, lr: sd.AdamW(
        sd.param_groups(net, 0.5), lr=lr, decay_mode="independent", decay_scaling="fan_in"
    ),
    "SGD/corrected/param_count": lambda net, lr: sd.SGD(
        net.parameters(),
        lr=lr,
        momentum=0.9,
        weight_decay=0.5,
        decay_mode="corrected",
        decay_scaling=sd.ParamCount(reference=100),
    ),
    "Adam/l2/amsgrad": lambda net, lr: sd.Adam(
        net.parameters(), lr=lr, weight_decay=0.1, amsgrad=True, decay_scaling="fan_in"
    ),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_tensor_lr_gives_the_float_lr_numbers_in_eager(name):
    # lr = 1/16 and the schedule's factors 1 - s/16 are exact in float32, so the tensor lr
    # (float32) and the float lr (float64) hold the same values at every step
    net_f, _, lrs_f = _run(OPTIMIZERS[name], 0.0625)
    net_t, opt_t, lrs_t = _run(OPTIMIZERS[name], torch.tensor(0.0625))
    assert lrs_t == lrs_f and lrs_t[-1] < lrs_t[0]  # the schedule moved lr
    for a, b in zip(net_f.parameters(), net_t.parameters()):
        assert torch.equal(a, b)
    # the scheduler changes a tensor lr in place: initial_lr must be its own copy
    g = opt_t.param_groups[0]
    assert g["initial_lr"] is not g["lr"] and float(g["initial_lr"]) == 0.0625


def _recording_inductor(seen_ops: set):
    """Inductor, noting the ops of every graph it compiles (to see opt.step was captured)."""
    from torch._inductor.compile_fx import compile_fx

    def backend(gm, example_inputs):
        seen_ops.update(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return compile_fx(gm, example_inputs)

    return backend


@pytest.mark.parametrize("name", ["AdamW/independent/fan_in", "SGD/corrected/param_count"])
def test_compiled_step_matches_eager_and_does_not_recompile_when_lr_changes(name):
    torch._dynamo.reset()
    eager, _, lrs_eager = _run(OPTIMIZERS[name], torch.tensor(0.05))
    seen_ops = set()
    no_recompiles = torch._dynamo.config.patch(error_on_recompile=True)
    try:
        compiled, opt, lrs = _run(
            OPTIMIZERS[name],
            torch.tensor(0.05),
            step_fn=lambda f: torch.compile(f, backend=_recording_inductor(seen_ops)),
            after_warmup=no_recompiles,
        )  # steps 3..8 at new lrs: a recompile raises
    finally:
        torch._dynamo.reset()
    assert lrs == lrs_eager and len(set(lrs)) == STEPS  # lr changed at every step
    # the optimizer's update was traced into a graph, not run eagerly beside it
    assert any("_foreach_" in op for op in seen_ops), sorted(seen_ops)
    # Inductor's fused forward/backward and float32 tensor bias corrections instead of Python
    # floats: close, not equal (a wrong decay would be off by ~lr * lam ~ 1e-2 per step)
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)


def test_float_lr_recompiles_which_is_why_lr_is_a_tensor():
    """The control: the recompile check above can fail (Dynamo guards on a float lr)."""
    torch._dynamo.reset()
    # without automatic dynamic (and its on-disk profile of earlier runs), a float lr is
    # baked into the graph
    cfg = {
        k: False
        for k in ("automatic_dynamic_shapes", "automatic_dynamic_local_pgo")
        if hasattr(torch._dynamo.config, k)
    }
    try:
        with torch._dynamo.config.patch(**cfg), pytest.raises(torch._dynamo.exc.RecompileError):
            _run(
                OPTIMIZERS["AdamW/independent/fan_in"],
                0.05,
                step_fn=torch.compile,
                after_warmup=torch._dynamo.config.patch(error_on_recompile=True),
            )
    finally:
        torch._dynamo.config.error_on_recompile = False
        torch._dynamo.reset()


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: sd.AdamW(ps, lr=0.1, weight_decay=0.5, decay_scaling="fan_in"),
        lambda ps: sd.with_scaled_decay(torch.optim.SGD)(ps, lr=0.1, weight_decay=0.5),
    ],
    ids=["sd.AdamW", "with_scaled_decay(SGD)"],
)
def test_decay_plan_exists_before_any_step(make):
    """Dynamo (torch 2.11) cannot create the decay plan inside a compiled step, so it is made
    at construction, and again when a copy is unpickled or a state dict is loaded."""
    import copy
    import pickle

    opt = make(list(small_net().parameters()))
    copies = {"new": opt, "deepcopy": copy.deepcopy(opt), "pickle": pickle.loads(pickle.dumps(opt))}
    loaded = make(list(small_net().parameters()))
    loaded.load_state_dict(opt.state_dict())
    copies["load_state_dict"] = loaded
    for how, o in copies.items():
        assert "_decay_plan" in o.__dict__, how
    assert copies["deepcopy"]._plan is not opt._plan
