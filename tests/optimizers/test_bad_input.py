"""Bad input: invalid hyperparameters raise ValueError at construction, naming the argument
and the value; sparse gradients raise RuntimeError naming the parameter; a failed
load_state_dict leaves the optimizer as it was."""

import copy

import pytest
import torch
from torch import nn

import scaled_decay as sd


def _p():
    return [nn.Parameter(torch.randn(3, 2))]


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: sd.SGD(_p(), lr=-0.1), ["lr", "-0.1"]),
        (lambda: sd.AdamW(_p(), lr=-1e-3), ["lr", "-0.001"]),
        (lambda: sd.Adam(_p(), eps=-1e-8), ["eps", "-1e-08"]),
        (lambda: sd.AdamW(_p(), weight_decay=-0.1), ["weight_decay", "-0.1"]),
        (lambda: sd.SGD(_p(), weight_decay=float("nan")), ["weight_decay", "nan"]),
        (lambda: sd.Adam(_p(), betas=(1.0, 0.999)), ["betas[0]", "1.0"]),
        (lambda: sd.Adam(_p(), betas=(0.9, -0.1)), ["betas[1]", "-0.1"]),
        (lambda: sd.AdamW(_p(), betas=(0.9,)), ["betas", "(0.9,)"]),
        (lambda: sd.SGD(_p(), momentum=-0.9), ["momentum", "-0.9"]),
        (lambda: sd.SGD(_p(), nesterov=True), ["nesterov", "momentum"]),
        (
            lambda: sd.SGD(_p(), momentum=0.9, dampening=0.1, nesterov=True),
            ["nesterov", "dampening"],
        ),
        (lambda: sd.AdamW(_p(), decay_mode="weird"), ["decay_mode", "'weird'"]),
        (lambda: sd.AdamW(_p(), decay_scaling="fanin"), ["decay_scaling", "'fanin'"]),
        (lambda: sd.AdamW(_p(), decay_scaling=("fan_in", 3)), ["decay_scaling", "3"]),
        (lambda: sd.AdamW(_p(), backend="cuda"), ["backend", "'cuda'"]),
        (lambda: sd.FanIn(reference=0), ["reference", "0"]),
        (lambda: sd.FanIn(reference=-2.0), ["reference", "-2.0"]),
        (lambda: sd.FanIn(power=float("inf")), ["power", "inf"]),
        (lambda: sd.ParamCount(reference=0.0), ["reference", "0.0"]),
        (lambda: sd.StepsPerEpoch(0), ["steps_per_epoch", "0"]),
        (lambda: sd.StepsPerEpoch(10, epochs=-1), ["epochs", "-1"]),
        (lambda: sd.AdamW(_p(), lr=0.0, decay_mode="independent"), ["peak_lr", "0.0"]),
        (lambda: sd.param_groups(nn.Linear(2, 2), -1.0), ["weight_decay", "-1.0"]),
        (lambda: sd.param_groups(nn.Linear(2, 2), 0.1, no_decay=[3]), ["no_decay", "3"]),
        (
            lambda: sd.param_groups(
                nn.Linear(2, 2), 0.1, base_model=nn.Sequential(nn.Linear(2, 2))
            ),
            ["base_model", "weight"],
        ),
    ],
)
def test_bad_hyperparameters_raise_value_error_naming_them(make, words):
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value)


def test_bad_group_in_add_param_group_is_rejected_and_not_added():
    opt = sd.AdamW(_p())
    with pytest.raises(ValueError, match="decay_mode"):
        opt.add_param_group({"params": _p(), "decay_mode": "nope"})
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": _p(), "lr": -1.0})
    assert len(opt.param_groups) == 1


def test_per_group_settings_are_validated_too():
    with pytest.raises(ValueError, match="weight_decay"):
        sd.SGD([{"params": _p(), "weight_decay": -2.0}], lr=0.1)


def test_sparse_gradient_raises_runtime_error_naming_the_parameter():
    emb = nn.Embedding(10, 3, sparse=True)
    opt = sd.AdamW(emb.named_parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="weight"):
        opt.step()


def _trained_opt():
    params = _p()
    opt = sd.AdamW(params, lr=0.01, decay_scaling="fan_in")
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    return opt


def _snapshot(opt):
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return copy.deepcopy((opt.state_dict(), groups)), [list(g["params"]) for g in opt.param_groups]


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: s["param_groups"].append(copy.deepcopy(s["param_groups"][0])),
        lambda s: s["param_groups"][0]["params"].append(99),
        lambda s: s["param_groups"][0].update(decay_mode="bogus"),
        lambda s: s["param_groups"][0].update(lr=-3.0),
        lambda s: s["param_groups"][0].update(decay_scaling=[{"rule": "Nope"}]),
        lambda s: s["state"][0].update(exp_avg=torch.zeros(4, 4)),
    ],
)
def test_failed_load_state_dict_leaves_the_optimizer_unchanged(corrupt):
    opt = _trained_opt()
    before, params_before = _snapshot(opt)
    bad = copy.deepcopy(opt.state_dict())
    corrupt(bad)
    with pytest.raises(ValueError):
        opt.load_state_dict(bad)
    after, params_after = _snapshot(opt)
    assert after[1] == before[1]
    assert all(a is b for ga, gb in zip(params_after, params_before) for a, b in zip(ga, gb))
    for k, v in before[0]["state"][0].items():
        assert torch.equal(after[0]["state"][0][k], v)
