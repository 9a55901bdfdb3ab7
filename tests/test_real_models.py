"""sd.param_groups on real models, built tiny from configs with random weights (nothing is
downloaded): fan-ins against values worked out by hand from each config, and the no-decay
split against the framework's own (transformers' Trainer, timm's param_groups_weight_decay).
"""
import warnings

import pytest

import scaled_decay as sd
from framework_models import import_timm, tiny_bert, tiny_gpt2, tiny_llama

WD = 0.1


def _groups(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real models: no fan-in comes from the shape fallback
        return sd.param_groups(model, WD)


def _fan_ins(groups):
    return {n: f for g in groups for n, f in zip(g["param_names"], g["fan_ins"])}


def _check(model, by_hand, others=1):
    """Every tensor named in ``by_hand`` has that fan-in; all others ``others``."""
    groups = _groups(model)
    fan_ins = _fan_ins(groups)
    assert fan_ins == {n: by_hand.get(n, others) for n, _ in model.named_parameters()}
    opt = sd.AdamW(groups, decay_scaling="fan_in")
    for row in opt.decay_report():
        assert row.lam == pytest.approx(WD / row.fan_in if row.group == 0 else 0.0)
    return groups


def _hf_decayed(model):
    from transformers import Trainer
    names = {n for n, _ in model.named_parameters()}  # tied weights once, as here
    return set(Trainer.get_decay_parameter_names(None, model)) & names  # does not use self


# ---- transformers -------------------------------------------------------------------------
def test_gpt2_conv1d_fan_in_is_its_input_size():
    model = tiny_gpt2()  # n_embd 16, n_inner 64, vocab 50, 8 positions, 2 layers
    by_hand = {"transformer.wte.weight": 50, "transformer.wpe.weight": 8}
    for i in range(2):
        h = f"transformer.h.{i}."
        by_hand.update({h + "attn.c_attn.weight": 16,   # stored (16, 48): in = 16, not 48
                        h + "attn.c_proj.weight": 16,
                        h + "mlp.c_fc.weight": 16,      # stored (16, 64)
                        h + "mlp.c_proj.weight": 64})   # stored (64, 16)
    groups = _check(model, by_hand)
    sources = {n: s for g in groups for n, s in zip(g["param_names"], g["fan_in_sources"])}
    assert sources["transformer.h.0.mlp.c_fc.weight"] == "Conv1D"
    assert set(groups[0]["param_names"]) == _hf_decayed(model)
    text = repr(sd.AdamW(groups, decay_scaling="fan_in"))  # was 589-character lines
    assert max(map(len, text.splitlines())) < 80 and "<18 per-tensor values>" in text


def test_llama_rmsnorm_weights_are_not_decayed():
    model = tiny_llama()  # hidden 16, intermediate 24, vocab 50, 1 layer
    layer = "model.layers.0."
    by_hand = {"model.embed_tokens.weight": 50, "lm_head.weight": 16,
               **{layer + f"self_attn.{p}_proj.weight": 16 for p in "qkvo"},
               layer + "mlp.gate_proj.weight": 16, layer + "mlp.up_proj.weight": 16,
               layer + "mlp.down_proj.weight": 24}
    groups = _check(model, by_hand)
    assert set(groups[0]["param_names"]) == _hf_decayed(model)
    assert groups.split.not_decayed == {layer + "input_layernorm.weight": "1-d",
                                        layer + "post_attention_layernorm.weight": "1-d",
                                        "model.norm.weight": "1-d"}


def test_bert_fan_ins_and_split():
    model = tiny_bert()  # hidden 16, intermediate 24, vocab 50, 8 positions, 2 types
    emb, layer = "bert.embeddings.", "bert.encoder.layer.0."
    by_hand = {emb + "word_embeddings.weight": 50, emb + "position_embeddings.weight": 8,
               emb + "token_type_embeddings.weight": 2,
               **{layer + f"attention.self.{p}.weight": 16 for p in ("query", "key", "value")},
               layer + "attention.output.dense.weight": 16,
               layer + "intermediate.dense.weight": 16, layer + "output.dense.weight": 24,
               "bert.pooler.dense.weight": 16, "classifier.weight": 16}
    groups = _check(model, by_hand)
    assert set(groups[0]["param_names"]) == _hf_decayed(model)


# ---- timm ---------------------------------------------------------------------------------
def _timm_decayed(model):
    from timm.optim import param_groups_weight_decay
    declared = getattr(model, "no_weight_decay", lambda: set())()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups_weight_decay(model, WD, no_weight_decay_list=declared)
    return {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}


def test_timm_resnet():
    import_timm()
    from timm.models.resnet import BasicBlock, ResNet
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5)
    by_hand = {"conv1.weight": 3 * 7 * 7, "fc.weight": 512}
    for stage, (c_in, c_out) in enumerate([(64, 64), (64, 128), (128, 256), (256, 512)], 1):
        block = f"layer{stage}.0."
        by_hand[block + "conv1.weight"] = c_in * 9
        by_hand[block + "conv2.weight"] = c_out * 9
        if stage > 1:
            by_hand[block + "downsample.0.weight"] = c_in  # 1x1 conv
    groups = _check(model, by_hand)
    assert set(groups[0]["param_names"]) == _timm_decayed(model)


def test_timm_vit_tokens_pos_embed_and_layer_scale_are_not_decayed():
    import_timm()
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                              reg_tokens=1, init_values=1e-5, num_classes=3, mlp_ratio=2)
    by_hand = {"patch_embed.proj.weight": 3 * 8 * 8, "blocks.0.attn.qkv.weight": 16,
               "blocks.0.attn.proj.weight": 16, "blocks.0.mlp.fc1.weight": 16,
               "blocks.0.mlp.fc2.weight": 32, "head.weight": 16,
               "cls_token": 16, "reg_token": 16, "pos_embed": 6 * 16}  # shape fallback, no decay
    groups = _check(model, by_hand)
    assert set(groups[0]["param_names"]) == _timm_decayed(model)
    split = groups.split.not_decayed
    assert {split[n] for n in ("cls_token", "reg_token", "pos_embed")} == {"model"}
    assert split["blocks.0.ls1.gamma"] == split["blocks.0.ls2.gamma"] == "1-d"


def test_timm_convnext():
    import_timm()
    from timm.models.convnext import ConvNeXt
    dims = (8, 16, 24, 32)
    model = ConvNeXt(depths=(1, 1, 1, 1), dims=dims, ls_init_value=1e-6, num_classes=3)
    by_hand = {"stem.0.weight": 3 * 4 * 4, "head.fc.weight": 32}
    for i, d in enumerate(dims):
        block = f"stages.{i}.blocks.0."
        by_hand.update({block + "conv_dw.weight": 1 * 7 * 7,  # depthwise: 1 channel per group
                        block + "mlp.fc1.weight": d, block + "mlp.fc2.weight": 4 * d})
        if i:
            by_hand[f"stages.{i}.downsample.1.weight"] = dims[i - 1] * 2 * 2
    groups = _check(model, by_hand)
    assert set(groups[0]["param_names"]) == _timm_decayed(model)
    assert groups.split.not_decayed["stages.0.blocks.0.gamma"] == "1-d"
