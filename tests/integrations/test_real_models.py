"""sd.param_groups on real models, built tiny from configs with random weights (nothing is
downloaded): fan-ins against values worked out by hand from each config, and the no-decay
split against the framework's own (transformers' Trainer, timm's param_groups_weight_decay).
"""

import warnings

import pytest
import torch

import scaled_decay as sd
from tests.helpers.framework_models import import_timm, tiny_bert, tiny_gpt2, tiny_llama, tiny_t5

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
        by_hand.update(
            {
                h + "attn.c_attn.weight": 16,  # stored (16, 48): in = 16, not 48
                h + "attn.c_proj.weight": 16,
                h + "mlp.c_fc.weight": 16,  # stored (16, 64)
                h + "mlp.c_proj.weight": 64,
            }
        )  # stored (64, 16)
    groups = _check(model, by_hand)
    sources = {n: s for g in groups for n, s in zip(g["param_names"], g["fan_in_sources"])}
    assert sources["transformer.h.0.mlp.c_fc.weight"] == "Conv1D"
    assert set(groups[0]["param_names"]) == _hf_decayed(model)
    text = repr(sd.AdamW(groups, decay_scaling="fan_in"))  # was 589-character lines
    assert max(map(len, text.splitlines())) < 80 and "<18 per-tensor values>" in text


def test_llama_rmsnorm_weights_are_not_decayed():
    model = tiny_llama()  # hidden 16, intermediate 24, vocab 50, 1 layer
    layer = "model.layers.0."
    by_hand = {
        "model.embed_tokens.weight": 50,
        "lm_head.weight": 16,
        **{layer + f"self_attn.{p}_proj.weight": 16 for p in "qkvo"},
        layer + "mlp.gate_proj.weight": 16,
        layer + "mlp.up_proj.weight": 16,
        layer + "mlp.down_proj.weight": 24,
    }
    groups = _check(model, by_hand)
    assert set(groups[0]["param_names"]) == _hf_decayed(model)
    assert groups.split.not_decayed == {
        layer + "input_layernorm.weight": "1-d",
        layer + "post_attention_layernorm.weight": "1-d",
        "model.norm.weight": "1-d",
    }


def test_t5_relative_attention_bias_is_not_decayed():
    """T5's position biases are an Embedding table named ``relative_attention_bias``: a bias
    by name (Trainer leaves it undecayed too), although it is 2-D. ``lm_head`` is tied to
    ``shared`` (one tensor, named once)."""
    model = tiny_t5()  # d_model 16, d_ff 24, vocab 50, 8 buckets, 1 layer each side
    by_hand = {"shared.weight": 50}
    attn = {
        "encoder.block.0.layer.0.SelfAttention",
        "decoder.block.0.layer.0.SelfAttention",
        "decoder.block.0.layer.1.EncDecAttention",
    }
    by_hand.update({f"{a}.{p}.weight": 16 for a in attn for p in "qkvo"})
    for ffn in ("encoder.block.0.layer.1", "decoder.block.0.layer.2"):
        by_hand.update(
            {
                f"{ffn}.DenseReluDense.wi.weight": 16,  # stored (24, 16)
                f"{ffn}.DenseReluDense.wo.weight": 24,
            }
        )
    rel = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    by_hand.update({f"encoder.{rel}": 8, f"decoder.{rel}": 8})  # Embedding: num_embeddings
    groups = _check(model, by_hand)
    assert set(groups[0]["param_names"]) == _hf_decayed(model)
    assert {n: r for n, r in groups.split.not_decayed.items() if r != "1-d"} == {
        f"encoder.{rel}": "bias",
        f"decoder.{rel}": "bias",
    }


def test_a_bias_by_name_is_a_word_of_the_last_two_parts():
    """``bias`` as a ``_``-separated word of the tensor's or its module's name; a module
    that only sits under a ``bias_net`` (or a name like ``unbiased``) is not a bias."""
    from torch import nn

    model = nn.Module()
    model.attn_bias = nn.Embedding(4, 2)
    model.bias_net = nn.Sequential(nn.Linear(3, 3))
    model.unbiased = nn.Linear(3, 3)
    model.register_parameter("relative_position_bias_table", nn.Parameter(torch.zeros(5, 2)))
    split = sd.param_groups(model, WD).split
    assert {n: r for n, r in split.not_decayed.items() if r != "1-d"} == {
        "attn_bias.weight": "bias",
        "relative_position_bias_table": "bias",
    }
    assert set(split.decayed) == {"bias_net.0.weight", "unbiased.weight"}


