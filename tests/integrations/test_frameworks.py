"""The package inside frameworks: transformers' Trainer (three routes), accelerate's wrapper
and its parameter swaps, Lightning's configure_optimizers, timm's create_optimizer_v2, and
sd.decay_report through each one's wrapper. Tiny models, a few CPU steps each."""

import copy

import pytest
import torch
from torch import nn

import scaled_decay as sd
from tests.helpers.framework_models import (
    Tokens,
    hf_training_args,
    import_timm,
    lightning_trainer,
    tiny_gpt2,
)

LR, WD = 1e-3, 0.1


def _decayed_row(report, name):
    return next(r for r in report if r.name == name)


# ---- transformers' Trainer ----------------------------------------------------------------
def _train(tmp_path, model, **trainer_kw):
    from transformers import Trainer, TrainerCallback

    seen = []

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kw):
            seen.append(sd.decay_report(optimizer))  # accelerate's wrapper

    args = hf_training_args(
        tmp_path,
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=LR,
        weight_decay=WD,
        warmup_steps=2,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=Tokens(), callbacks=[Record()], **trainer_kw
    )
    trainer.train()
    assert type(trainer.optimizer).__name__ == "AcceleratedOptimizer"
    return trainer, seen


def _check_gpt2(trainer, seen):
    rows = {r.name: r for r in sd.decay_report(trainer)}
    assert rows["transformer.h.0.attn.c_attn.weight"].fan_in == 16  # Conv1D: in, not 48
    assert rows["transformer.h.0.attn.c_attn.weight"].fan_in_source == "Conv1D"
    assert rows["transformer.h.0.ln_1.weight"].no_decay_reason == "1-d"
    # independent decay under the Trainer's warmup + linear decay: lam at the peak lr
    for report in seen:
        row = _decayed_row(report, "transformer.h.0.mlp.c_proj.weight")
        assert row.peak_lr == LR and row.lam == pytest.approx(WD / 64)
        assert 1 - row.decay_factor == pytest.approx(row.lam * row.lr / LR)
    assert max(_decayed_row(r, "transformer.wte.weight").lr for r in seen) == pytest.approx(LR)


def test_trainer_with_optimizers_given(tmp_path, fresh_accelerate):
    model = tiny_gpt2(n_layer=1)
    opt = sd.AdamW(
        sd.param_groups(model, WD), lr=LR, decay_mode="independent", decay_scaling="fan_in"
    )
    _check_gpt2(*_train(tmp_path, model, optimizers=(opt, None)))


def test_trainer_factory_route_gets_the_model(tmp_path, fresh_accelerate):
    model = tiny_gpt2(n_layer=1)
    factory = sd.trainer_factory(sd.AdamW)
    trainer, seen = _train(
        tmp_path,
        model,
        optimizer_cls_and_kwargs=(
            factory,
            {
                "lr": LR,
                "weight_decay": WD,
                "decay_mode": "independent",
                "decay_scaling": "fan_in",
                "no_decay": ["transformer.wpe.weight"],
            },
        ),
    )
    _check_gpt2(trainer, seen)
    assert _decayed_row(seen[0], "transformer.wpe.weight").no_decay_reason == "no_decay"
    assert isinstance(sd.decay_report(trainer), sd.DecayReport)
    with pytest.raises(ValueError, match="weight_decay"):
        factory()(model, lr=LR)
    with pytest.raises(ValueError, match="optimizer class"):
        sd.trainer_factory("adamw")


def test_trainer_optimizer_cls_route_uses_the_trainers_groups(tmp_path, fresh_accelerate):
    from transformers import Trainer

    model = tiny_gpt2(n_layer=1)
    trainer, _ = _train(
        tmp_path, model, optimizer_cls_and_kwargs=(sd.AdamW, {"lr": LR, "decay_scaling": "fan_in"})
    )
    report = sd.decay_report(trainer)
    decayed = {
        id(p) for g in trainer.optimizer.param_groups if g["weight_decay"] for p in g["params"]
    }
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[i] for i in decayed} == set(Trainer.get_decay_parameter_names(None, model)) & set(
        names.values()
    )
    # no names, no modules: the fan-in of Conv1D comes from its (in, out) shape, and the report
    # says so (use sd.trainer_factory for module-aware fan-ins)
    conv = next(r for r in report if r.shape == (16, 48))
    assert (conv.fan_in, conv.fan_in_source, conv.name) == (48, "shape", None)


