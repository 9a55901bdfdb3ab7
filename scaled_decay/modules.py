"""What the package knows about module types: each parameter's fan-in, and its biases/gains.

A registry from module type to a :class:`ModuleSpec`. ``sd.param_groups`` asks it, for each
parameter, what its owning module sees as the input size (``fan_in(p)`` of the ``FanIn``
rule) and whether the tensor is a bias or gain (no decay by default). Types are keyed by
qualified class name (``"transformers.pytorch_utils.Conv1D"``), so a library's types can be
described without importing it; a module matches the first class of its MRO that is
registered, so subclasses inherit their base's entry (``nn.Linear`` covers
``NonDynamicallyQuantizableLinear``).

Users add their own types with :func:`register_module`. Tensors the registry does not
cover get fan-in 1 at <= 1 dim, else ``shape[1] * prod(shape[2:])`` (the "shape" fallback,
which ``param_groups`` warns about and ``decay_report()`` names).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from .rules import fan_in_from_shape

__all__ = [
    "ModuleSpec",
    "ParamFacts",
    "module_spec",
    "param_facts",
    "qualified_name",
    "register_module",
]

FanInFn = Callable[[nn.Module, str], int]


@dataclass(frozen=True)
class ModuleSpec:
    """What a module type's parameters are.

    ``fan_in``: local parameter name (or fnmatch pattern, e.g. ``"weight_ih_l*"``) -> a
    function ``(module, param_name) -> int`` giving the input size the module sees for it, or
    an int. ``no_decay``: local names (or patterns) of biases and gains of any number of
    dims, which take no decay by default (tensors of <= 1 dim need no entry).
    """

    fan_in: Mapping[str, FanInFn | int] = field(default_factory=dict)
    no_decay: tuple[str, ...] = ()


class ParamFacts(NamedTuple):
    """One parameter as the registry sees it."""

    fan_in: int
    source: str  # registered class name ("Linear", "Conv1D"), "1-d" or "shape"
    bias_or_gain: bool  # declared by its module type (e.g. MultiheadAttention.bias_k)


_REGISTRY: dict[str, tuple[str, ModuleSpec]] = {}  # qualified name -> (short name, spec)


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_module(
    module_type: type | str, fan_in: Mapping | None = None, *, no_decay: Iterable[str] = ()
) -> None:
    """Describe a module type's parameters to ``sd.param_groups`` (replaces any entry).

    ``module_type``: an ``nn.Module`` subclass, or its qualified name as a string
    (``"mylib.layers.MyLinear"``) to describe a type without importing its library.
    ``fan_in``: ``{param_name_or_pattern: fn(module, param_name) -> int, or an int}``.
    ``no_decay``: names/patterns of the type's biases and gains of more than one dim.
    Subclasses of a registered type use its entry unless registered themselves.

    Args:
        module_type: the module class, or its qualified name.
        fan_in: per parameter name or fnmatch pattern, its fan-in (a positive int, or a
            function of the module and the parameter name).
        no_decay: names or patterns of the type's biases and gains.

    Raises:
        ValueError: ``module_type`` is neither an ``nn.Module`` subclass nor a qualified
            name, or a ``fan_in`` entry is not a name with a positive int or a function.

    Example:
        >>> sd.register_module(MyLinear, {"w": lambda m, name: m.d_in}, no_decay=["scale"])
    """
    if isinstance(module_type, type) and issubclass(module_type, nn.Module):
        key, short = qualified_name(module_type), module_type.__name__
    elif isinstance(module_type, str) and "." in module_type:
        key, short = module_type, module_type.rsplit(".", 1)[1]
    else:
        raise ValueError(
            f"module_type must be an nn.Module subclass or its qualified name "
            f"('package.module.Class'), got {module_type!r}"
        )
    fan_in = dict(fan_in or {})
    for name, fn in fan_in.items():
        ok_value = callable(fn) or (isinstance(fn, int) and not isinstance(fn, bool) and fn > 0)
        if not isinstance(name, str) or not ok_value:
            raise ValueError(
                f"fan_in of {short} must map parameter names to functions "
                f"(module, param_name) -> int or to positive ints, "
                f"got {name!r}: {fn!r}"
            )
    if isinstance(no_decay, str):
        no_decay = (no_decay,)
    no_decay = tuple(no_decay)
    if not all(isinstance(n, str) for n in no_decay):
        raise ValueError(f"no_decay of {short} must be parameter names, got {no_decay!r}")
    _REGISTRY[key] = (short, ModuleSpec(fan_in=fan_in, no_decay=no_decay))


def module_spec(module: nn.Module) -> tuple[str, ModuleSpec] | None:
    """(short class name, spec) of the first registered class in ``type(module).__mro__``."""
    for cls in type(module).__mro__:
        entry = _REGISTRY.get(qualified_name(cls))
        if entry is not None:
            return entry
    return None


def _lookup(table, pname: str):
    if pname in table:
        return table[pname]
    for pattern, value in table.items():
        if fnmatch.fnmatchcase(pname, pattern):
            return value
    return None


def param_facts(module: nn.Module, pname: str, p: torch.Tensor) -> ParamFacts:
    """Fan-in of ``module``'s parameter ``pname`` and where it came from (global shapes)."""
    entry = module_spec(module)
    bias_or_gain = False
    if entry is not None:
        short, spec = entry
        bias_or_gain = any(fnmatch.fnmatchcase(pname, pat) for pat in spec.no_decay)
        fn = _lookup(spec.fan_in, pname)
        if fn is not None:
            value = fn(module, pname) if callable(fn) else fn
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"the fan-in registered for {short}.{pname} gave {value!r}; "
                    f"it must be a positive int"
                )
            return ParamFacts(value, short, bias_or_gain)
    if p.dim() <= 1:
        return ParamFacts(1, "1-d", bias_or_gain)
    return ParamFacts(fan_in_from_shape(p.shape), "shape", bias_or_gain)


