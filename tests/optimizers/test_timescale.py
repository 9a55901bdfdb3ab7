"""timescale= instead of weight_decay= (Wang & Aitchison 2024): at the peak lr one step shrinks
an s(p) = 1 tensor by exactly 1/T, in every multiplicative mode, for every optimizer class and
group; sd.Timescale's units; decay_report's timescale column; conflicts and bad values."""

import re

import pytest
import torch
from torch import nn

import scaled_decay as sd
from tests.helpers.checkpoints import save_load

LR = 0.02
CLASSES = {
    "SGD": sd.SGD,
    "AdamW": sd.AdamW,
    "Adam": lambda *a, **k: sd.Adam(*a, decay_mode=k.pop("decay_mode"), **k),
    "wrapped RAdam": sd.with_scaled_decay(torch.optim.RAdam),
}


def _shrink_per_step(opt, p, steps=3):
    """What each zero-gradient step multiplied p by (constant: the lr stays at its peak)."""
    factors = []
    for _ in range(steps):
        before = p.detach().clone()
        p.grad = torch.zeros_like(p)
        opt.step()
        factors.append(float((p.detach() / before).mean()))
    return factors


@pytest.mark.parametrize("name", sorted(CLASSES))
@pytest.mark.parametrize("mode", ["decoupled", "independent", "corrected"])
def test_one_step_at_the_peak_lr_removes_one_timescale_th(name, mode):
    p = nn.Parameter(torch.full((3, 2), 2.0, dtype=torch.float64))
    opt = CLASSES[name]([p], lr=LR, timescale=250, decay_mode=mode)
    want = 1 / 250 if mode == "independent" else 1 / (LR * 250)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(want, rel=1e-15)
    assert opt.param_groups[0]["timescale"] == 250.0
    for f in _shrink_per_step(opt, p):
        assert f == pytest.approx(1 - 1 / 250, rel=1e-14)


def test_units_of_sd_timescale():
    p = nn.Parameter(torch.ones(2))

    def wd(ts):
        return sd.AdamW([p], lr=LR, timescale=ts).param_groups[0]["weight_decay"]

    assert wd(sd.Timescale(epochs=0.5, steps_per_epoch=400)) == wd(200) == wd(200.0)
    assert wd(sd.Timescale(fraction=0.1, total_steps=2000)) == wd(sd.Timescale(steps=200))


def test_each_group_gets_its_own_lambda_from_its_own_peak_lr():
    a, b, c, d = (nn.Parameter(torch.ones(2)) for _ in range(4))
    opt = sd.AdamW(
        [
            {"params": [a]},
            {"params": [b], "lr": 4 * LR},
            {"params": [c], "lr": LR / 10, "initial_lr": LR},  # built mid-warmup
            {"params": [d], "weight_decay": 0.0},
        ],
        lr=LR,
        timescale=100,
    )
    wds = [g["weight_decay"] for g in opt.param_groups]
    assert wds == [
        pytest.approx(1 / (LR * 100)),
        pytest.approx(1 / (4 * LR * 100)),
        pytest.approx(1 / (LR * 100)),
        0.0,
    ]
    assert opt.param_groups[3]["timescale"] is None  # its own weight_decay wins
    opt.add_param_group({"params": [nn.Parameter(torch.ones(2))], "timescale": 10})
    assert opt.param_groups[4]["weight_decay"] == pytest.approx(1 / (LR * 10))


def test_param_groups_and_the_report_show_the_timescale_per_tensor():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    ts = sd.Timescale(epochs=0.5, steps_per_epoch=200)
    opt = sd.AdamW(sd.param_groups(model, timescale=ts), lr=LR, decay_scaling="fan_in")
    rows = {r.name: r for r in opt.decay_report()}
    # s(p) = 1 / fan_in: tau = T / s(p) = 100 * fan_in steps
    assert rows["0.weight"].timescale == pytest.approx(400)
    assert rows["2.weight"].timescale == pytest.approx(800)
    assert rows["1.weight"].timescale is None and rows["0.bias"].weight_decay == 0.0
    assert "timescale" in str(opt.decay_report()).splitlines()[0]
    plain = sd.AdamW(model.parameters(), lr=LR, weight_decay=0.1).decay_report()[0]
    assert plain.timescale == pytest.approx(1 / (LR * 0.1))  # shown for any weight decay
    assert sd.Adam(model.parameters(), weight_decay=0.1).decay_report()[0].timescale is None


def test_state_dict_is_plain_and_a_schedule_moves_the_derived_value():
    p = nn.Parameter(torch.ones(2))
    opt = sd.AdamW([p], lr=LR, timescale=sd.Timescale(fraction=0.5, total_steps=100))
    loaded = save_load(opt.state_dict())
    assert loaded["param_groups"][0]["timescale"] == 50.0
    other = sd.AdamW([p], lr=LR)
    other.load_state_dict(loaded)
    assert other.param_groups[0]["weight_decay"] == pytest.approx(1 / (LR * 50))
    sched = sd.WeightDecayScheduler(opt, "linear", total_steps=2, start_factor=0.5)
    assert sched.get_last_wd() == [pytest.approx(0.5 / (LR * 50))]