# ---- accelerate ---------------------------------------------------------------------------
def test_accelerate_wrapper_report_and_parameter_swaps(fresh_accelerate):
    from accelerate import Accelerator

    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2))
    opt = sd.SGD(sd.param_groups(model, WD), lr=0.1, decay_scaling="fan_in")
    model, wrapped = Accelerator(cpu=True).prepare(model, opt)
    assert wrapped is not opt and wrapped.optimizer is opt
    assert [r.name for r in sd.decay_report(wrapped)] == [r.name for r in opt.decay_report()]
    # accelerate swaps the optimizer's tensors for the prepared model's (TPU, TP, FSDP2, fp8)
    twin = copy.deepcopy(model)
    wrapped._switch_parameters(dict(zip(model.parameters(), twin.parameters())))
    before = {n: p.detach().clone() for n, p in twin.named_parameters()}
    for p in twin.parameters():
        p.grad = torch.zeros_like(p)
    wrapped.step()
    params = dict(twin.named_parameters())
    torch.testing.assert_close(params["0.weight"], before["0.weight"] * (1 - 0.1 * WD / 4))
    torch.testing.assert_close(params["2.weight"], before["2.weight"] * (1 - 0.1 * WD / 6))
    torch.testing.assert_close(params["1.weight"], before["1.weight"])
    # a swap that breaks the per-tensor lists is an error, not a misaligned decay
    opt.param_groups[0]["params"] = opt.param_groups[0]["params"][:1]
    with pytest.raises(ValueError, match=r"fan_ins.*one entry per parameter"):
        wrapped.step()


def test_decay_report_of_something_else_is_a_clear_error():
    opt = torch.optim.AdamW([nn.Parameter(torch.ones(2))])
    with pytest.raises(ValueError, match="AdamW is not, and does not wrap"):
        sd.decay_report(opt)
    with pytest.raises(ValueError, match="2 optimizers"):
        sd.decay_report(type("T", (), {"optimizers": [opt, opt]})())


# ---- Lightning ----------------------------------------------------------------------------
def test_lightning_configure_optimizers_with_one_cycle():
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))
            self.reports = []

        def training_step(self, batch, _):
            self.reports.append(sd.decay_report(self.optimizers()))  # LightningOptimizer
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            opt = sd.AdamW(
                sd.param_groups(self, WD), lr=LR, decay_mode="independent", decay_scaling="fan_in"
            )
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4 * LR, total_steps=6)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(12, 4), torch.randn(12, 1))
    module = Module()
    trainer = lightning_trainer(max_steps=6)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2))
    assert len(module.reports) == 6
    for report in module.reports:
        row = _decayed_row(report, "net.2.weight")
        assert row.fan_in == 8 and row.peak_lr == 4 * LR  # OneCycleLR's max_lr
        assert 1 - row.decay_factor == pytest.approx(WD / 8 * row.lr / (4 * LR))
    assert _decayed_row(sd.decay_report(trainer), "net.1.weight").no_decay_reason == "1-d"


# ---- timm ---------------------------------------------------------------------------------
def _vit():
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3, mlp_ratio=2
    )


def test_timm_create_optimizer_v2_builds_the_registered_classes():
    import_timm()
    from timm.optim import Lookahead, create_optimizer_v2

    names = sd.register_timm_optimizers()
    assert names == sd.register_timm_optimizers()  # twice is harmless
    assert all("_" not in name for name in names)  # timm cuts names at "_"
    for name, cls in names.items():
        opt = create_optimizer_v2(_vit(), name, lr=LR, weight_decay=WD, decay_scaling="fan_in")
        assert type(opt) is cls
    sgd = create_optimizer_v2(_vit(), "scaledsgd", lr=LR)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9  # as timm's "sgd"
    assert not create_optimizer_v2(_vit(), "scaledmomentum", lr=LR).defaults["nesterov"]
    # the hazard the names avoid: "sd_adamw" is read as timm's own "adamw"
    assert not isinstance(create_optimizer_v2(_vit(), "sd_adamw", lr=LR), sd.AdamW)
    look = create_optimizer_v2(_vit(), "lookahead_scaledadamw", lr=LR, weight_decay=WD)
    assert isinstance(look, Lookahead) and isinstance(look._base_optimizer, sd.AdamW)
    assert len(sd.decay_report(look)) == len(list(_vit().parameters()))


def test_timm_grouping_and_param_group_fn():
    import_timm()
    from timm.optim import create_optimizer_v2

    sd.register_timm_optimizers()
    model = _vit()
    opt = create_optimizer_v2(model, "scaledadamw", lr=LR, weight_decay=WD, decay_scaling="fan_in")
    by_timm = {id(p) for g in opt.param_groups if g["weight_decay"] for p in g["params"]}
    opt = create_optimizer_v2(
        model,
        "scaledadamw",
        lr=LR,
        decay_scaling="fan_in",
        param_group_fn=lambda m: sd.param_groups(m, WD),
    )
    assert {id(p) for p in opt.param_groups[0]["params"]} == by_timm
    rows = {r.name: r for r in sd.decay_report(opt)}
    assert rows["blocks.0.mlp.fc2.weight"].lam == pytest.approx(WD / 32)
    assert rows["pos_embed"].no_decay_reason == "model"


def test_timm_name_taken_by_another_class_is_refused():
    import_timm()
    from timm.optim._optim_factory import OptimInfo, OptimizerRegistry

    registry = OptimizerRegistry()
    registry.register(OptimInfo(name="scaledadamw", opt_class=torch.optim.AdamW))
    with pytest.raises(ValueError, match="scaledadamw"):
        sd.register_timm_optimizers(registry)
