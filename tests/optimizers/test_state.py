"""State dicts: torch.optim's load here and back; save, reload, continue is bit-identical."""

import pytest
import torch

import scaled_decay as sd
from tests.helpers.checkpoints import save_load
from tests.helpers.problems import QuadraticLoss, clone_params, make_params, run_steps

PAIRS = [
    (
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, amsgrad=True),
        lambda p: sd.AdamW(p, lr=0.01, weight_decay=0.1, amsgrad=True, backend="foreach"),
    ),
    (
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1),
        lambda p: sd.Adam(p, lr=0.01, weight_decay=0.1, backend="loop"),
    ),
    (
        lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=0.1),
        lambda p: sd.SGD(
            p, lr=0.01, momentum=0.9, weight_decay=0.1, decay_mode="l2", backend="foreach"
        ),
    ),
]
SHAPES = [(5, 3), (3,), (2, 2, 2)]


@pytest.mark.parametrize("torch_first", [True, False])
@pytest.mark.parametrize("make_torch, make_sd", PAIRS)
def test_state_dict_moves_between_torch_optim_and_sd(make_torch, make_sd, torch_first):
    params = make_params(1, SHAPES)
    first = clone_params(params)
    make_a, make_b = (make_torch, make_sd) if torch_first else (make_sd, make_torch)
    opt_a = make_a(first)
    loss = QuadraticLoss(1, first)
    run_steps(opt_a, first, loss, 10)
    # continue in the other class from a copy of the state, and in the original one
    second = clone_params(first)
    opt_b = make_b(second)
    opt_b.load_state_dict(save_load(opt_a.state_dict()))
    noise_state = loss.noise.get_state()
    run_steps(opt_a, first, loss, 10)
    loss.noise.set_state(noise_state)
    run_steps(opt_b, second, loss, 10)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: sd.AdamW(
            p,
            lr=0.01,
            decay_scaling=("fan_in", sd.StepsPerEpoch(7, epochs=3)),
            decay_mode="independent",
        ),
        lambda p: sd.SGD(
            p,
            lr=0.01,
            momentum=0.9,
            nesterov=True,
            weight_decay=0.3,
            decay_scaling="param_count",
            decay_mode="corrected",
        ),
        lambda p: sd.Adam(p, lr=0.01, weight_decay=0.1, amsgrad=True, backend="torch_fused"),
    ],
)
def test_save_reload_continue_is_bit_identical(make_opt):
    params = make_params(2, SHAPES)
    straight = clone_params(params)
    loss_a = QuadraticLoss(2, straight)
    opt = make_opt(straight)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
    run_steps(opt, straight, loss_a, 12, scheduler=sched)
    saved = save_load(
        {
            "params": [p.detach().clone() for p in straight],
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "noise": loss_a.noise.get_state(),
        }
    )
    run_steps(opt, straight, loss_a, 12, scheduler=sched)

    resumed = [p.clone().requires_grad_() for p in saved["params"]]
    opt2 = make_opt(resumed)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=30)
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    loss_b = QuadraticLoss(2, resumed)
    loss_b.noise.set_state(saved["noise"])
    run_steps(opt2, resumed, loss_b, 12, scheduler=sched2)
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)
    assert opt2.param_groups[0]["decay_scaling"] == opt.param_groups[0]["decay_scaling"]


def test_loading_torch_state_keeps_this_optimizers_decay_settings():
    params = make_params(3, SHAPES)
    ref = torch.optim.AdamW(clone_params(params), lr=0.02)
    opt = sd.AdamW(params, lr=0.01, decay_scaling="fan_in", decay_mode="independent")
    opt.load_state_dict(ref.state_dict())
    group = opt.param_groups[0]
    assert group["lr"] == 0.02  # hyperparameters come from the file
    assert group["decay_mode"] == "independent"  # keys torch lacks keep their values
    assert group["decay_scaling"] == (sd.FanIn(),)


def test_rules_are_saved_as_plain_data():
    opt = sd.AdamW(make_params(0, SHAPES), decay_scaling=(sd.FanIn(2.0, -1.0), "param_count"))
    saved = opt.state_dict()["param_groups"][0]["decay_scaling"]
    assert saved[0] == {"rule": "FanIn", "reference": 2.0, "power": -1.0}
    assert saved[1]["rule"] == "ParamCount" and saved[1]["reference"] == 1.0
    assert all(type(v) in (str, int, float, type(None)) for d in saved for v in d.values())
    assert opt.param_groups[0]["decay_scaling"][0] == sd.FanIn(
        2.0, -1.0
    )  # live groups keep objects
