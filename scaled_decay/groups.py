"""Build optimizer param groups from a model: names, module-aware fan-ins, no-decay split.

What a module type's parameters are (fan-in, biases and gains) comes from the registry in
:mod:`scaled_decay.modules`; this file only walks the model and sorts its tensors.
"""

from __future__ import annotations

import fnmatch
import logging
import warnings
from collections.abc import Iterable
from typing import Any

from torch import nn

from .modules import param_facts
from .timescale import Timescale, timescale_steps

__all__ = ["NO_DECAY_REASONS", "DecaySplit", "ParamGroups", "module_fan_ins", "param_groups"]

log = logging.getLogger("scaled_decay")

# Why a tensor is in the weight_decay=0 group, in the order they are tested.
NO_DECAY_REASONS = {
    "no_decay": "named by no_decay=",
    "model": "declared by the model: no_weight_decay()/no_weight_decay_keywords(), or "
    "p._no_weight_decay = True",
    "1-d": "tensor of <= 1 dim (bias, gain, layer scale, PReLU slope)",
    "bias": "named as a bias ('bias', or a 'bias' word in its or its module's name)",
    "module": "a bias or gain of its module type (registry)",
}
_SHAPE_RULES = ("1-d", "bias", "module")  # what decay_1d=True switches off


def _named_params_with_modules(model: nn.Module):
    """(full name, module, local name, param) for each distinct parameter, first owner wins.

    A parametrized tensor's originals (``torch.nn.utils.parametrize``: ``conv.parametrizations
    .weight.original``, or weight_norm's ``original0`` (g) and ``original1`` (v)) stand for
    the tensor itself: their module is ``conv`` and their local name ``weight``, so the
    registry gives them its fan-in and no-decay rule (the full name stays torch's)."""
    seen = set()
    for mname, module in model.named_modules():
        owner, local = _parametrized(model, mname, module)
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue  # tied weights: counted once, as named_parameters() does
            seen.add(id(p))
            yield ((f"{mname}.{pname}" if mname else pname), owner or module, local or pname, p)


def _parametrized(model: nn.Module, mname: str, module: nn.Module):
    """(owning module, tensor name) when ``module`` holds the originals of a parametrized
    tensor (``<owner>.parametrizations.<tensor>``), else (None, None)."""
    parts = mname.split(".")
    if (
        len(parts) < 2
        or parts[-2] != "parametrizations"
        or not isinstance(module, nn.utils.parametrize.ParametrizationList)
    ):
        return None, None
    return model.get_submodule(".".join(parts[:-2])), parts[-1]


def module_fan_ins(model: nn.Module) -> dict[str, int]:
    """Module-aware fan-in of every parameter of ``model``, by parameter name."""
    return {
        name: param_facts(m, pn, p).fan_in for name, m, pn, p in _named_params_with_modules(model)
    }


def _declared(model: nn.Module) -> tuple[list[str], list[tuple[str, str]]]:
    """Patterns from every submodule's ``no_weight_decay()`` (prefixed with the submodule's
    name: timm matches them with fnmatch against full names) and (prefix, keyword) pairs
    from ``no_weight_decay_keywords()`` (a substring of the local name, as Swin/timm)."""
    patterns, keywords = [], []
    for mname, module in model.named_modules():
        prefix = f"{mname}." if mname else ""
        for attr in ("no_weight_decay", "no_weight_decay_keywords"):
            fn = getattr(module, attr, None)
            if not callable(fn):
                continue
            names = fn()
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise ValueError(
                    f"{type(module).__name__}.{attr}() must return a collection "
                    f"of parameter names, got {names!r}"
                )
            if attr == "no_weight_decay":
                patterns += [prefix + n for n in names]
            else:
                keywords += [(prefix, k) for k in names]
    return patterns, keywords


def _matches(name: str, module: nn.Module, items: tuple) -> bool:
    for item in items:
        if isinstance(item, type) and isinstance(module, item):
            return True
        if isinstance(item, str) and (name == item or fnmatch.fnmatchcase(name, item)):
            return True
    return False


def _check_no_decay(no_decay) -> tuple:
    if isinstance(no_decay, (str, type)):
        no_decay = (no_decay,)
    try:
        items = tuple(no_decay)
    except TypeError:
        raise ValueError(
            f"no_decay must be an iterable of names, patterns or module types, got {no_decay!r}"
        ) from None
    for item in items:
        if not (isinstance(item, str) or (isinstance(item, type) and issubclass(item, nn.Module))):
            raise ValueError(
                f"no_decay entries must be parameter names/patterns or nn.Module "
                f"types, got {item!r}"
            )
    return items


