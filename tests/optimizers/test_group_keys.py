"""The package's group keys on a live optimizer: mid-run edits (validated at the next step),
add_param_group with and without names, print(opt), and the report's lr column and groups."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import scaled_decay as sd

OPTIMIZERS = {
    "SGD": lambda g, **kw: sd.SGD(g, lr=0.1, **kw),
    "Adam": lambda g, **kw: sd.Adam(g, lr=0.1, **kw),
    "AdamW": lambda g, **kw: sd.AdamW(g, lr=0.1, **kw),
}


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))


def _zero_grads(model):
    for p in model.parameters():
        p.grad = torch.zeros_like(p)


def _decays(opt, model):
    """Per parameter: the factor one step with zero grads multiplied it by."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _zero_grads(model)
    opt.step()
    return {
        n: (p.detach() / before[n]).mean().item()
        for n, p in model.named_parameters()
        if p.dim() > 1
    }


EDITS = {  # key -> (new value, expected s(p) for a weight of fan-in f)
    "fan_in": ("fan_in", lambda f: 1 / f),
    "rule": (sd.FanIn(power=-1), lambda f: f),
    "tuple": (("fan_in", sd.StepsPerEpoch(10)), lambda f: 1 / f / 10),
    "list": (["fan_in"], lambda f: 1 / f),
    "plain dict": ({"rule": "FanIn", "reference": 2.0, "power": 1.0}, lambda f: 2 / f),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_decay_scaling_set_mid_run_acts_at_the_next_step(edit):
    model = _model()
    opt = sd.SGD(sd.param_groups(model, 0.5), lr=0.1)
    assert _decays(opt, model)["0.weight"] == pytest.approx(1 - 0.1 * 0.5)
    value, s_of = EDITS[edit]
    opt.param_groups[0]["decay_scaling"] = value  # crashed at the step before
    decays = _decays(opt, model)
    assert decays["0.weight"] == pytest.approx(1 - 0.1 * 0.5 * s_of(4), rel=1e-6)
    assert decays["2.weight"] == pytest.approx(1 - 0.1 * 0.5 * s_of(8), rel=1e-6)
    assert isinstance(opt.param_groups[0]["decay_scaling"], tuple)  # normalized in place


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_decay_mode_and_weight_decay_set_mid_run(name):
    model = _model()
    opt = OPTIMIZERS[name](sd.param_groups(model, 0.5), decay_mode="decoupled")
    _decays(opt, model)
    opt.param_groups[0]["lr"] = 0.05  # as a scheduler would
    opt.param_groups[0].update(decay_mode="independent", weight_decay=0.2)
    # zero grads: Adam's update is 0 (m = 0), SGD's too; only the decay moves p
    assert _decays(opt, model)["0.weight"] == pytest.approx(1 - 0.05 / 0.1 * 0.2)
    report = opt.decay_report()
    assert report[0].decay_mode == "independent" and report[0].lam == 0.2


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("decay_scaling", "fan-in", ["param_groups[1]", "decay_scaling", "'fan-in'"]),
        ("decay_scaling", object, ["param_groups[1]", "decay_scaling"]),
        ("decay_mode", "bogus", ["param_groups[1]", "decay_mode", "'bogus'"]),
        ("weight_decay", -0.5, ["param_groups[1]", "weight_decay", "-0.5"]),
        ("lr", float("nan"), ["param_groups[1]", "lr", "nan"]),
        ("peak_lr", 0.0, ["param_groups[1]", "peak_lr", "0.0"]),
    ],
)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_bad_mid_run_edit_raises_at_the_step_and_changes_nothing(name, key, value, words):
    model = _model()
    groups = sd.param_groups(model, 0.5, decay_mode="independent")
    opt = OPTIMIZERS[name](groups)
    _decays(opt, model)
    state = {k: v.clone() for k, v in opt.state[model[0].weight].items()}
    before = [p.detach().clone() for p in model.parameters()]
    opt.param_groups[1][key] = value
    _zero_grads(model)
    with pytest.raises(ValueError) as info:
        opt.step()
    assert all(w in str(info.value) for w in words)
    for p, b in zip(model.parameters(), before):  # group 0 came first: untouched too
        assert torch.equal(p, b)
    for k, v in opt.state[model[0].weight].items():
        assert torch.equal(v, state[k])
    with pytest.raises(ValueError):
        opt.decay_report()


