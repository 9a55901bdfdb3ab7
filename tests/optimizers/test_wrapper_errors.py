"""sd.with_scaled_decay: bad input is refused early and clearly; a refused step or group
changes nothing. Plus one compiled training step (torch.compile)."""

import re

import pytest
import torch

import scaled_decay as sd
from tests.helpers.problems import make_params

RAdamSD = sd.with_scaled_decay(torch.optim.RAdam)


@pytest.mark.parametrize("bad", [42, "RAdam", torch.nn.Linear, torch.optim.RAdam([torch.zeros(1)])])
def test_not_an_optimizer_class(bad):
    with pytest.raises(TypeError, match=re.escape("torch.optim.Optimizer subclass")):
        sd.with_scaled_decay(bad)


def test_refused_classes_and_arguments():
    with pytest.raises(ValueError, match=r"LBFGS.*closure"):
        sd.with_scaled_decay(torch.optim.LBFGS)
    for has_it in (RAdamSD, sd.AdamW):
        with pytest.raises(ValueError, match="already has the package's decay"):
            sd.with_scaled_decay(has_it)
    with pytest.raises(ValueError, match="own_decay"):
        sd.with_scaled_decay(torch.optim.RAdam, own_decay=3)
    assert sd.with_scaled_decay(torch.optim.RAdam) is RAdamSD  # one class per wrapped class


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(decoupled_weight_decay=True), "decoupled_weight_decay=True.*decay_mode"),
        (dict(decay_mode="sideways"), "decay_mode must be one of"),
        (dict(decay_scaling="fan_out"), "decay_scaling must be"),
        (dict(decay_scaling=sd.FanIn(), weight_decay=-0.1), "weight_decay must be"),
        (dict(lr=-1.0), "learning rate"),  # RAdam's own check comes first
        (dict(differentiable=True), "differentiable=True is not supported"),
        (dict(capturable=True), "capturable=True is not supported"),
        (
            dict(decay_scaling=sd.MuonShape()),
            r"MuonShape applies to tensors of 2 or more dims.*got shape \(7,\)",
        ),
    ],
)
def test_bad_hyperparameters_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RAdamSD(make_params(0, [(3, 4), (7,)]), **kwargs)


def test_weight_decay_given_twice_or_positionally():
    params = make_params(0, [(3, 4)])
    opt = RAdamSD(params, 1e-3, (0.9, 0.999), 1e-8, 0.25)  # RAdam's position of weight_decay
    assert opt.param_groups[0]["weight_decay"] == 0.25
    with pytest.raises(TypeError, match="multiple values for weight_decay"):
        RAdamSD(params, 1e-3, (0.9, 0.999), 1e-8, 0.25, weight_decay=0.1)
    with pytest.raises(TypeError, match=r"ScaledDecayRAdam.*nonsense"):
        RAdamSD(params, nonsense=1)


def test_bad_group_is_not_added():
    opt = RAdamSD(make_params(0, [(3, 4)]), weight_decay=0.1)
    for group in (
        {"decay_mode": "nope"},
        {"decoupled_weight_decay": True},
        {"decay_scaling": sd.MuonShape()},
    ):
        with pytest.raises(ValueError):
            opt.add_param_group(dict(group, params=[torch.zeros(5, requires_grad=True)]))
        assert len(opt.param_groups) == 1
        opt.decay_report()  # still consistent


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
def test_muon_shape_must_match_the_groups_adjustment():
    MuonSD = sd.with_scaled_decay(torch.optim.Muon)
    params = make_params(0, [(3, 4)])
    with pytest.raises(ValueError, match=r"MuonShape.*'match_rms_adamw'.*must match"):
        MuonSD(params, decay_scaling=sd.MuonShape("match_rms_adamw"))
    MuonSD(params, decay_scaling=sd.MuonShape("original"))  # None and "original" are one
    MuonSD(params, adjust_lr_fn="match_rms_adamw", decay_scaling=sd.MuonShape("match_rms_adamw"))


@pytest.mark.parametrize(
    "bad",
    [
        dict(adjust_lr_fn="spectral"),
        dict(reference_shape=(3,)),
        dict(reference_shape=(3, 0)),
        dict(reference_shape="ab"),
        dict(reference_shape=(2.0, 3)),
    ],
)
def test_bad_muon_shape(bad):
    with pytest.raises(ValueError, match="MuonShape"):
        sd.MuonShape(**bad)


def test_an_optimizer_without_lr_is_refused():
    class NoLr(torch.optim.Optimizer):
        def __init__(self, params, step_size=0.1):
            super().__init__(params, dict(step_size=step_size))

        def step(self, closure=None):
            pass

    with pytest.raises(ValueError, match="needs an 'lr' group key"):
        sd.with_scaled_decay(NoLr)(make_params(0, [(2,)]))


def test_l2_with_sparse_gradients_is_refused_before_anything_changes():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    dense = torch.nn.Parameter(torch.randn(4))
    opt = sd.with_scaled_decay(torch.optim.SGD)(
        [
            {"params": [dense], "decay_mode": "decoupled", "param_names": ["dense"]},
            {"params": [emb.weight], "decay_mode": "l2", "param_names": ["emb.weight"]},
        ],
        lr=0.1,
        weight_decay=0.5,
    )
    emb(torch.tensor([1, 2])).sum().backward()
    dense.grad = torch.ones(4)
    before = [dense.detach().clone(), emb.weight.detach().clone()]
    with pytest.raises(RuntimeError, match=r"sparse gradients.*emb.weight"):
        opt.step()
    assert torch.equal(dense, before[0]) and torch.equal(emb.weight, before[1])
    opt.param_groups[1]["decay_mode"] = "decoupled"  # decoupled decay takes sparse grads
    opt.step()
    assert torch.equal(dense, before[0] * (1 - 0.05) - 0.1)


def test_compiled_training_step_matches_eager():
    """torch.compile of forward, backward and the wrapped step (Adam, foreach)."""

    def run(compiled):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        opt = sd.with_scaled_decay(torch.optim.Adam)(
            sd.param_groups(net, 0.3), lr=0.01, foreach=True, decay_scaling="fan_in"
        )

        def step(x, y):
            ((net(x) - y) ** 2).mean().backward()
            opt.step()
            opt.zero_grad()

        fn = torch.compile(step) if compiled else step
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            fn(torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g))
        return list(net.parameters())

    torch._dynamo.reset()
    try:
        for a, b in zip(run(False), run(True)):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    finally:
        torch._dynamo.reset()
