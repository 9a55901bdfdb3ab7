"""Shared sweeps: an arm read off another arm's sweep must equal the arm trained itself."""

import pytest

from scaled_decay.transfer.archs import Net
from scaled_decay.transfer.models import Arm, decay_signature
from scaled_decay.transfer.runner import build_chains
from scaled_decay.transfer.settings import StudySettings
from scaled_decay.transfer.sweeps import plan_sweeps, proportional_factor
from scaled_decay.transfer.train import RunSpec, train_run

TINY = dict(
    dataset="mnist1d",
    widths=(8, 32),
    n_train=128,
    data_sizes=(64, 256),
    data_width=8,
    epochs=1,
    batch_size=32,
    seeds=1,
)


def _spec(chain, value, arm, lam, s):
    return RunSpec(
        dataset=s.dataset,
        n_train=chain.n_train_at(value),
        width=chain.width_at(value),
        base_width=s.base_width,
        arm=arm,
        weight_decay=lam,
        seed=3,
        epochs=s.epochs,
        batch_size=s.batch_size,
        lr=s.lr[chain.optimizer],
        pool_needed=s.needed_pool(),
    )


@pytest.mark.parametrize("axis", ["width", "data"])
def test_relabelled_lambda_axis_equals_a_retrained_run(axis, tmp_path):
    s = StudySettings(**TINY, axes=(axis,))
    checked = 0
    for chain in build_chains(s):
        value = chain.values[-1]
        for plan in plan_sweeps(
            chain,
            value,
            net=Net(),
            base_width=s.base_width,
            lr=s.lr[chain.optimizer],
            epochs=s.epochs,
            batch_size=s.batch_size,
        ):
            lam_rep = 0.7 if chain.optimizer == "adamw" else 0.05
            rep = train_run(_spec(chain, value, plan.rep, lam_rep, s), str(tmp_path))
            for arm, factor in plan.factors.items():
                if arm == plan.rep:
                    continue
                own = train_run(_spec(chain, value, arm, lam_rep / factor, s), str(tmp_path))
                assert own["holdout_nll"] == pytest.approx(rep["holdout_nll"], rel=1e-5), (
                    arm.label,
                    plan.rep.label,
                )
                checked += 1
    assert checked >= (16 if axis == "width" else 8)  # every arm that is not its own rep


def test_arms_that_are_not_proportional_get_their_own_sweep():
    # under SP at width 4x the base, FanIn(1) decays hidden weights 4x less than none
    kw = dict(net=Net(), width=256, base_width=64, lr=0.1)
    none = decay_signature(Arm("sgd", "sp", "none", "decoupled"), **kw)
    fan_in = decay_signature(Arm("sgd", "sp", "fan_in", "decoupled"), **kw)
    assert proportional_factor(fan_in, none) is None
    assert fan_in["hidden.weight"] == pytest.approx(none["hidden.weight"] / 4)
    assert fan_in["input.weight"] == pytest.approx(none["input.weight"])
    # independent mode differs from decoupled only by the global lr under SP
    indep = decay_signature(Arm("sgd", "sp", "none", "independent"), **kw)
    assert proportional_factor(indep, none) == pytest.approx(1 / 0.1)
    # ParamCount(reference=N(base)) is a global factor N(base)/N(n) on plain decay
    pc = decay_signature(Arm("sgd", "sp", "param_count", "decoupled"), **kw)
    n_base = 41 * 64 + 65 * 64 + 65 * 10
    n = 41 * 256 + 257 * 256 + 257 * 10
    assert proportional_factor(pc, none) == pytest.approx(n_base / n)


def test_at_the_base_width_every_rule_is_plain_decay():
    # rules are referenced to the base model, so at the base width they all give each
    # tensor exactly weight_decay: one sweep per chain, decoupled arms with factor 1,
    # independent arms with factor 1/lr (their lambda is lr times larger per step)
    s = StudySettings(**TINY, axes=("width",))
    for chain in build_chains(s):
        plans = plan_sweeps(
            chain,
            s.base_width,
            net=Net(),
            base_width=s.base_width,
            lr=s.lr[chain.optimizer],
            epochs=1,
            batch_size=32,
        )
        assert len(plans) == 1 and len(plans[0].factors) == len(chain.arms) == 8
        for arm, factor in plans[0].factors.items():
            expected = 1.0 if arm.mode == "decoupled" else 1 / s.lr[chain.optimizer]
            assert factor == pytest.approx(expected, rel=1e-12), arm.label