@given(wd=st.floats(0.0, 1.0), power=st.floats(-2.0, 2.0), lr=st.floats(1e-4, 1.0))
def test_edited_group_equals_a_fresh_optimizer_built_with_the_new_keys(wd, power, lr):
    rule = sd.FanIn(reference=3.0, power=power)
    edited = sd.AdamW(sd.param_groups(_model(), 0.1), lr=lr)
    for g in edited.param_groups:
        g.update(decay_scaling=rule, weight_decay=wd if g["weight_decay"] else 0.0)
    fresh = sd.AdamW(sd.param_groups(_model(), wd), lr=lr, decay_scaling=rule)
    for a, b in zip(edited.decay_report(), fresh.decay_report()):
        assert a == b


def _frozen_head_model():
    model = _model()
    for p in model[2].parameters():
        p.requires_grad_(False)
    return model


def test_add_param_group_of_plain_tensors_to_a_param_groups_optimizer():
    model = _frozen_head_model()
    opt = sd.AdamW(sd.param_groups(model, 0.1), decay_scaling="fan_in")
    for p in model[2].parameters():  # progressive unfreezing
        p.requires_grad_(True)
    opt.add_param_group({"params": model[2].parameters(), "weight_decay": 0.2})
    assert opt.param_groups[-1]["param_names"] == ["param_groups[2][0]", "param_groups[2][1]"]
    rows = {r.name: r for r in opt.decay_report()}
    row = rows["param_groups[2][0]"]
    assert (row.fan_in, row.fan_in_source) == (8, "shape")
    _decays(opt, model)
    opt.add_param_group({"params": nn.Parameter(torch.ones(2, 2))})  # one tensor
    assert opt.param_groups[-1]["param_names"] == ["param_groups[3][0]"]


def test_add_named_groups_to_an_unnamed_optimizer_names_the_old_groups():
    model = _frozen_head_model()
    opt = sd.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for p in model[2].parameters():
        p.requires_grad_(True)
    for group in sd.param_groups(model[2], 0.1):
        opt.add_param_group(group)
    assert opt.param_groups[0]["param_names"][0] == "param_groups[0][0]"
    assert [r.name for r in opt.decay_report()][-2:] == ["weight", "bias"]
    opt.add_param_group({"params": [("extra", nn.Parameter(torch.ones(3)))]})
    assert opt.param_groups[-1]["param_names"] == ["extra"]


def test_print_shows_per_tensor_lists_by_their_length():
    model = nn.Sequential(*[nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16)) for _ in range(12)])
    opt = sd.AdamW(sd.param_groups(model, 0.1), decay_scaling="fan_in")
    text = repr(opt)
    assert max(map(len, text.splitlines())) < 100
    assert "param_names: <12 per-tensor values>" in text and "fan_ins: <36" in text
    assert "betas: (0.9, 0.999)" in text and "decay_scaling: (FanIn(" in text
    assert "params: 12 tensors" in text and text.startswith("AdamW (")


def test_report_has_lr_source_and_reason_columns_and_a_group_summary():
    model = _model()
    opt = sd.SGD(
        sd.param_groups(model, 0.5), lr=0.1, decay_mode="independent", decay_scaling="fan_in"
    )
    report = opt.decay_report()
    header = str(report).splitlines()[0].split()
    assert header == [
        "group",
        "name",
        "shape",
        "fan_in",
        "fan_in_from",
        "scale",
        "lam",
        "lr",
        "decay_factor",
        "timescale",
        "dtype",
        "decay_kept",
        "no_decay",
    ]
    rows = {r.name: r for r in report}
    assert rows["0.weight"].fan_in_source == "Linear" and rows["0.weight"].lr == 0.1
    assert rows["1.weight"].no_decay_reason == "1-d" and rows["0.weight"].no_decay_reason is None
    g0, g1 = report.groups
    assert (g0.tensors, g0.elements, g0.lam_min, g0.lam_max) == (2, 32 + 24, 0.5 / 8, 0.5 / 4)
    assert (g1.tensors, g1.weight_decay, g1.peak_lr, g1.decay_scaling) == (
        4,
        0.0,
        0.1,
        "FanIn(reference=1.0, power=1.0)",
    )
    summary = str(report).split("\n\n")[1].splitlines()
    assert summary[0].split() == [
        "group",
        "tensors",
        "elements",
        "weight_decay",
        "decay_mode",
        "decay_scaling",
        "lr",
        "peak_lr",
        "lam",
    ]
    assert "0.0625 .. 0.125" in summary[2]