class DecaySplit:
    """Which tensors ``param_groups`` decays and, for the others, why not.

    ``param_groups`` builds it and puts it in its result's ``.split``; ``str()`` (and
    ``repr()``) prints the counts and, per reason, the first three names.

    Args:
        decayed: names of the decayed tensors.
        not_decayed: name -> reason (a key of ``NO_DECAY_REASONS``: ``"no_decay"``,
            ``"model"``, ``"1-d"``, ``"bias"`` or ``"module"``) for each undecayed tensor.
        shape_fan_in: the decayed tensors of >= 2 dims whose fan-in came from their shape
            (``shape[1] * prod(shape[2:])``: their module type is not in the registry).

    Attributes:
        decayed: as the argument.
        not_decayed: as the argument.
        shape_fan_in: as the argument.
    """

    def __init__(
        self, decayed: list[str], not_decayed: dict[str, str], shape_fan_in: list[str]
    ) -> None:
        self.decayed = decayed
        self.not_decayed = not_decayed  # name -> reason (a key of NO_DECAY_REASONS)
        self.shape_fan_in = shape_fan_in  # decayed tensors of >= 2 dims, fan-in from shape

    def by_reason(self) -> dict[str, list[str]]:
        """The undecayed tensors grouped by reason.

        Returns:
            reason -> the names it applies to, in the model's order.
        """
        out: dict[str, list[str]] = {}
        for name, reason in self.not_decayed.items():
            out.setdefault(reason, []).append(name)
        return out

    def __str__(self) -> str:
        lines = [f"decay {len(self.decayed)} tensors; no decay for {len(self.not_decayed)}:"]
        for reason, names in self.by_reason().items():
            more = f", ... (+{len(names) - 3})" if len(names) > 3 else ""
            lines += [
                f"  {len(names):4d}  {NO_DECAY_REASONS[reason]}",
                f"        {', '.join(names[:3])}{more}",
            ]
        return "\n".join(lines)

    __repr__ = __str__


class ParamGroups(list):
    """The list of group dicts ``param_groups`` returns, with ``.split`` (a DecaySplit).

    A plain ``list`` otherwise: pass it to an optimizer as its ``params``.

    Attributes:
        split: which tensors are decayed and, for the others, why not.
    """

    split: DecaySplit


def _no_decay_reason(name, module, pname, p, facts, no_decay, declared, decay_1d):
    patterns, keywords = declared
    if _matches(name, module, no_decay):
        return "no_decay"
    if (
        any(fnmatch.fnmatchcase(name, pat) for pat in patterns)
        or any(name.startswith(prefix) and kw in name[len(prefix) :] for prefix, kw in keywords)
        or getattr(p, "_no_weight_decay", False) is True
    ):  # mamba_ssm/S4's mark on A_log, D
        return "model"
    if decay_1d:
        return None
    if p.dim() <= 1:
        return "1-d"
    if pname == "bias":
        return "bias"
    if facts.bias_or_gain:
        return "module"
    return "bias" if _named_bias(name) else None


def _named_bias(name: str) -> bool:
    """Whether the tensor's own name or its module's has ``bias`` as a word (``_``-separated):
    ``bias``, T5's ``relative_attention_bias.weight``, Swin's ``relative_position_bias_table``
    (additive attention biases stored as tables). Trainer excludes every name containing
    "bias" anywhere; only the last two parts are looked at here, so the weights of a module
    that merely sits under a ``bias_net`` are still decayed."""
    return any("bias" in part.split("_") for part in name.split(".")[-2:])


