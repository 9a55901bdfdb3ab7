"""sd.WeightDecayScheduler: each group's weight_decay follows its curve (Megatron's formulas),
reaches the update, rebuilds no plan, resumes bit for bit, and runs next to lr schedulers,
under transformers' Trainer and Lightning."""

import math

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as L

import scaled_decay as sd
from scaled_decay.step_plan import GroupPlan
from tests.helpers.checkpoints import save_load
from tests.helpers.framework_models import Tokens, hf_training_args, lightning_trainer, tiny_gpt2

WD, LR = 0.1, 0.05


def _megatron_wd(t, start, end, steps, style):
    """Megatron-LM's OptimizerParamScheduler.get_wd, written out independently."""
    if t > steps:
        return end
    ratio = t / steps
    coeff = ratio if style == "linear" else 0.5 * (math.cos(math.pi * (1 - ratio)) + 1.0)
    return start + coeff * (end - start)


def _opt(**kw):
    a = nn.Parameter(torch.ones(4, 3, dtype=torch.float64))
    b = nn.Parameter(torch.ones(4, dtype=torch.float64))
    return (
        sd.SGD(
            [{"params": [a]}, {"params": [b], "weight_decay": 0.0}], lr=LR, weight_decay=WD, **kw
        ),
        a,
        b,
    )


@pytest.mark.parametrize("style", ["linear", "cosine"])
def test_curves_follow_megatrons_formulas_and_reach_the_update(style):
    opt, a, b = _opt()
    sched = sd.WeightDecayScheduler(opt, style, total_steps=6, start_factor=0.1, end_factor=1.0)
    for t in range(10):
        want = _megatron_wd(t, 0.1 * WD, WD, 6, style)
        assert sched.get_last_wd() == [pytest.approx(want, rel=1e-14), 0.0]
        assert opt.param_groups[0]["weight_decay"] == pytest.approx(want, rel=1e-14)
        before = a.detach().clone()
        a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
        opt.step()
        torch.testing.assert_close(a.detach(), before * (1 - LR * want), rtol=1e-14, atol=0)
        assert torch.equal(b.detach(), torch.ones(4, dtype=torch.float64))  # a 0 group stays 0
        sched.step()
    assert opt.param_groups[0]["initial_weight_decay"] == WD


def test_constant_and_callable_schedules():
    opt, *_ = _opt()
    sched = sd.WeightDecayScheduler(opt, "constant", start_factor=0.5, end_factor=0.5)
    sched.step()
    assert sched.get_last_wd() == [0.5 * WD, 0.0]
    opt, *_ = _opt()
    sched = sd.WeightDecayScheduler(opt, [lambda t: 2.0**-t, lambda t: 1.0])
    for t in range(4):
        assert opt.param_groups[0]["weight_decay"] == WD * 2.0**-t
        sched.step()
    assert "_fns" not in sched.state_dict()  # callables are not state


def test_a_tensor_weight_decay_is_filled_in_place():
    p = nn.Parameter(torch.ones(3))
    opt = sd.AdamW([p], lr=LR, weight_decay=torch.tensor(WD))
    wd = opt.param_groups[0]["weight_decay"]
    sched = sd.WeightDecayScheduler(opt, "linear", total_steps=2, start_factor=0.0)
    sched.step()
    assert opt.param_groups[0]["weight_decay"] is wd and float(wd) == pytest.approx(WD / 2)


def _plans_built(monkeypatch, start=None):
    """The steps at which step plans were built over 10 steps, with a cosine weight-decay
    schedule from ``start`` (None: no schedule); s(p) must be computed once either way."""
    from scaled_decay import dispatch

    built, step = [], 0

    class Counting(GroupPlan):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            built.append(step)

    monkeypatch.setattr(dispatch, "GroupPlan", Counting)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 2))
    opt = sd.AdamW(sd.param_groups(model, WD), lr=LR, decay_scaling="fan_in", backend="foreach")
    lr_sched = L.CosineAnnealingLR(opt, T_max=10)
    sched = (
        None
        if start is None
        else sd.WeightDecayScheduler(opt, "cosine", total_steps=8, start_factor=start)
    )
    scales = None
    for _ in range(10):
        model(torch.randn(3, 6)).sum().backward()
        opt.step()
        opt.zero_grad()
        lr_sched.step()
        if sched is not None:
            sched.step()
        scales = scales or opt._plan._cache
        assert opt._plan._cache is scales  # s(p) computed once
    return built


def test_a_schedule_step_rebuilds_no_plan(monkeypatch):
    baseline = _plans_built(monkeypatch)
    assert max(baseline) <= 1  # (the first steps build: state appears)
    assert _plans_built(monkeypatch, start=0.25) == baseline
    # a factor that starts at 0 selects the non-decaying plan at step 0, the decaying one
    # at step 1; none is built after that
    assert max(_plans_built(monkeypatch, start=0.0)) <= 1


def _run(steps, save_at=None, state=None, start_factor=0.2):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 1))
    data = [(torch.randn(4, 5), torch.randn(4, 1)) for _ in range(steps)]
    opt = sd.AdamW(sd.param_groups(model, WD), lr=LR, decay_scaling="fan_in")
    lr_sched = L.CosineAnnealingLR(opt, T_max=steps)
    wd_sched = sd.WeightDecayScheduler(opt, "cosine", total_steps=steps, start_factor=start_factor)
    first = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        lr_sched.load_state_dict(state["lr"])
        wd_sched.load_state_dict(state["wd"])
        first = save_at
    for t in range(first, steps):
        if t == save_at and state is None:
            return save_load(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "lr": lr_sched.state_dict(),
                    "wd": wd_sched.state_dict(),
                }
            )
        x, y = data[t]
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        lr_sched.step()
        wd_sched.step()
    return model.state_dict()


