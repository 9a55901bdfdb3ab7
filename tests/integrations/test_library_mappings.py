"""What ``weight_decay`` means in other libraries, and the sd arguments that reproduce it (the
README's table): each pair runs side by side on the same problem for 20 steps, with a constant
lr and under a warmup + cosine schedule, and must end at the same parameters. Libraries that
are not installed are skipped (timm: only in CI's torch 2.14.1 leg)."""

import inspect
import math

import pytest
import torch
from torch import nn

import scaled_decay as sd

LR, STEPS = 0.03, 20
# fp64 throughout: the libraries round differently (optimi's debiased betas, pytorch-optimizer's
# eps inside the bias correction); what must agree is the decay
TOL = dict(rtol=1e-9, atol=1e-11)


def _warmup_cosine(t):
    return (t + 1) / 5 if t < 4 else 0.5 * (1 + math.cos(math.pi * (t - 4) / (STEPS - 4)))


def _run(make, schedule: bool):
    """Final (weight, bias) of a 5x4 linear least-squares problem after STEPS steps."""
    g = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(5, 4, generator=g, dtype=torch.float64))
    b = nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))
    made = make([w, b])  # an optimizer, or (optimizer, a weight-decay scheduler)
    opt, wd_sched = made if isinstance(made, tuple) else (made, None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine) if schedule else None
    for _ in range(STEPS):
        x = torch.randn(8, 4, generator=g, dtype=torch.float64)
        y = torch.randn(8, 5, generator=g, dtype=torch.float64)
        opt.zero_grad()
        nn.functional.mse_loss(x @ w.T + b, y).backward()
        opt.step()
        if sched is not None:
            sched.step()
        if wd_sched is not None:
            wd_sched.step()
    return torch.cat([w.detach().flatten(), b.detach()])


def _check(theirs, ours, no_decay, schedule):
    """``ours`` reproduces ``theirs``; and the decay mattered: without it the run ends more
    than 1000x the tolerance away, so a wrong mapping cannot pass."""
    a, b = _run(theirs, schedule), _run(ours, schedule)
    torch.testing.assert_close(b, a, **TOL)
    gap = (_run(no_decay, schedule) - a).abs().max()
    assert gap > 1000 * (TOL["atol"] + TOL["rtol"] * a.abs().max())


both = pytest.mark.parametrize("schedule", [False, True], ids=["constant lr", "warmup+cosine"])


# ---- torch ----------------------------------------------------------------------------------
@both
def test_torch_adam_decoupled_weight_decay_is_sd_adamw(schedule):
    if "decoupled_weight_decay" not in inspect.signature(torch.optim.Adam).parameters:
        pytest.skip("torch.optim.Adam has no decoupled_weight_decay in this torch")
    _check(
        lambda p: torch.optim.Adam(p, lr=LR, weight_decay=0.1, decoupled_weight_decay=True),
        lambda p: sd.AdamW(p, lr=LR, weight_decay=0.1),
        lambda p: sd.AdamW(p, lr=LR, weight_decay=0.0),
        schedule,
    )


# ---- torch-optimi ---------------------------------------------------------------------------
ADAM = dict(betas=(0.9, 0.99), eps=1e-6)  # optimi's defaults, given to both


@both
@pytest.mark.parametrize("cls", ["AdamW", "Adam(decouple_wd=True)"])
def test_optimi_adamw_is_sd_adamw(schedule, cls):
    optimi = pytest.importorskip("optimi")
    make = (
        (lambda p, **k: optimi.AdamW(p, **k))
        if cls == "AdamW"
        else (lambda p, **k: optimi.Adam(p, decouple_wd=True, **k))
    )
    _check(
        lambda p: make(p, lr=LR, weight_decay=0.1, foreach=False, **ADAM),
        lambda p: sd.AdamW(p, lr=LR, weight_decay=0.1, **ADAM),
        lambda p: sd.AdamW(p, lr=LR, weight_decay=0.0, **ADAM),
        schedule,
    )


@both
def test_optimi_decouple_lr_is_sd_independent(schedule):
    """optimi: ``p *= 1 - (lr / max_lr) * weight_decay``, max_lr = the lr at construction."""
    optimi = pytest.importorskip("optimi")
    _check(
        lambda p: optimi.AdamW(
            p, lr=LR, weight_decay=1e-4, decouple_lr=True, foreach=False, **ADAM
        ),
        lambda p: sd.AdamW(p, lr=LR, weight_decay=1e-4, decay_mode="independent", **ADAM),
        lambda p: sd.AdamW(p, lr=LR, weight_decay=0.0, **ADAM),
        schedule,
    )