def test_bert_fan_ins_and_split():
    model = tiny_bert()  # hidden 16, intermediate 24, vocab 50, 8 positions, 2 types
    emb, layer = "bert.embeddings.", "bert.encoder.layer.0."
    by_hand = {
        emb + "word_embeddings.weight": 50,
        emb + "position_embeddings.weight": 8,
        emb + "token_type_embeddings.weight": 2,
        **{layer + f"attention.self.{p}.weight": 16 for p in ("query", "key", "value")},
        layer + "attention.output.dense.weight": 16,
        layer + "intermediate.dense.weight": 16,
        layer + "output.dense.weight": 24,
        "bert.pooler.dense.weight": 16,
        "classifier.weight": 16,
    }
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

    model = VisionTransformer(
        img_size=16,
        patch_size=8,
        embed_dim=16,
        depth=1,
        num_heads=2,
        reg_tokens=1,
        init_values=1e-5,
        num_classes=3,
        mlp_ratio=2,
    )
    by_hand = {
        "patch_embed.proj.weight": 3 * 8 * 8,
        "blocks.0.attn.qkv.weight": 16,
        "blocks.0.attn.proj.weight": 16,
        "blocks.0.mlp.fc1.weight": 16,
        "blocks.0.mlp.fc2.weight": 32,
        "head.weight": 16,
        "cls_token": 16,
        "reg_token": 16,
        "pos_embed": 6 * 16,
    }  # shape fallback, no decay
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
        by_hand.update(
            {
                block + "conv_dw.weight": 1 * 7 * 7,  # depthwise: 1 channel per group
                block + "mlp.fc1.weight": d,
                block + "mlp.fc2.weight": 4 * d,
            }
        )
        if i:
            by_hand[f"stages.{i}.downsample.1.weight"] = dims[i - 1] * 2 * 2
    groups = _check(model, by_hand)
    assert set(groups[0]["param_names"]) == _timm_decayed(model)
    assert groups.split.not_decayed["stages.0.blocks.0.gamma"] == "1-d"


# ---- more architectures: the split against the framework's own, no shape fan-ins -----------
TIMM_MORE = {  # timm.create_model name -> small kwargs (random weights)
    "swin_tiny_patch4_window7_224": dict(
        img_size=56, embed_dim=24, depths=(1, 1), num_heads=(1, 2), window_size=7
    ),
    "beit_base_patch16_224": dict(img_size=32, embed_dim=32, depth=1, num_heads=2),
    "eva02_tiny_patch14_224": dict(img_size=28, depth=1),
    "deit_tiny_distilled_patch16_224": dict(img_size=32, depth=1),
    "efficientnet_b0": {},
    "mobilenetv3_small_100": {},
    "regnetx_002": {},
    "maxvit_rmlp_pico_rw_256": dict(img_size=64),
    "levit_128s": dict(img_size=64),
    "mixer_s16_224": dict(img_size=32),
}


@pytest.mark.parametrize("name", TIMM_MORE)
def test_timm_models_split_as_timm_and_fan_ins_from_modules(name):
    """The split equals timm's ``param_groups_weight_decay`` with the model's own
    ``no_weight_decay()``; every decayed tensor's fan-in comes from a known module type (the
    shape-fallback warning is an error in ``_groups``). (XCiT differs on purpose: its XCA
    blocks declare ``temperature`` in their own ``no_weight_decay()``, which timm's
    optimizer factory does not read and sd does.)"""
    timm = import_timm()
    model = timm.create_model(name, pretrained=False, **TIMM_MORE[name])
    groups = _groups(model)
    assert set(groups[0]["param_names"]) == _timm_decayed(model)