def param_groups(
    model: nn.Module,
    weight_decay: float | None = None,
    *,
    no_decay: Iterable = (),
    decay_1d: bool = False,
    base_model: nn.Module | None = None,
    timescale: float | Timescale | None = None,
    **group_options: Any,
) -> ParamGroups:
    """Param groups for an sd optimizer: decayed weights, and a ``weight_decay=0`` group.

    No decay, by default, for (the reason recorded in ``no_decay_reasons``):

    - ``"no_decay"``: what ``no_decay`` names: parameter names, fnmatch patterns
      (``"*.pos_emb"``) or module types (``nn.Embedding``);
    - ``"model"``: names the model (or any submodule, names taken relative to it) declares
      in ``no_weight_decay()`` (fnmatch patterns) or ``no_weight_decay_keywords()``
      (substrings): timm's convention, e.g. ViT's ``pos_embed``, ``cls_token``; and
      tensors marked ``p._no_weight_decay = True`` (mamba_ssm's and S4's convention);
    - ``"1-d"``: every tensor of at most one dim: biases of any name, gains of any norm
      class, layer scales, PReLU slopes;
    - ``"bias"``: a tensor whose own name is ``bias``, whatever its shape, or whose own name
      or module's name has ``bias`` as a word (T5's ``relative_attention_bias.weight``, as
      Trainer; Swin's ``relative_position_bias_table``, as timm);
    - ``"module"``: a bias or gain its module type declares in the registry
      (``MultiheadAttention.bias_k``, the weights of torch.nn norm layers of any shape).

    Frozen parameters (``requires_grad=False``) are left out; a tensor shared by several
    modules (tied weights) is counted once, under its first name. The split is in the
    result's ``.split`` (printable) and logged at INFO level on the ``"scaled_decay"``
    logger.

    Args:
        model: the model whose parameters are grouped.
        weight_decay: the decayed group's ``weight_decay``, a non-negative number (required
            unless ``timescale`` is given).
        no_decay: parameter names, fnmatch patterns or ``nn.Module`` types not to decay (a
            single one may be given bare).
        decay_1d: decay the last three kinds above too (``"1-d"``, ``"bias"``,
            ``"module"``): timm's ``weight_decay_exclude_1d=False``.
        base_model: the same architecture at its base width. Each decayed tensor then also
            gets ``fan_in_references``: the fan-in of the same-named tensor of the base
            model, which :class:`~scaled_decay.FanIn` uses as its reference, so
            ``lam == weight_decay`` exactly at the base width (muP-style transfer).
        timescale: instead of ``weight_decay``: gives the decayed group a timescale (steps,
            or an ``sd.Timescale``; ``scaled_decay.timescale``): the optimizer derives its
            weight decay; the other group keeps ``weight_decay=0``.
        **group_options: other group keys (lr, decay_mode, decay_scaling, ...), put into
            both groups.

    Returns:
        The decayed group, then the ``weight_decay=0`` group (each only if it has a
        tensor), with ``.split``. Each group records per tensor ``param_names``,
        module-aware ``fan_ins`` and where each came from, ``fan_in_sources`` (the
        registered module class, ``"1-d"``, or ``"shape"``: ``shape[1] * prod(shape[2:])``,
        the fallback for module types the registry does not know); the
        ``weight_decay=0`` group also records ``no_decay_reasons``.

    Raises:
        ValueError: ``timescale`` and ``weight_decay`` both given; a ``timescale`` that is
            not a positive finite number of steps or an ``sd.Timescale``; without
            ``timescale``, a ``weight_decay`` that is not a non-negative number (None
            included); a non-bool ``decay_1d``; ``no_decay`` not an iterable of names,
            patterns and ``nn.Module`` types; a module whose ``no_weight_decay()`` or
            ``no_weight_decay_keywords()`` returns no collection of names; ``base_model``'s
            parameter names not those of ``model``.

    Warns:
        UserWarning: naming the decayed tensors of >= 2 dims whose fan-in came from their
            shape (describe their module type with ``sd.register_module``).
    """
    if timescale is not None:
        if weight_decay is not None:
            raise ValueError(
                f"timescale={timescale!r} and weight_decay={weight_decay!r} were "
                f"both given: give one (timescale sets weight_decay)"
            )
        timescale_steps(timescale)  # bad values fail here, naming timescale
    elif (
        isinstance(weight_decay, bool)
        or not isinstance(weight_decay, (int, float))
        or not weight_decay >= 0
    ):
        raise ValueError(f"weight_decay must be a non-negative number, got {weight_decay!r}")
    if not isinstance(decay_1d, bool):
        raise ValueError(f"decay_1d must be a bool, got {decay_1d!r}")
    no_decay = _check_no_decay(no_decay)
    declared = _declared(model)
    base_fan_ins = None
    if base_model is not None:
        base_fan_ins = module_fan_ins(base_model)
        names = [n for n, *_ in _named_params_with_modules(model)]
        missing = sorted(set(names) - set(base_fan_ins))
        extra = sorted(set(base_fan_ins) - set(names))
        if missing or extra:
            raise ValueError(
                f"base_model's parameter names do not match the model's: missing from "
                f"base_model {missing[:5]}, only in base_model {extra[:5]}"
            )

    keys = ("params", "param_names", "fan_ins", "fan_in_sources")
    decay: dict[str, Any] = (
        dict({k: [] for k in keys}, weight_decay=weight_decay)
        if timescale is None
        else dict({k: [] for k in keys}, timescale=timescale)
    )
    if base_fan_ins is not None:
        decay["fan_in_references"] = []
    plain: dict[str, Any] = dict({k: [] for k in keys}, no_decay_reasons=[], weight_decay=0.0)
    split = DecaySplit([], {}, [])
    for name, module, pname, p in _named_params_with_modules(model):
        if not p.requires_grad:
            continue
        facts = param_facts(module, pname, p)
        reason = _no_decay_reason(name, module, pname, p, facts, no_decay, declared, decay_1d)
        group = decay if reason is None else plain
        for key, value in zip(keys, (p, name, facts.fan_in, facts.source)):
            group[key].append(value)
        if reason is None:
            split.decayed.append(name)
            if facts.source == "shape":
                split.shape_fan_in.append(name)
            if base_fan_ins is not None:
                decay["fan_in_references"].append(float(base_fan_ins[name]))
        else:
            split.not_decayed[name] = reason
            plain["no_decay_reasons"].append(reason)
    if split.shape_fan_in:
        warnings.warn(
            f"sd.param_groups: {len(split.shape_fan_in)} decayed tensor(s) of >= 2 dims belong "
            f"to module types the fan-in registry does not know, so their fan-in is "
            f"shape[1] * prod(shape[2:]): {', '.join(split.shape_fan_in)}. If that is not the "
            f"input size, describe the module type with sd.register_module().",
            stacklevel=2,
        )
    log.info("sd.param_groups: %s", split)
    out = ParamGroups(dict(g, **group_options) for g in (decay, plain) if g["params"])
    out.split = split
    return out