# ---- torch.nn ----------------------------------------------------------------------------
def _conv(m, name):
    # weight.shape[1] is in_channels/groups (Conv) or out_channels/groups (ConvTranspose)
    return int(getattr(m, name).shape[1] * math.prod(m.kernel_size))


def _rnn_ih(m, name):
    # weight_ih_l{k}[_reverse]: layer 0 reads the input, deeper layers the previous layer's
    # output in every direction
    if int(name[len("weight_ih_l") :].split("_")[0]) == 0:
        return m.input_size
    return (m.proj_size or m.hidden_size) * (2 if m.bidirectional else 1)


_ONE = {"weight": 1, "bias": 1}
register_module(nn.Linear, {"weight": lambda m, n: m.in_features})
# y_k = x1^T A_k x2: each output sums in1 * in2 products (torch's own init fan-in too)
register_module(nn.Bilinear, {"weight": lambda m, n: m.in1_features * m.in2_features})
register_module(nn.modules.conv._ConvNd, {"weight": _conv})  # Conv1-3d, ConvTranspose1-3d
# a one-hot input of num_embeddings
register_module(nn.Embedding, {"weight": lambda m, n: m.num_embeddings})
register_module(nn.EmbeddingBag, {"weight": lambda m, n: m.num_embeddings})
register_module(
    nn.MultiheadAttention,
    {
        "in_proj_weight": lambda m, n: m.embed_dim,
        "q_proj_weight": lambda m, n: m.embed_dim,
        "k_proj_weight": lambda m, n: m.kdim,
        "v_proj_weight": lambda m, n: m.vdim,
        "bias_k": 1,
        "bias_v": 1,  # learned key/value biases, (1, 1, embed_dim)
    },
    no_decay=("bias_k", "bias_v"),
)  # out_proj is an nn.Linear (its own entry)
register_module(
    nn.RNNBase,
    {  # RNN, LSTM, GRU
        "weight_ih_l*": _rnn_ih,
        "weight_hh_l*": lambda m, n: m.proj_size or m.hidden_size,
        "weight_hr_l*": lambda m, n: m.hidden_size,  # LSTM projection
    },
)
# norm layers: gains and biases of any shape (LayerNorm((C, H, W)) has 3-d ones)
for _norm in (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    getattr(nn, "RMSNorm", None),
):
    if _norm is not None:
        register_module(_norm, _ONE, no_decay=("weight", "bias"))

# ---- transformers (described by name: nothing is imported) ------------------------------
# GPT-2's Conv1D is a linear layer whose weight is stored (in, out): its fan-in is nx.
register_module("transformers.pytorch_utils.Conv1D", {"weight": lambda m, n: m.nx})
