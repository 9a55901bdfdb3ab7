"""Build optimizer param groups from a model: names, module-aware fan-ins, no-decay split."""
from __future__ import annotations

import fnmatch
import math
from typing import Dict, Iterable, Tuple

import torch
from torch import nn

from .rules import fan_in_from_shape

__all__ = ["param_groups", "module_fan_ins"]

_NORMS = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_CONVS = (nn.modules.conv._ConvNd,)  # Conv1d/2d/3d and ConvTranspose1d/2d/3d


def _is_bias_or_norm(module: nn.Module, pname: str) -> bool:
    return pname == "bias" or isinstance(module, _NORMS)


def _module_fan_in(module: nn.Module, pname: str, p: torch.Tensor) -> int:
    """What ``module`` sees as the input size of its parameter ``pname`` (SPEC: fan_in(p))."""
    if _is_bias_or_norm(module, pname):
        return 1
    if isinstance(module, nn.Linear) and pname == "weight":
        return module.in_features
    if isinstance(module, _CONVS) and pname == "weight":
        # weight.shape[1] is in_channels/groups (Conv) or out_channels/groups (ConvTranspose)
        return int(p.shape[1] * math.prod(module.kernel_size))
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and pname == "weight":
        return module.num_embeddings  # a one-hot input of that size
    return fan_in_from_shape(p.shape)  # p.shape is global for DTensor parameters


def _named_params_with_modules(model: nn.Module):
    """(full name, module, local name, param) for each distinct parameter, first owner wins."""
    seen = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue  # tied weights: counted once, as named_parameters() does
            seen.add(id(p))
            yield (f"{mname}.{pname}" if mname else pname), module, pname, p


def module_fan_ins(model: nn.Module) -> Dict[str, int]:
    """Module-aware fan-in of every parameter of ``model``, by parameter name."""
    return {name: _module_fan_in(m, pn, p) for name, m, pn, p in _named_params_with_modules(model)}


def _matches(name: str, module: nn.Module, no_decay: Tuple) -> bool:
    for item in no_decay:
        if isinstance(item, type) and isinstance(module, item):
            return True
        if isinstance(item, str) and (name == item or fnmatch.fnmatchcase(name, item)):
            return True
    return False


def _check_no_decay(no_decay) -> Tuple:
    if isinstance(no_decay, (str, type)):
        no_decay = (no_decay,)
    try:
        items = tuple(no_decay)
    except TypeError:
        raise ValueError(f"no_decay must be an iterable of names, patterns or module types, "
                         f"got {no_decay!r}") from None
    for item in items:
        if not (isinstance(item, str) or (isinstance(item, type) and issubclass(item, nn.Module))):
            raise ValueError(f"no_decay entries must be parameter names/patterns or nn.Module "
                             f"types, got {item!r}")
    return items


def param_groups(model: nn.Module, weight_decay: float, *, no_decay: Iterable = (),
                 base_model: nn.Module = None, **group_options) -> list:
    """Param groups for an sd optimizer: decayed weights, and a ``weight_decay=0`` group.

    Biases and the weights of norm layers always go to the no-decay group; ``no_decay`` adds
    more, as parameter names, fnmatch patterns (``"*.pos_emb"``) or module types
    (``nn.Embedding``). Each group records ``param_names`` and module-aware ``fan_ins``
    (Linear ``in_features``, Conv ``weight.shape[1] * prod(kernel_size)``, Embedding
    ``num_embeddings``, biases and norms 1). With ``base_model`` (the same architecture at
    its base width), each decayed tensor also gets ``fan_in_references``: the fan-in of the
    same-named tensor of the base model, which :class:`~scaled_decay.FanIn` uses as its
    reference, so ``lam == weight_decay`` exactly at the base width (muP-style transfer).
    ``group_options`` (lr, decay_mode, decay_scaling, ...) go into both groups.
    """
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
            or not weight_decay >= 0:
        raise ValueError(f"weight_decay must be a non-negative number, got {weight_decay!r}")
    no_decay = _check_no_decay(no_decay)
    base_fan_ins = None
    if base_model is not None:
        base_fan_ins = module_fan_ins(base_model)
        names = [n for n, *_ in _named_params_with_modules(model)]
        missing = sorted(set(names) - set(base_fan_ins))
        extra = sorted(set(base_fan_ins) - set(names))
        if missing or extra:
            raise ValueError(
                f"base_model's parameter names do not match the model's: missing from "
                f"base_model {missing[:5]}, only in base_model {extra[:5]}")

    decay = {"params": [], "param_names": [], "fan_ins": [], "weight_decay": weight_decay}
    if base_fan_ins is not None:
        decay["fan_in_references"] = []
    plain = {"params": [], "param_names": [], "fan_ins": [], "weight_decay": 0.0}
    for name, module, pname, p in _named_params_with_modules(model):
        if not p.requires_grad:
            continue
        group = plain if (_is_bias_or_norm(module, pname) or _matches(name, module, no_decay)) \
            else decay
        group["params"].append(p)
        group["param_names"].append(name)
        group["fan_ins"].append(_module_fan_in(module, pname, p))
        if group is decay and base_fan_ins is not None:
            group["fan_in_references"].append(float(base_fan_ins[name]))
    return [dict(g, **group_options) for g in (decay, plain) if g["params"]]
