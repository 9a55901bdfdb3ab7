"""The fan-in registry and the no-decay rule on torch.nn modules, fan-ins worked out by hand
(the module-aware fan_in of each parameter, and param_groups' split: tensors of at most one
dimension, no_weight_decay() names and no_decay names go to the weight_decay=0 group)."""

import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

import scaled_decay as sd
from scaled_decay import modules


@pytest.fixture
def registry(monkeypatch):
    """Registrations made by a test are undone after it."""
    monkeypatch.setattr(modules, "_REGISTRY", dict(modules._REGISTRY))


class Zoo(nn.Module):
    """Every torch.nn type the registry knows, plus a raw parameter and a 3-d "bias"."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 7)
        self.bil = nn.Bilinear(3, 4, 6)
        self.conv = nn.Conv1d(6, 4, kernel_size=3, groups=2)
        self.conv3 = nn.Conv3d(2, 4, kernel_size=(1, 2, 3), bias=False)
        self.tconv = nn.ConvTranspose2d(4, 6, kernel_size=(2, 3), groups=2)
        self.emb = nn.Embedding(11, 5)
        self.bag = nn.EmbeddingBag(13, 5)
        self.mha = nn.MultiheadAttention(8, 2, add_bias_kv=True)
        self.mha_kv = nn.MultiheadAttention(8, 2, kdim=3, vdim=5)
        self.lstm = nn.LSTM(5, 6, num_layers=2, bidirectional=True, proj_size=4)
        self.gru = nn.GRU(3, 5)
        self.rnn = nn.RNN(3, 4, num_layers=2)
        self.prelu = nn.PReLU(5)
        self.ln3 = nn.LayerNorm((2, 3))
        self.bn = nn.BatchNorm1d(4)
        self.enc = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
        self.raw = nn.Parameter(torch.randn(3, 4, 2))


# By hand: fan-in of each >= 2-d tensor (what its module sees as input size).
ZOO_FAN_INS = {
    "lin.weight": 5,
    "bil.weight": 3 * 4,
    "conv.weight": 3 * 3,
    "conv3.weight": 2 * 1 * 2 * 3,
    "tconv.weight": 3 * 2 * 3,  # (in, out/groups, kH, kW): weight.shape[1] * prod(kernel)
    "emb.weight": 11,
    "bag.weight": 13,
    "mha.in_proj_weight": 8,
    "mha.out_proj.weight": 8,
    "mha.bias_k": 1,
    "mha.bias_v": 1,
    "mha_kv.q_proj_weight": 8,
    "mha_kv.k_proj_weight": 3,
    "mha_kv.v_proj_weight": 5,
    "mha_kv.out_proj.weight": 8,
    "lstm.weight_ih_l0": 5,
    "lstm.weight_hh_l0": 4,
    "lstm.weight_hr_l0": 6,
    "lstm.weight_ih_l0_reverse": 5,
    "lstm.weight_hh_l0_reverse": 4,
    "lstm.weight_hr_l0_reverse": 6,
    "lstm.weight_ih_l1": 4 * 2,
    "lstm.weight_hh_l1": 4,
    "lstm.weight_hr_l1": 6,
    "lstm.weight_ih_l1_reverse": 4 * 2,
    "lstm.weight_hh_l1_reverse": 4,
    "lstm.weight_hr_l1_reverse": 6,
    "gru.weight_ih_l0": 3,
    "gru.weight_hh_l0": 5,
    "rnn.weight_ih_l0": 3,
    "rnn.weight_hh_l0": 4,
    "rnn.weight_ih_l1": 4,
    "rnn.weight_hh_l1": 4,
    "ln3.weight": 1,
    "ln3.bias": 1,
    "enc.self_attn.in_proj_weight": 8,
    "enc.self_attn.out_proj.weight": 8,
    "enc.linear1.weight": 8,
    "enc.linear2.weight": 16,
    "raw": 4 * 2,
}
# By hand: why each tensor is not decayed by default.
ZOO_NOT_DECAYED = {
    **{n: "1-d" for n, p in Zoo().named_parameters() if p.dim() <= 1},
    "mha.bias_k": "module",
    "mha.bias_v": "module",
    "ln3.weight": "module",
    "ln3.bias": "bias",
}


def _groups(model, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = sd.param_groups(model, 0.1, **kw)
    return groups, [str(w.message) for w in caught]


def _by_name(groups, key):
    return {n: v for g in groups for n, v in zip(g["param_names"], g[key])}


def test_torch_nn_fan_ins_and_their_sources():
    groups, _ = _groups(Zoo())
    fan_ins, sources = _by_name(groups, "fan_ins"), _by_name(groups, "fan_in_sources")
    for name, fan in ZOO_FAN_INS.items():
        assert fan_ins[name] == fan, name
    assert sources["lin.weight"] == "Linear" and sources["tconv.weight"] == "_ConvNd"
    assert sources["mha.out_proj.weight"] == "Linear"  # NonDynamicallyQuantizableLinear
    assert sources["lstm.weight_ih_l1"] == "RNNBase" and sources["ln3.weight"] == "LayerNorm"
    assert sources["raw"] == "shape" and sources["lin.bias"] == "1-d"
    assert all(fan_ins[n] == 1 for n, p in Zoo().named_parameters() if p.dim() <= 1)


def test_parametrized_tensors_take_their_modules_fan_in():
    """torch.nn.utils.parametrize keeps a parametrized tensor's originals in a
    ParametrizationList (``conv.parametrizations.weight.original0``/``1`` for weight_norm's
    g and v, ``original`` for the others): they take the owning module's fan-in and no-decay
    rule, under torch's names, and nothing warns about a shape fallback."""
    from torch.nn.utils import parametrizations as P

    model = nn.Sequential(
        nn.Conv1d(8, 16, 4, groups=2), nn.Linear(16, 6), nn.Linear(6, 3), nn.LayerNorm(3)
    )
    P.weight_norm(model[0], dim=2)
    P.spectral_norm(model[1])
    P.orthogonal(model[2])
    P.weight_norm(model[3], name="bias", dim=0)  # a parametrized 1-d bias stays undecayed
    groups, messages = _groups(model)
    assert messages == []
    fan_ins, sources = _by_name(groups, "fan_ins"), _by_name(groups, "fan_in_sources")
    w = "parametrizations.weight."
    assert {n: fan_ins[n] for n in fan_ins if ".parametrizations." in n} == {
        f"0.{w}original0": 16,
        f"0.{w}original1": 16,  # in/groups * kernel = 4 * 4
        f"1.{w}original": 16,
        f"2.{w}original": 6,
        "3.parametrizations.bias.original0": 1,
        "3.parametrizations.bias.original1": 1,
    }
    assert sources[f"0.{w}original1"] == "_ConvNd" and sources[f"1.{w}original"] == "Linear"
    assert set(fan_ins) == {n for n, _ in model.named_parameters()}
    assert {n for n in groups.split.not_decayed if ".parametrizations." in n} == {
        "3.parametrizations.bias.original0",
        "3.parametrizations.bias.original1",
    }