@pytest.mark.parametrize(
    "make, words",
    [
        (
            lambda p: sd.AdamW(p, lr=LR, weight_decay=1e-2, timescale=10),  # even the default value
            ["timescale=10", "weight_decay=0.01", "both"],
        ),
        (lambda p: sd.SGD(p, 0.1, 0.0, 0.0, 0.1, timescale=10), ["timescale", "weight_decay"]),
        (
            lambda p: sd.AdamW([{"params": p, "weight_decay": 0.1, "timescale": 5}], lr=LR),
            ["timescale=5", "weight_decay=0.1"],
        ),
        (
            lambda p: sd.with_scaled_decay(torch.optim.NAdam)(p, weight_decay=0.1, timescale=3),
            ["timescale=3", "weight_decay=0.1"],
        ),
        (lambda p: sd.param_groups(nn.Linear(2, 2), 0.1, timescale=3), ["timescale", "both"]),
        (lambda p: sd.param_groups(nn.Linear(2, 2)), ["weight_decay", "None"]),
        (lambda p: sd.AdamW(p, timescale=0), ["timescale", "0"]),
        (lambda p: sd.AdamW(p, timescale=float("nan")), ["timescale", "nan"]),
        (lambda p: sd.AdamW(p, timescale="long"), ["timescale", "long"]),
        (lambda p: sd.AdamW(p, lr=0.0, timescale=5), ["peak lr", "0.0"]),
        (lambda p: sd.Adam(p, timescale=5), ["timescale", "decay_mode='l2'"]),
        (lambda p: sd.Timescale(), ["exactly one"]),
        (lambda p: sd.Timescale(steps=3, epochs=1, steps_per_epoch=3), ["exactly one"]),
        (lambda p: sd.Timescale(epochs=2), ["steps_per_epoch"]),
        (lambda p: sd.Timescale(fraction=0.1), ["total_steps"]),
        (lambda p: sd.Timescale(epochs=-1, steps_per_epoch=3), ["epochs", "-1"]),
    ],
)
def test_bad_input_raises_value_error_naming_it(make, words):
    with pytest.raises(ValueError) as info:
        make([nn.Parameter(torch.ones(2))])
    assert all(w in str(info.value) for w in words), str(info.value)


def test_a_failed_add_param_group_changes_nothing():
    opt = sd.AdamW([nn.Parameter(torch.ones(2))], lr=LR, timescale=5)
    with pytest.raises(ValueError, match="decay_mode='l2'"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))], "decay_mode": "l2"})
    assert len(opt.param_groups) == 1


def test_the_readmes_data_size_script_runs_and_derives_lambda_from_tau_epoch(tmp_path):
    """benchmarks/timescale_data_size/timescale_data_size.py (the README's table) at a tiny
    scale: each run's weight decay is 1 / (lr * tau_epoch * M), M from its own data size."""
    import importlib.util
    import json
    from pathlib import Path

    pytest.importorskip("mnist1d")
    path = (
        Path(__file__).resolve().parents[2]
        / "benchmarks"
        / "timescale_data_size"
        / "timescale_data_size.py"
    )
    spec = importlib.util.spec_from_file_location("timescale_data_size", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--sizes", "128", "512", "--epochs", "1", "--seeds", "1", "--out", str(tmp_path)])
    runs = json.loads((tmp_path / "timescale_data_size.json").read_text())["runs"]
    assert {r["steps_per_epoch"] for r in runs} == {2, 8}
    for r in runs:
        want = (
            0.0
            if r["tau_epoch"] is None
            else 1 / (script.LR * r["tau_epoch"] * r["steps_per_epoch"])
        )
        assert r["weight_decay"] == pytest.approx(want, rel=1e-12)
    assert (
        "| tau_epoch (`sd.Timescale(epochs=...)`) |"
        in (tmp_path / "timescale_data_size.md").read_text()
    )


def test_trainer_factory_takes_a_timescale():
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    opt = sd.trainer_factory(sd.AdamW)()(model, lr=LR, timescale=50)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(1 / (LR * 50))
    assert opt.param_groups[1]["weight_decay"] == 0.0 and opt.param_groups[1]["timescale"] is None
    with pytest.raises(ValueError, match=re.escape("timescale=50 and weight_decay=0.1")):
        sd.trainer_factory(sd.AdamW)()(model, lr=LR, timescale=50, weight_decay=0.1)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_group_dicts_reused_in_a_second_optimizer_derive_lambda_again(name):
    # torch.optim keeps (and back-fills) the group dicts it is given, so a second optimizer
    # built on the same dicts finds the derived weight_decay beside the timescale: it derives
    # it again from its group's lr (torch's classes back-fill the first's lr into the dicts;
    # with_scaled_decay's copy them) instead of calling it a conflict.
    p = nn.Parameter(torch.ones(4))
    groups = [{"params": [p], "timescale": 50, "decay_mode": "decoupled"}]
    first = CLASSES[name](groups, lr=LR, decay_mode="decoupled")
    second = CLASSES[name](groups, lr=2 * LR, decay_mode="decoupled")
    for opt in (first, second):
        group = opt.param_groups[0]
        assert group["weight_decay"] == pytest.approx(1 / (group["lr"] * 50))
    assert _shrink_per_step(second, p, steps=1)[0] == pytest.approx(1 - 1 / 50)
    groups[0]["weight_decay"] = 0.3  # one the user set by hand still conflicts
    with pytest.raises(ValueError, match="both timescale"):
        CLASSES[name](groups, lr=LR, decay_mode="decoupled")