def test_a_resumed_run_continues_bit_for_bit():
    whole = _run(12)
    resumed = _run(12, save_at=5, state=_run(12, save_at=5))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    # and the schedule mattered: a run without it ends elsewhere
    assert not _run(12, start_factor=1.0)["0.weight"].equal(whole["0.weight"])


def test_chained_with_an_lr_scheduler_is_one_scheduler():
    opt, a, b = _opt()
    chained = L.ChainedScheduler(
        [
            L.LinearLR(opt, start_factor=0.5, total_iters=4),
            sd.WeightDecayScheduler(opt, "linear", total_steps=4, start_factor=0.0),
        ]
    )
    for _ in range(4):
        a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
        opt.step()
        chained.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(LR)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(WD)
    assert chained.get_last_lr() == [pytest.approx(LR)] * 2
    saved = chained.state_dict()
    assert saved["_schedulers"][1]["last_epoch"] == 4


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(schedule="exponential"), ["schedule", "exponential"]),
        (dict(schedule="linear"), ["total_steps", "None"]),
        (dict(schedule="cosine", total_steps=0), ["total_steps", "0"]),
        (dict(schedule="linear", total_steps=3, start_factor=-1.0), ["start_factor", "-1.0"]),
        (dict(schedule="linear", total_steps=3, end_factor=float("inf")), ["end_factor", "inf"]),
        (dict(schedule="constant", start_factor=0.5), ["constant", "start_factor", "end_factor"]),
        (dict(schedule=[lambda t: 1.0]), ["1 callables for 2 param groups"]),
        (dict(schedule=lambda t: -1.0), ["factor at step 0", "param_groups[0]", "-1.0"]),
        (dict(schedule=3), ["schedule", "3"]),
        (dict(schedule="linear", total_steps=3, last_epoch=4), ["initial_weight_decay"]),
        (dict(schedule="linear", total_steps=3, last_epoch=-2), ["last_epoch", "-2"]),
    ],
)
def test_bad_input_raises_value_error_naming_it(kwargs, words):
    opt, *_ = _opt()
    with pytest.raises(ValueError) as info:
        sd.WeightDecayScheduler(opt, **kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_an_optimizer_without_weight_decay_is_refused():
    with pytest.raises(ValueError, match=r"param_groups\[0\] has no 'weight_decay'"):
        sd.WeightDecayScheduler(torch.optim.LBFGS([nn.Parameter(torch.ones(2))]), "constant")
    with pytest.raises(TypeError, match="not an Optimizer"):
        sd.WeightDecayScheduler(object(), "constant")


# ---- frameworks: one ChainedScheduler for transformers' Trainer, a list for Lightning -------
@pytest.mark.usefixtures("fresh_accelerate")
def test_under_transformers_trainer_as_a_chained_scheduler(tmp_path):
    pytest.importorskip("transformers")
    from transformers import Trainer, TrainerCallback

    seen = []

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kw):
            seen.append(optimizer.param_groups[0]["weight_decay"])

    model = tiny_gpt2(n_layer=1)
    opt = sd.AdamW(sd.param_groups(model, WD), lr=1e-3)
    sched = L.ChainedScheduler(
        [
            L.LambdaLR(opt, lambda t: 1 - t / 6),
            sd.WeightDecayScheduler(opt, "linear", total_steps=4, start_factor=0.0),
        ]
    )
    Trainer(
        model=model,
        args=hf_training_args(tmp_path, max_steps=5, per_device_train_batch_size=4),
        train_dataset=Tokens(),
        callbacks=[Record()],
        optimizers=(opt, sched),
    ).train()
    assert seen == [pytest.approx(WD * f) for f in (0.0, 0.25, 0.5, 0.75, 1.0)]


def test_under_lightning_next_to_an_lr_scheduler():
    lightning = pytest.importorskip("lightning")
    seen = []

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(4, 1)

        def training_step(self, batch, _):
            group = self.optimizers().param_groups[0]
            seen.append((group["lr"], group["weight_decay"]))
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            opt = sd.AdamW(self.parameters(), lr=LR, weight_decay=WD)
            return [opt], [
                {"scheduler": L.LinearLR(opt, 1.0, 0.5, total_iters=4), "interval": "step"},
                {
                    "scheduler": sd.WeightDecayScheduler(
                        opt, "cosine", total_steps=4, start_factor=0.0
                    ),
                    "interval": "step",
                },
            ]

    data = torch.utils.data.TensorDataset(torch.randn(10, 4), torch.randn(10, 1))
    lightning_trainer(max_steps=5).fit(Module(), torch.utils.data.DataLoader(data, batch_size=2))
    assert [wd for _, wd in seen] == [
        pytest.approx(_megatron_wd(t, 0.0, WD, 4, "cosine"), abs=1e-15) for t in range(5)
    ]
    assert [lr for lr, _ in seen] == [pytest.approx(LR * (1 - t / 8)) for t in range(4)] + [
        pytest.approx(LR / 2)
    ]