def test_no_decay_split_biases_of_any_name_gains_prelu_and_module_declared():
    groups, _ = _groups(Zoo())
    assert groups.split.not_decayed == ZOO_NOT_DECAYED
    for name in (
        "mha.in_proj_bias",
        "lstm.bias_ih_l0",
        "gru.bias_hh_l0",
        "prelu.weight",
        "enc.self_attn.in_proj_bias",
        "bn.weight",
    ):
        assert groups.split.not_decayed[name] == "1-d"
    plain = groups[1]
    assert plain["weight_decay"] == 0.0
    assert dict(zip(plain["param_names"], plain["no_decay_reasons"])) == ZOO_NOT_DECAYED
    assert set(groups[0]["param_names"]) == {n for n, _ in Zoo().named_parameters()} - set(
        ZOO_NOT_DECAYED
    )
    text = str(groups.split)
    assert f"no decay for {len(ZOO_NOT_DECAYED)}" in text and "bias_k" in text


def test_shape_fallback_warns_once_naming_the_tensors():
    _, messages = _groups(Zoo())
    assert len(messages) == 1 and "raw" in messages[0] and "register_module" in messages[0]
    _, messages = _groups(Zoo(), no_decay=["raw"])  # not decayed: nothing to warn about
    assert messages == []
    assert _groups(nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3)))[1] == []


def test_decay_1d_switch_decays_biases_and_gains_but_not_declared_names():
    groups, _ = _groups(Zoo(), decay_1d=True, no_decay=["lin.bias", nn.Embedding])
    assert groups.split.not_decayed == {"lin.bias": "no_decay", "emb.weight": "no_decay"}
    with pytest.raises(ValueError, match="decay_1d"):
        sd.param_groups(Zoo(), 0.1, decay_1d="yes")


class Scaled(nn.Module):
    """timm's convention: the model names what takes no decay."""

    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, 4, 3))
        self.rel_table = nn.Parameter(torch.zeros(5, 2))
        self.proj = nn.Linear(3, 3)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1))  # a bias by name, 3-d

    def no_weight_decay(self):
        return {"pos"}

    def no_weight_decay_keywords(self):
        return ("table",)


