"""Drop-in for torch.optim, continued: torch.optim's keyword arguments (``foreach``,
``fused``, ``capturable``, ``differentiable``; timm passes them), and bad input raising
torch.optim's exception types. (Complex, sparse and tensor-betas inputs:
``test_dropin_tensors.py``.)"""

import math
import warnings

import pytest
import torch
from torch import nn

import scaled_decay as sd
from tests.helpers.dropin_pairs import assert_same_params


# ---- torch.optim's keyword arguments -------------------------------------------------------------
def _params():
    return [nn.Parameter(torch.randn(3, 2))]


@pytest.mark.parametrize(
    "kwargs, backend",
    [
        (dict(foreach=True), "foreach"),
        (dict(foreach=False), "loop"),
        (dict(fused=True), "torch_fused"),  # CPU params: torch's fused kernels
        (dict(fused=False), "foreach"),
        (dict(foreach=False, fused=False), "loop"),
        (dict(foreach=None, fused=None), "auto"),
        (dict(fused=True, foreach=False), "torch_fused"),
        (dict(foreach=True, backend="foreach"), "foreach"),
        (dict(fused=True, backend="torch_fused"), "torch_fused"),
        (dict(fused=False, backend="loop"), "loop"),
        (dict(differentiable=False), "auto"),
    ],
)
@pytest.mark.parametrize("cls", [sd.SGD, sd.Adam, sd.AdamW])
def test_torch_kwargs_choose_the_backend(cls, kwargs, backend):
    opt = cls(_params(), **kwargs)
    assert [g["backend"] for g in opt.param_groups] == [backend]
    assert not {"foreach", "fused", "differentiable"} & set(opt.state_dict()["param_groups"][0])


@pytest.mark.parametrize("cls", [sd.Adam, sd.AdamW])
def test_capturable_false_is_accepted(cls):
    assert cls(_params(), capturable=False).param_groups[0]["backend"] == "auto"


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(foreach=True, backend="loop"), ValueError, ["backend='loop'", "foreach=True"]),
        (dict(fused=True, backend="foreach"), ValueError, ["backend='foreach'", "fused=True"]),
        (
            dict(foreach=False, backend="torch_fused"),
            ValueError,
            ["'torch_fused'", "foreach=False"],
        ),
        (dict(fused=False, backend="triton"), ValueError, ["backend='triton'", "fused=False"]),
        (dict(fused=True, foreach=True), RuntimeError, ["fused=True", "foreach=True"]),
        (dict(differentiable=True), ValueError, ["differentiable=True", "cannot be honoured"]),
        (
            dict(capturable=True, backend="torch_fused"),
            ValueError,
            ["capturable=True", "cannot be honoured", "'torch_fused'"],
        ),
        (dict(foreach="yes"), ValueError, ["foreach", "'yes'"]),
    ],
)
def test_torch_kwargs_that_cannot_be_honoured_raise(kwargs, error, words):
    with pytest.raises(error) as info:
        sd.AdamW(_params(), **kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("cls", [sd.SGD, sd.Adam, sd.AdamW])
def test_the_same_optimizer_runs_whichever_kwarg_chose_the_backend(cls):
    outs = []
    for kw in [
        dict(backend="foreach"),
        dict(foreach=True),
        dict(backend="loop"),
        dict(foreach=False),
        dict(fused=True),
    ]:
        torch.manual_seed(1)
        params = _params()
        params[0].grad = torch.randn(3, 2)
        cls(params, lr=0.1, **kw).step()
        outs.append(params[0].detach())
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[2], outs[3])
    torch.testing.assert_close(outs[4], outs[0])


def _timm_optim():
    try:
        import timm.optim
        from timm.optim._optim_factory import OptimInfo, default_registry
    except Exception as e:  # not installed, or torchvision broken with this torch (2.13)
        pytest.skip(f"timm does not import here ({type(e).__name__}: {e})")
    return timm.optim, OptimInfo, default_registry


