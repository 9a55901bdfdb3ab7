"""eta0 of decay_mode "independent"/"corrected" is the peak lr under every torch and HF
scheduler: the decay per step at the schedule's peak is exactly lam (c = (eta / eta0) * lam,
and (eta ** 2 / eta0) * lam for corrected, with eta0 the peak lr)."""

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as L

import scaled_decay as sd

LR, WD = 0.1, 0.01


def _cyclic(opt):
    return L.CyclicLR(opt, base_lr=0.01, max_lr=LR, step_size_up=3, cycle_momentum=False)


TORCH = {
    "LambdaLR warmup": lambda o: L.LambdaLR(o, lambda s: min(1.0, (s + 1) / 5)),
    "LinearLR warmup": lambda o: L.LinearLR(o, start_factor=0.1, total_iters=5),
    "SequentialLR": lambda o: L.SequentialLR(
        o, [L.LinearLR(o, 0.2, total_iters=3), L.CosineAnnealingLR(o, T_max=10)], [3]
    ),
    "CosineAnnealingLR": lambda o: L.CosineAnnealingLR(o, T_max=10),
    "CosineAnnealingWarmRestarts": lambda o: L.CosineAnnealingWarmRestarts(o, T_0=4),
    "StepLR": lambda o: L.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda o: L.MultiStepLR(o, milestones=[2, 5]),
    "ExponentialLR": lambda o: L.ExponentialLR(o, gamma=0.9),
    "PolynomialLR": lambda o: L.PolynomialLR(o, total_iters=10),
    "ConstantLR": lambda o: L.ConstantLR(o, factor=0.5, total_iters=3),
    "ReduceLROnPlateau": lambda o: L.ReduceLROnPlateau(o, patience=1),
    "OneCycleLR": lambda o: L.OneCycleLR(o, max_lr=LR, total_steps=15),
    "OneCycleLR, max_lr above lr": lambda o: L.OneCycleLR(o, max_lr=3 * LR, total_steps=15),
    "CyclicLR, built at max_lr": _cyclic,
}
HF = {
    "linear": {},
    "cosine": {},
    "cosine_with_restarts": {},
    "polynomial": {},
    "constant": {},
    "constant_with_warmup": {},
    "inverse_sqrt": {},
    "reduce_lr_on_plateau": {},
    "cosine_with_min_lr": {"min_lr_rate": 0.1},
    "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1},
    "warmup_stable_decay": {"num_decay_steps": 4},
}


def _hf(name):
    def make(opt):
        from transformers import get_scheduler

        return get_scheduler(
            name, opt, num_warmup_steps=3, num_training_steps=14, scheduler_specific_kwargs=HF[name]
        )

    return make


def _run(make_sched, mode="independent", steps=15, **group):
    """Per step: (lr, c) with c the multiplicative decay the step applied (checked on p)."""
    p = nn.Parameter(torch.ones(3, 2, dtype=torch.float64))
    opt = sd.SGD([dict(params=[p], **group)], lr=LR, weight_decay=WD, decay_mode=mode)
    sched = make_sched(opt)
    out = []
    for _ in range(steps):
        row = sd.decay_report(opt)[0]
        before = p.detach().clone()
        p.grad = torch.zeros_like(p)
        opt.step()
        torch.testing.assert_close(p.detach(), before * row.decay_factor, rtol=1e-14, atol=0)
        out.append((opt.param_groups[0]["lr"], 1.0 - row.decay_factor))
        sched.step(1.0) if isinstance(sched, L.ReduceLROnPlateau) else sched.step()
    return out


def _check_peak(history, at_peak, peak=LR):
    """c = lam * lr / peak at every step: exactly lam at the schedule's peak lr."""
    assert max(lr for lr, _ in history) <= peak * (1 + 1e-12)
    for lr, c in history:
        assert c == pytest.approx(at_peak * lr / peak, rel=1e-6)


