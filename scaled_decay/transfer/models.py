"""The study's MLPs (d->n->n->10) and how each arm builds its optimizer, for every
architecture (the CNN and the transformer are in ``nets.py``, their roles in ``archs.py``).

Two parametrizations, both defined relative to a base width ``b`` so that they coincide at
``n == b`` (r = b/n below):

- ``"sp"``: standard parametrization, torch's default init, one global lr.
- ``"mup"``: muP (Yang et al. 2022, "Tensor Programs V", Table 3, the form without output
  multipliers): the output layer is initialized sqrt(r) times smaller than in SP and the
  lr is set per tensor. AdamW: hidden and output weights get ``lr * r`` (what the ``mup``
  package's MuAdam does), the input layer and biases ``lr``. SGD: the input layer (weight
  and bias) and the hidden layer's bias get ``lr / r``, hidden weights ``lr``, output
  weights ``lr * r``, the output bias ``lr``.

The optimizer always comes from ``sd.param_groups`` (biases undecayed, module-aware fan-ins,
per-tensor fan-in references from the base-width model), split into one group per tensor so
each tensor can carry its own lr. The rules are referenced to the base width
(``FanIn`` via ``base_model``, ``ParamCount(reference=N(base))``), so at ``n == b`` every rule
gives each tensor exactly ``weight_decay``: all rules share the base width's runs, and a
rule's lambda reads the same as plain decay there.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

import scaled_decay as sd
from scaled_decay.group_keys import PER_TENSOR_KEYS

from .archs import Net, mup_lr_multiplier
from .names import DATA_RULES, MODES, OPTIMIZERS, PARAMETRIZATIONS, RULE_LABELS, RULES

__all__ = [
    "DATA_RULES",
    "MODES",
    "OPTIMIZERS",
    "PARAMETRIZATIONS",
    "RULES",
    "Arm",
    "build_mlp",
    "build_optimizer",
    "decay_signature",
    "param_count",
]

SGD_MOMENTUM = 0.9


@dataclass(frozen=True)
class Arm:
    """What one training run's optimizer is: everything but lambda, width and seed."""

    optimizer: str  # "sgd" | "adamw"
    parametrization: str  # "sp" | "mup"
    rule: str  # one of RULES or DATA_RULES
    mode: str  # "decoupled" | "independent"

    @property
    def label(self) -> str:
        return f"{self.optimizer}/{self.parametrization}/{self.mode}/{RULE_LABELS[self.rule]}"


def build_mlp(d_in: int, width: int, n_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            [
                ("input", nn.Linear(d_in, width)),
                ("act1", nn.ReLU()),
                ("hidden", nn.Linear(width, width)),
                ("act2", nn.ReLU()),
                ("output", nn.Linear(width, n_classes)),
            ]
        )
    )


def param_count(d_in: int, width: int, n_classes: int = 10) -> int:
    return (d_in + 1) * width + (width + 1) * width + (width + 1) * n_classes


def _scaling(rule: str, base_param_count: int, steps_per_epoch: int, epochs: int):
    if rule == "none":
        return None
    if rule == "fan_in":
        return sd.FanIn(power=1.0)  # reference: the base model's fan-in, per tensor
    if rule == "fan_in_inv":
        return sd.FanIn(power=-1.0)
    if rule == "param_count":
        return sd.ParamCount(reference=float(base_param_count))
    if rule == "steps_per_epoch":
        return sd.StepsPerEpoch(steps_per_epoch)
    if rule == "steps_per_epoch_T":
        return sd.StepsPerEpoch(steps_per_epoch, epochs=epochs)
    raise ValueError(f"rule must be one of {RULES + DATA_RULES}, got {rule!r}")


def build_optimizer(
    model: nn.Module,
    arm: Arm,
    *,
    net: Net,
    width: int,
    lr: float,
    weight_decay: float,
    base_width: int,
    steps_per_epoch: int = 1,
    epochs: int = 1,
):
    """The arm's sd optimizer for ``model`` (``net`` at ``width``): one param group per
    tensor, each with its muP lr (see ``archs.py``)."""
    base = net.build(base_width)
    scaling = _scaling(arm.rule, net.param_count(base_width), steps_per_epoch, epochs)
    groups: list[dict] = []
    for group in sd.param_groups(
        model, weight_decay, base_model=base, decay_mode=arm.mode, decay_scaling=scaling
    ):
        for i, p in enumerate(group["params"]):
            one = {k: v for k, v in group.items() if k not in ("params", *PER_TENSOR_KEYS)}
            one["params"] = [p]
            for key in PER_TENSOR_KEYS:
                if key in group:
                    one[key] = [group[key][i]]
            one["lr"] = lr * mup_lr_multiplier(
                group["param_names"][i],
                p.dim(),
                arm.optimizer,
                arm.parametrization,
                base_width / width,
            )
            groups.append(one)
    if arm.optimizer == "sgd":
        return sd.SGD(groups, lr=lr, momentum=SGD_MOMENTUM)
    if arm.optimizer == "adamw":
        return sd.AdamW(groups, lr=lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {arm.optimizer!r}")


def decay_signature(
    arm: Arm,
    *,
    net: Net = Net(),
    width: int,
    base_width: int,
    lr: float,
    steps_per_epoch: int = 1,
    epochs: int = 1,
) -> dict:
    """Per decayed tensor, the fraction of it removed per step at the initial lr when
    ``weight_decay == 1`` (the amount ``c`` of ``p *= 1 - c``), read from the optimizer's own
    decay_report.

    Two arms whose signatures are proportional train identically once their lambdas are
    rescaled by the ratio: they share one sweep (see ``sweeps.py``).
    """
    model = net.build(width)
    opt = build_optimizer(
        model,
        arm,
        net=net,
        width=width,
        lr=lr,
        weight_decay=1.0,
        base_width=base_width,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
    )
    sig = {}
    for row in opt.decay_report():
        if row.weight_decay > 0:
            sig[row.name] = row.lam * (row.lr if row.decay_mode == "decoupled" else 1.0)
    return sig
