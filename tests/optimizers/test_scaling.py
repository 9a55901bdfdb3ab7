"""Scaling rules: effective lam per tensor, computed by hand here, against decay_report()
and against what one step actually does."""

import math

import pytest
import torch
from torch import nn

import scaled_decay as sd


class Net(nn.Module):
    """Linear, grouped Conv2d, Embedding, LayerNorm and biases."""

    def __init__(self, width=8):
        super().__init__()
        self.emb = nn.Embedding(11, width)
        self.conv = nn.Conv2d(width, 2 * width, kernel_size=(3, 2), groups=2)
        self.norm = nn.LayerNorm(2 * width)
        self.head = nn.Linear(2 * width, 5)
        self.tconv = nn.ConvTranspose1d(width, 6, kernel_size=3, groups=2)


# By hand (the input size the owning module sees): module-aware fan-ins of Net(width);
# None = no-decay group.
def expected_fan_ins(width):
    return {
        "emb.weight": 11,
        "conv.weight": (width // 2) * 3 * 2,
        "conv.bias": None,
        "norm.weight": None,
        "norm.bias": None,
        "head.weight": 2 * width,
        "head.bias": None,
        "tconv.weight": (6 // 2) * 3,
        "tconv.bias": None,
    }


def _rows(opt):
    return {r.name: r for r in opt.decay_report()}


@pytest.mark.parametrize(
    "scaling, s_of",
    [
        (None, lambda f, n: 1.0),
        ("fan_in", lambda f, n: 1.0 / f),
        (sd.FanIn(reference=4.0, power=0.5), lambda f, n: (4.0 / f) ** 0.5),
        (sd.FanIn(power=-1), lambda f, n: float(f)),
        ("param_count", lambda f, n: 1.0 / n),
        ((sd.FanIn(), sd.StepsPerEpoch(10, epochs=4)), lambda f, n: 1.0 / f / math.sqrt(40)),
    ],
)
def test_effective_lambda_matches_report_and_step(scaling, s_of):
    torch.manual_seed(0)
    model = Net()
    wd, lr = 0.2, 0.05
    opt = sd.SGD(sd.param_groups(model, wd), lr=lr, decay_scaling=scaling)
    n = sum(p.numel() for p in model.parameters())
    rows = _rows(opt)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        fan = expected_fan_ins(8)[name]
        lam = 0.0 if fan is None else wd * s_of(fan, n)
        row = rows[name]
        assert row.shape == tuple(p.shape)
        assert row.lam == pytest.approx(lam, rel=1e-12)
        assert row.decay_factor == pytest.approx(1 - lr * lam, rel=1e-12)
        if fan is not None:
            assert row.fan_in == fan
        torch.testing.assert_close(p.detach(), before[name] * (1 - lr * lam))


def test_named_params_give_names_and_shape_based_fan_in():
    model = Net()
    opt = sd.AdamW(model.named_parameters(), weight_decay=0.1, decay_scaling="fan_in")
    rows = _rows(opt)
    assert rows["emb.weight"].fan_in == 8  # shape[1]: no module known
    assert rows["conv.weight"].fan_in == 4 * 3 * 2
    assert rows["head.bias"].fan_in == 1
    assert rows["head.bias"].lam == pytest.approx(0.1)  # no param_groups: biases decay


def test_fan_in_with_base_model_is_exact_at_base_width_and_scales_from_there():
    base = Net(width=8)
    same = sd.AdamW(sd.param_groups(Net(width=8), 0.1, base_model=base), decay_scaling="fan_in")
    for row in same.decay_report():
        if row.group == 0:
            assert row.lam == 0.1 and row.scale == 1.0
    wide = sd.AdamW(sd.param_groups(Net(width=32), 0.1, base_model=base), decay_scaling="fan_in")
    rows = _rows(wide)
    assert rows["head.weight"].lam == pytest.approx(0.1 * 16 / 64)
    assert rows["conv.weight"].lam == pytest.approx(0.1 * 4 / 16)
    assert rows["emb.weight"].lam == pytest.approx(0.1)  # fan-in is the vocabulary: unchanged


def test_power_minus_one_grows_lambda_with_fan_in():
    lams = []
    for width in (8, 16, 32):
        opt = sd.AdamW(
            sd.param_groups(Net(width), 0.1, base_model=Net(8)), decay_scaling=sd.FanIn(power=-1)
        )
        lams.append(_rows(opt)["head.weight"].lam)
    assert lams == pytest.approx([0.1, 0.2, 0.4])


def test_param_count_counts_every_group_and_no_decay_params():
    model = Net()
    opt = sd.AdamW(sd.param_groups(model, 1.0), decay_scaling="param_count")
    n = sum(p.numel() for p in model.parameters())
    assert _rows(opt)["head.weight"].lam == pytest.approx(1.0 / n)
    extra = nn.Parameter(torch.zeros(100))
    opt.add_param_group({"params": [extra], "param_names": ["extra"], "weight_decay": 1.0})
    assert _rows(opt)["head.weight"].lam == pytest.approx(1.0 / (n + 100))


def test_no_decay_names_patterns_and_types():
    model = Net()
    groups = sd.param_groups(model, 0.1, no_decay=(nn.Embedding, "conv.*"))
    decayed = set(groups[0]["param_names"])
    assert decayed == {"head.weight", "tconv.weight"}
    assert groups[1]["weight_decay"] == 0.0


def test_report_prints_a_table_and_gives_plain_data():
    opt = sd.AdamW(sd.param_groups(Net(), 0.1), decay_scaling="fan_in")
    text = str(opt.decay_report())
    assert text.splitlines()[0].split()[:4] == ["group", "name", "shape", "fan_in"]
    assert "head.weight" in text and "5x16" in text
    dicts = opt.decay_report().to_dicts()
    assert dicts[0].keys() >= {"name", "shape", "fan_in", "scale", "lam", "decay_factor"}


def test_adam_l2_report_has_no_per_step_factor():
    opt = sd.Adam(sd.param_groups(Net(), 0.1))
    assert all(r.decay_factor is None for r in opt.decay_report())


def test_tied_weights_counted_once():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight
    groups = sd.param_groups(model, 0.1)
    assert groups[0]["param_names"] == ["0.weight"]