@pytest.mark.parametrize(
    "ours, theirs, info",
    [
        ("sdadamw", "adamw", dict(opt_class=sd.AdamW, has_betas=True)),
        ("sdadam", "adam", dict(opt_class=sd.Adam, has_betas=True)),
        (
            "sdsgd",
            "sgd",
            dict(
                opt_class=sd.SGD,
                has_eps=False,
                has_momentum=True,
                defaults={"nesterov": True, "decay_mode": "l2"},
            ),
        ),
    ],
)
def test_timm_create_optimizer_v2_with_foreach(ours, theirs, info, monkeypatch):
    timm_optim, OptimInfo, registry = _timm_optim()
    monkeypatch.setitem(registry._optimizers, ours, OptimInfo(name=ours, **info))
    runs = []
    for name in (theirs, ours):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
        opt = timm_optim.create_optimizer_v2(model, name, lr=0.01, weight_decay=0.05, foreach=True)
        for k in range(3):
            opt.zero_grad()
            model(
                torch.randn(5, 4, generator=torch.Generator().manual_seed(k))
            ).square().sum().backward()
            opt.step()
        runs.append((opt, list(model.parameters())))
    (_, t_params), (s_opt, s_params) = runs
    assert isinstance(s_opt, info["opt_class"])
    assert {g["backend"] for g in s_opt.param_groups} == {"foreach"}
    assert [g["weight_decay"] for g in s_opt.param_groups] == [0.0, 0.05]  # timm's groups
    assert_same_params(t_params, s_params)


# ---- bad input: torch.optim's exception types --------------------------------------------------
COMMON = [
    ("lr", "'0.1'", dict(lr="0.1")),
    ("lr", "None", dict(lr=None)),
    ("lr", "-0.1", dict(lr=-0.1)),
    ("lr", "nan", dict(lr=math.nan)),
    ("lr", "lr", dict(lr=torch.tensor([0.1, 0.2]))),
    ("weight_decay", "'x'", dict(weight_decay="x")),
    ("weight_decay", "None", dict(weight_decay=None)),
    ("weight_decay", "-1.0", dict(weight_decay=-1.0)),
    ("weight_decay", "nan", dict(weight_decay=math.nan)),
]
SGD_ONLY = [
    ("momentum", "'a'", dict(momentum="a")),
    ("momentum", "-0.9", dict(momentum=-0.9)),
    ("nesterov", "momentum", dict(nesterov=True)),
    ("nesterov", "dampening", dict(momentum=0.9, dampening=0.1, nesterov=True)),
]
ADAM_ONLY = [
    ("eps", "'a'", dict(eps="a")),
    ("eps", "-1e-08", dict(eps=-1e-8)),
    ("eps", "nan", dict(eps=math.nan)),
    ("betas", "0.9", dict(betas=0.9)),
    ("betas", "(0.9,)", dict(betas=(0.9,))),
    ("betas", "(0.9, 0.9, 0.9)", dict(betas=(0.9, 0.9, 0.9))),
    ("betas[0]", "'a'", dict(betas=("a", 0.9))),
    ("betas[0]", "1.0", dict(betas=(1.0, 0.9))),
    ("betas[0]", "nan", dict(betas=(math.nan, 0.9))),
    ("betas[0]", "tensor", dict(betas=(torch.tensor([0.9, 0.8]), 0.9))),
    ("fused=True", "foreach=True", dict(fused=True, foreach=True)),
    ("differentiable=True", "fused", dict(fused=True, differentiable=True)),
]
CASES = [(torch.optim.SGD, sd.SGD, dict(decay_mode="l2"), c) for c in COMMON + SGD_ONLY] + [
    (t, s, {}, c)
    for t, s in ((torch.optim.Adam, sd.Adam), (torch.optim.AdamW, sd.AdamW))
    for c in COMMON + ADAM_ONLY
]


def _outcome(make):
    """The exception constructing and stepping raises, or None."""
    try:
        params = _params()
        opt = make(params)
        params[0].grad = torch.ones_like(params[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.step()
    except Exception as e:
        return e
    return None


@pytest.mark.parametrize(
    "torch_cls, sd_cls, sd_kw, case", CASES, ids=[f"{t.__name__}-{c[2]}" for t, _, _, c in CASES]
)
def test_bad_input_raises_torchs_exception_type_naming_the_argument(torch_cls, sd_cls, sd_kw, case):
    """Where torch.optim rejects an input, sd raises an exception of torch's type (and a
    ValueError: the package's rule for bad input), at construction, naming the argument and
    the value;
    where torch accepts it (lr=nan for SGD), sd is stricter: a ValueError (README)."""
    arg, value, kwargs = case
    expected = _outcome(lambda ps: torch_cls(ps, **kwargs))
    lr = {} if "lr" in kwargs else dict(lr=0.01)
    with pytest.raises(Exception) as info:
        sd_cls(_params(), **lr, **sd_kw, **kwargs)
    assert isinstance(info.value, ValueError)
    if expected is not None:
        assert isinstance(info.value, type(expected)), (expected, info.value)
    assert arg in str(info.value) and value in str(info.value)