@pytest.mark.parametrize("name", sorted(TORCH))
def test_independent_decays_lam_per_step_at_the_peak_of_torch_schedulers(name):
    history = _run(TORCH[name])
    assert len({lr for lr, _ in history}) > 1  # the schedule moved lr
    _check_peak(history, WD, peak=3 * LR if "above" in name else LR)


@pytest.mark.parametrize("name", sorted(HF))
def test_independent_decays_lam_per_step_at_the_peak_of_hf_schedulers(name):
    pytest.importorskip("transformers")
    _check_peak(_run(_hf(name)), WD)


def test_one_cycle_keeps_max_lr_and_corrected_mode_uses_it_too():
    # before: eta0 = initial_lr, which OneCycleLR sets to max_lr / 25 (25x the decay)
    history = _run(TORCH["OneCycleLR, max_lr above lr"], mode="corrected")
    peak = 3 * LR
    for lr, c in history:
        assert c == pytest.approx(lr * lr / peak * WD, rel=1e-6)


def test_cyclic_lr_above_the_built_lr_is_an_error_unless_peak_lr_is_set():
    with pytest.raises(ValueError, match=r"param_groups\[0\].*above the peak lr.*peak_lr"):
        _run(
            lambda o: L.CyclicLR(
                o, base_lr=0.001, max_lr=10 * LR, step_size_up=3, cycle_momentum=False
            )
        )
    history = _run(
        lambda o: L.CyclicLR(
            o, base_lr=0.001, max_lr=10 * LR, step_size_up=3, cycle_momentum=False
        ),
        peak_lr=10 * LR,
    )
    _check_peak(history, WD, peak=10 * LR)
    # decoupled decay does not divide by a peak: lr may go anywhere
    _run(
        lambda o: L.CyclicLR(
            o, base_lr=0.001, max_lr=10 * LR, step_size_up=3, cycle_momentum=False
        ),
        mode="decoupled",
    )


def test_peak_lr_is_set_at_construction_and_reported():
    opt = sd.AdamW(
        [
            {"params": [nn.Parameter(torch.ones(2))]},
            {"params": [nn.Parameter(torch.ones(2))], "lr": 0.5, "initial_lr": 0.7},
        ],
        lr=torch.tensor(0.2),
        decay_mode="independent",
    )
    g0, g1 = opt.param_groups
    assert float(g0["peak_lr"]) == pytest.approx(0.2) and g0["peak_lr"] is not g0["lr"]
    assert g1["peak_lr"] == 0.7  # an initial_lr given with the group is its eta0
    report = opt.decay_report()
    assert [g.peak_lr for g in report.groups] == [pytest.approx(0.2), 0.7]
    assert sd.AdamW([nn.Parameter(torch.ones(2))]).decay_report()[0].peak_lr is None


@pytest.mark.parametrize(
    "group, words",
    [
        ({"peak_lr": 0.0}, ["peak_lr", "0.0", "positive"]),
        ({"peak_lr": -1.0}, ["peak_lr", "-1.0"]),
        ({"peak_lr": 0.05}, ["lr = 0.1", "peak_lr = 0.05"]),
        ({"max_lr": float("nan")}, ["max_lr", "nan"]),
    ],
)
def test_bad_peak_lr_raises_value_error(group, words):
    with pytest.raises(ValueError) as info:
        sd.SGD(
            [dict(params=[nn.Parameter(torch.ones(2))], **group)], lr=LR, decay_mode="independent"
        )
    assert all(w in str(info.value) for w in words)


def test_loading_a_torch_state_dict_takes_its_lr_as_the_peak():
    p = nn.Parameter(torch.ones(2))
    opt = sd.AdamW([p], lr=0.01, decay_mode="independent")
    opt.load_state_dict(torch.optim.AdamW([p], lr=0.02).state_dict())
    assert opt.param_groups[0]["peak_lr"] == 0.02 and opt.param_groups[0]["initial_lr"] == 0.02
    saved = sd.AdamW([p], lr=0.03, decay_mode="independent").state_dict()
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["peak_lr"] == 0.03
