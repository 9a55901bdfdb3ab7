"""torch.amp.GradScaler with every backend: GradScaler.step(opt) calls our step directly
(``_step_supports_amp_scaling``), and each backend unscales and skips on inf/NaN itself.

With a power-of-two scale, scaling and unscaling are exact, so a scaled run must equal the
unscaled run bit for bit; a step with an inf gradient must leave params and state (``step``
included) exactly as they were.
"""

import pytest
import torch

import scaled_decay as sd
from tests.helpers.problems import QuadraticLoss, clone_params, make_params, run_amp_steps
from tests.helpers.triton_interpret import interpret, use_backend  # noqa: F401  (interpret: a fixture)

BACKENDS = ["loop", "foreach", "torch_fused", "triton"]
MAKERS = {
    "adamw": lambda ps, b: sd.AdamW(ps, lr=1e-2, weight_decay=0.1, backend=b),
    "adam_l2_amsgrad": lambda ps, b: sd.Adam(
        ps, lr=1e-2, weight_decay=0.1, amsgrad=True, decay_scaling="fan_in", backend=b
    ),
    "sgd_momentum": lambda ps, b: sd.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.1, backend=b),
    "sgd_l2": lambda ps, b: sd.SGD(ps, lr=0.05, weight_decay=0.1, decay_mode="l2", backend=b),
}


def _run(name, backend, scaler, steps=4, overflow_at=None):
    params = clone_params(make_params(7, [(6, 5), (5,), (0,), (3, 1, 2)]))
    opt = MAKERS[name](params, backend)
    snapshots = run_amp_steps(opt, params, QuadraticLoss(7, params), scaler, steps, overflow_at)
    return params, opt, snapshots


@pytest.fixture(params=BACKENDS)
def backend(request):
    return use_backend(request.param, request)


@pytest.mark.parametrize("name", list(MAKERS))
def test_gradscaler_run_equals_unscaled_run(name, backend):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**14, growth_interval=2)
    ours, opt, _ = _run(name, backend, scaler)
    ref, opt_ref, _ = _run(name, backend, None)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b), (a - b).abs().max()
    for a, b in zip(ours, ref):
        for key, value in opt.state[a].items():
            assert torch.equal(value.cpu(), opt_ref.state[b][key].cpu()), key
    assert scaler.get_scale() > 2.0**14  # the scale grew: no step was seen as overflowing


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("at", [0, 2])
def test_overflow_step_changes_nothing(name, backend, at):
    """At step 0 (state just created) or later: params and state stay as before the step."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    _, _, snaps = _run(name, backend, scaler, steps=at + 1, overflow_at=at)
    (p_before, sd_before), (p_after, sd_after) = snaps
    for a, b in zip(p_before, p_after):
        assert torch.equal(a, b)
    assert scaler.get_scale() == 2.0**9  # GradScaler saw the inf and backed off
    if at == 0:  # nothing to compare before the first step, except that no step counted
        steps = [s["step"].item() for s in sd_after["state"].values() if "step" in s]
        assert all(t == 0 for t in steps)
        assert not any("momentum_buffer" in s for s in sd_after["state"].values())
        return
    for key, state in sd_before["state"].items():
        for name_, value in state.items():
            assert torch.equal(value.cpu(), sd_after["state"][key][name_].cpu()), name_


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_decay_with_found_inf_clear_is_the_plain_decay_in_every_dtype(dtype):
    """The device-side skip multiplied by a 0-d fp32 factor, which torch casts to the params'
    dtype first (1 - 0.013 became 0.98682 in fp16, 0.98828 in bf16: 1,055 and 602 of 4,000
    elements came out other than the plain decay's). Half dtypes now read found_inf on the
    host and multiply by the float factor."""
    from scaled_decay.updates.decay_ops import Decay, apply_decoupled_decay

    g = torch.Generator().manual_seed(0)
    p = [(torch.randn(4000, generator=g) * 100).to(dtype)]
    decay = Decay("decoupled", ((1.3, None),), lr=0.01)  # c = 0.013
    plain, skipped_not = [p[0].clone()], [p[0].clone()]
    apply_decoupled_decay(plain, decay)
    apply_decoupled_decay(skipped_not, decay, found_inf=torch.zeros(()))
    assert not torch.equal(plain[0], p[0])
    assert torch.equal(skipped_not[0], plain[0])
    skipped = [p[0].clone()]
    apply_decoupled_decay(skipped, decay, found_inf=torch.ones(()))
    assert torch.equal(skipped[0], p[0])