def _hf_more():
    import transformers as tf

    small = dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        vocab_size=50,
    )
    return {
        "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(num_key_value_heads=1, **small)),
        "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(num_key_value_heads=1, **small)),
        "gpt_neox": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**small)),
        "phi": lambda: tf.PhiForCausalLM(tf.PhiConfig(**small)),
        "opt": lambda: tf.OPTForCausalLM(
            tf.OPTConfig(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                ffn_dim=24,
                vocab_size=50,
                word_embed_proj_dim=16,
            )
        ),
        "bloom": lambda: tf.BloomForCausalLM(
            tf.BloomConfig(hidden_size=16, n_layer=1, n_head=2, vocab_size=50)
        ),
        "falcon": lambda: tf.FalconForCausalLM(
            tf.FalconConfig(
                hidden_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=50
            )
        ),
        "roberta": lambda: tf.RobertaForMaskedLM(tf.RobertaConfig(**small)),
        "distilbert": lambda: tf.DistilBertForMaskedLM(
            tf.DistilBertConfig(dim=16, n_layers=1, n_heads=2, hidden_dim=24, vocab_size=50)
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["mistral", "qwen2", "gpt_neox", "phi", "opt", "bloom", "falcon", "roberta", "distilbert"],
)
def test_transformers_models_split_as_trainer_and_fan_ins_from_modules(name):
    """The split equals ``Trainer.get_decay_parameter_names`` (tied weights named once),
    and no decayed tensor's fan-in comes from the shape fallback. (Where the two differ on
    purpose: a 0-d or 1-d tensor with no norm or bias in its name, such as CLIP's
    ``logit_scale`` and ``class_embedding``, is not decayed here, as timm does; Trainer
    decays it.)"""
    pytest.importorskip("transformers")
    model = _hf_more()[name]()
    groups = _groups(model)
    assert set(groups[0]["param_names"]) == _hf_decayed(model)


def _clip():
    import transformers as tf

    return tf.CLIPModel(
        tf.CLIPConfig(
            text_config=dict(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=24,
                vocab_size=50,
            ),
            vision_config=dict(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=24,
                image_size=16,
                patch_size=8,
            ),
            projection_dim=8,
        )
    )


def _wav2vec2():
    import transformers as tf

    return tf.Wav2Vec2ForCTC(
        tf.Wav2Vec2Config(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=24,
            vocab_size=20,
            conv_dim=(8, 8),
            conv_stride=(5, 2),
            conv_kernel=(10, 3),
            num_conv_pos_embeddings=4,
            num_conv_pos_embedding_groups=2,
        )
    )


@pytest.mark.parametrize(
    "make, only_trainer_decays",
    [
        (_clip, {"logit_scale", "vision_model.embeddings.class_embedding"}),
        (_wav2vec2, {"wav2vec2.masked_spec_embed"}),
    ],
    ids=["clip", "wav2vec2"],
)
def test_where_the_split_differs_from_trainer_on_purpose(make, only_trainer_decays):
    """The one kind of difference from Trainer: tensors of <= 1 dim without ``bias``/``norm``
    in their names, which Trainer decays and the ``1-d`` rule (as timm's) does not.
    (wav2vec2's positional conv is weight-normed: its g and v take the conv's fan-in,
    hidden / groups * kernel = 8 * 4, not a shape fallback.)"""
    pytest.importorskip("transformers")
    model = make()
    groups = _groups(model)
    decayed = set(groups[0]["param_names"])
    assert _hf_decayed(model) - decayed == only_trainer_decays
    assert decayed <= _hf_decayed(model)
    fan_ins = {n: f for g in groups for n, f in zip(g["param_names"], g["fan_ins"])}
    assert {n: f for n, f in fan_ins.items() if ".parametrizations." in n} == (
        {
            f"wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original{k}": 32
            for k in (0, 1)
        }
        if make is _wav2vec2
        else {}
    )


def test_xcit_temperature_declared_by_its_blocks_is_not_decayed():
    """timm's factory reads only the top model's ``no_weight_decay()``; the ``model`` rule
    also reads its submodules', where XCiT's attention declares ``temperature``."""
    timm = import_timm()
    model = timm.create_model("xcit_nano_12_p16_224", pretrained=False, img_size=32, depth=1)
    groups = _groups(model)
    assert _timm_decayed(model) - set(groups[0]["param_names"]) == {"blocks.0.attn.temperature"}
    assert groups.split.not_decayed["blocks.0.attn.temperature"] == "model"