@both
def test_optimi_adam_l2_is_sd_adam(schedule):
    optimi = pytest.importorskip("optimi")
    _check(
        lambda p: optimi.Adam(p, lr=LR, weight_decay=0.1, foreach=False, **ADAM),
        lambda p: sd.Adam(p, lr=LR, weight_decay=0.1, **ADAM),
        lambda p: sd.Adam(p, lr=LR, weight_decay=0.0, **ADAM),
        schedule,
    )


@both
@pytest.mark.parametrize(
    "flag, mode", [("decouple_wd", "decoupled"), ("decouple_lr", "independent")]
)
def test_optimi_sgd_is_sd_sgd(schedule, flag, mode):
    optimi = pytest.importorskip("optimi")
    wd = 0.1 if mode == "decoupled" else 1e-4  # (optimi warns from 1e-3 up)
    _check(
        lambda p: optimi.SGD(
            p, lr=LR, momentum=0.9, weight_decay=wd, foreach=False, **{flag: True}
        ),
        lambda p: sd.SGD(p, lr=LR, momentum=0.9, weight_decay=wd, decay_mode=mode),
        lambda p: sd.SGD(p, lr=LR, momentum=0.9),
        schedule,
    )


# ---- pytorch-optimizer ----------------------------------------------------------------------
PO_ADAM = dict(betas=(0.9, 0.999), eps=1e-16)  # its eps sits inside the bias correction


@both
@pytest.mark.parametrize("kind", ["decoupled", "corrected", "l2"])
def test_pytorch_optimizer_adamc_is_sd(schedule, kind):
    """AdamC: decoupled ``lr * wd``; ``normalized=True`` groups ``lr**2 / max_lr * wd``
    (Defazio et al. 2025), max_lr = the lr at construction; ``weight_decouple=False``: L2."""
    po = pytest.importorskip("pytorch_optimizer")
    theirs = {
        "decoupled": lambda p: po.AdamC(p, lr=LR, weight_decay=0.1, **PO_ADAM),
        "corrected": lambda p: po.AdamC(
            [{"params": p, "normalized": True}], lr=LR, weight_decay=0.1, **PO_ADAM
        ),
        "l2": lambda p: po.AdamC(p, lr=LR, weight_decay=0.1, weight_decouple=False, **PO_ADAM),
    }[kind]
    ours = sd.Adam if kind == "l2" else sd.AdamW
    _check(
        theirs,
        lambda p: ours(p, lr=LR, weight_decay=0.1, decay_mode=kind, **PO_ADAM),
        lambda p: ours(p, lr=LR, weight_decay=0.0, decay_mode=kind, **PO_ADAM),
        schedule,
    )


@both
def test_pytorch_optimizer_fixed_decay_is_sd_independent_against_the_lr_schedule(schedule):
    """``fixed_decay=True``: ``p *= 1 - wd`` whatever the lr. sd's "independent" is
    ``(lr / eta0) * wd``: the same at a constant lr; under an lr schedule with factor f(t), a
    weight-decay schedule 1 / f(t) cancels it (README)."""
    po = pytest.importorskip("pytorch_optimizer")

    def ours(p):
        opt = sd.AdamW(p, lr=LR, weight_decay=1e-2, decay_mode="independent", **PO_ADAM)
        if not schedule:
            return opt
        # (the factor after the last step is never used: cosine reaches 0 there)
        return opt, sd.WeightDecayScheduler(opt, lambda t: 1 / _warmup_cosine(min(t, STEPS - 1)))

    _check(
        lambda p: po.AdamC(p, lr=LR, weight_decay=1e-2, fixed_decay=True, **PO_ADAM),
        ours,
        lambda p: sd.AdamW(p, lr=LR, weight_decay=0.0, **PO_ADAM),
        schedule,
    )


# ---- timm -----------------------------------------------------------------------------------
@both
def test_timm_corrected_weight_decay_is_sd_corrected(schedule):
    """timm's ``corrected_weight_decay=True``: ``lr**2 / max_lr * wd`` with max_lr the
    optimizer's lr at construction (sd: each group's peak lr; the same for one group)."""
    timm_optim = pytest.importorskip("timm.optim")
    cls = getattr(timm_optim, "AdamWLegacy", None)
    if cls is None or "corrected_weight_decay" not in inspect.signature(cls).parameters:
        pytest.skip("this timm has no AdamWLegacy(corrected_weight_decay=)")
    _check(
        lambda p: cls(p, lr=LR, weight_decay=0.1, corrected_weight_decay=True),
        lambda p: sd.AdamW(p, lr=LR, weight_decay=0.1, decay_mode="corrected"),
        lambda p: sd.AdamW(p, lr=LR, weight_decay=0.0),
        schedule,
    )