def test_model_declared_names_and_keywords_also_in_submodules():
    outer = nn.Sequential(nn.Linear(3, 3), Scaled())
    groups, _ = _groups(outer)
    assert groups.split.not_decayed == {
        "0.bias": "1-d",
        "1.pos": "model",
        "1.rel_table": "model",
        "1.proj.bias": "1-d",
        "1.bias": "bias",
    }
    groups, _ = _groups(outer, decay_1d=True)
    assert groups.split.not_decayed == {"1.pos": "model", "1.rel_table": "model"}


def test_tensors_marked_no_weight_decay_are_not_decayed():
    """mamba_ssm and S4 mark tensors ``p._no_weight_decay = True`` (Mamba's 2-D ``A_log``):
    reason "model", whatever the shape; an attribute that is not exactly True is ignored."""
    model = nn.Module()
    model.A_log = nn.Parameter(torch.zeros(8, 4))
    model.A_log._no_weight_decay = True
    model.w = nn.Parameter(torch.zeros(8, 4))
    model.w._no_weight_decay = "no"
    groups, _ = _groups(model, decay_1d=True)
    assert groups.split.not_decayed == {"A_log": "model"}
    assert groups[0]["param_names"] == ["w"]


def test_declared_names_must_be_strings():
    class Bad(nn.Linear):
        def no_weight_decay(self):
            return "weight"

    with pytest.raises(ValueError, match="no_weight_decay"):
        sd.param_groups(Bad(2, 2), 0.1)


class InOut(nn.Module):
    """A linear layer stored (in, out), as transformers' Conv1D."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.d_in = d_in
        self.w = nn.Parameter(torch.randn(d_in, d_out))
        self.scale = nn.Parameter(torch.ones(1, d_out))


class InOutChild(InOut):
    pass


@pytest.mark.parametrize("key", ["class", "qualified name"])
def test_registered_user_type_gives_fan_in_and_no_decay(registry, key):
    assert _by_name(_groups(InOut(6, 2))[0], "fan_ins")["w"] == 2  # shape: out, wrong
    module_type = InOut if key == "class" else f"{InOut.__module__}.{InOut.__qualname__}"
    sd.register_module(module_type, {"w": lambda m, name: m.d_in}, no_decay=["scale"])
    groups, messages = _groups(nn.Sequential(InOutChild(6, 2)))  # subclasses inherit it
    assert _by_name(groups, "fan_ins")["0.w"] == 6 and messages == []
    assert _by_name(groups, "fan_in_sources")["0.w"] == "InOut"
    assert groups.split.not_decayed == {"0.scale": "module"}
    opt = sd.AdamW(groups, weight_decay=0.1, decay_scaling="fan_in")
    assert {r.name: r.lam for r in opt.decay_report()}["0.w"] == pytest.approx(0.1 / 6)


def test_conv1d_is_known_by_name_without_importing_transformers(registry):
    fake = type("Conv1D", (nn.Module,), {"__module__": "transformers.pytorch_utils"})
    layer = fake()
    layer.nx, layer.weight = 5, nn.Parameter(torch.zeros(5, 9))
    assert _by_name(_groups(layer)[0], "fan_ins")["weight"] == 5
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, torch, scaled_decay as sd; "
            "sd.param_groups(torch.nn.Linear(2, 2), 0.1); "
            "print('transformers' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: sd.register_module(3, {}), ["module_type", "3"]),
        (lambda: sd.register_module("Linear", {}), ["module_type", "'Linear'"]),
        (lambda: sd.register_module(InOut, {"w": 0}), ["fan_in", "InOut", "0"]),
        (lambda: sd.register_module(InOut, {"w": "d_in"}), ["fan_in", "'d_in'"]),
        (lambda: sd.register_module(InOut, {}, no_decay=[1]), ["no_decay", "1"]),
    ],
)
def test_bad_registrations_raise_value_error(registry, call, words):
    with pytest.raises(ValueError) as info:
        call()
    assert all(w in str(info.value) for w in words)


def test_registered_function_giving_a_bad_fan_in_raises(registry):
    sd.register_module(InOut, {"w": lambda m, name: 0})
    with pytest.raises(ValueError, match=r"InOut\.w gave 0"):
        sd.param_groups(InOut(2, 3), 0.1)


def test_fan_in_scaling_uses_registry_values_in_the_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LSTM(3, 5))
    opt = sd.SGD(sd.param_groups(model, 0.5), lr=0.1, decay_scaling="fan_in")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    params = dict(model.named_parameters())
    for name, fan_in in (("0.weight_hh_l0", 5), ("0.weight_ih_l0", 3)):
        torch.testing.assert_close(params[name], before[name] * (1 - 0.1 * 0.5 / fan_in))
    torch.testing.assert_close(params["0.bias_ih_l0"], before["0.bias_ih_l0"])  # not decayed
