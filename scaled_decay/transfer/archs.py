"""The study's architectures as data: what a ``Net`` (architecture x dataset) builds, what
each parameter's role is, and how muP sets its lr.

Roles, read off the parameter names (``nets.py`` and ``models.build_mlp`` name them so):
``input`` (``input.*``, ``tok.*``, ``pos.*`` matrices: they take the data in), ``output``
(``output.weight``), ``output_bias``, ``vector`` (every other tensor of at most one
dimension: biases, LayerNorm gains) and ``hidden`` (every other matrix or kernel).

muP (Yang et al. 2022, "Tensor Programs V", Table 3, the form without output multipliers),
relative to the base width ``b`` (``r = b / n``): the readout is initialized sqrt(r) times
smaller than in SP and the lr is set per role -- AdamW: ``hidden`` and ``output`` get
``lr * r``, the rest ``lr``; SGD: ``input`` and ``vector`` get ``lr / r``, ``hidden`` ``lr``,
``output`` ``lr * r``, ``output_bias`` ``lr``. The transformer's attention scale is 1/d
(``sqrt(d_b) / d``, equal to SP's 1/sqrt(d) at the base width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from .names import ARCH_DATASETS, ARCHS

__all__ = ["Net", "mup_lr_multiplier", "role"]

_INPUT_PREFIXES = ("input.", "tok.", "pos.")

_MUP_LR = {  # role -> exponent k of the lr multiplier r**k
    "adamw": {"input": 0, "vector": 0, "hidden": 1, "output": 1, "output_bias": 0},
    "sgd": {"input": -1, "vector": -1, "hidden": 0, "output": 1, "output_bias": 0},
}


def role(name: str, ndim: int) -> str:
    if name == "output.bias":
        return "output_bias"
    if name == "output.weight":
        return "output"
    if ndim <= 1:
        return "vector"
    if name.startswith(_INPUT_PREFIXES):
        return "input"
    return "hidden"


def mup_lr_multiplier(
    name: str, ndim: int, optimizer: str, parametrization: str, r: float
) -> float:
    """The lr multiplier of one tensor: 1 under SP, ``r ** k`` by role under muP."""
    if parametrization == "sp":
        return 1.0
    return r ** _MUP_LR[optimizer][role(name, ndim)]


@dataclass(frozen=True)
class Net:
    """An architecture on a dataset: builds its models and estimates their cost."""

    arch: str = "mlp"
    dataset: str = "mnist1d"

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.dataset not in ARCH_DATASETS[self.arch]:
            raise ValueError(
                f"dataset for arch {self.arch!r} must be one of "
                f"{ARCH_DATASETS[self.arch]}, got {self.dataset!r}"
            )

    @property
    def probe(self) -> str:
        """The hidden matrix whose per-step shrink the exponents report."""
        return "blocks.0.fc1.weight" if self.arch == "transformer" else "hidden.weight"

    def build(
        self, width: int, parametrization: str = "sp", base_width: int | None = None
    ) -> nn.Module:
        """The model at ``width`` with its random init (muP: shrunk readout, 1/d attention)."""
        from .data import input_dim, n_classes
        from .models import build_mlp
        from .nets import TEXT_HEADS, TinyLM, build_cnn

        d_in, k = input_dim(self.dataset), n_classes(self.dataset)
        mup = parametrization == "mup"
        if self.arch == "mlp":
            model = build_mlp(d_in, width, k)
        elif self.arch == "cnn":
            model = build_cnn(d_in, width, k)
        else:
            base_head = (base_width or width) // TEXT_HEADS
            model = TinyLM(k, d_in, width, attention_base=base_head if mup else None)
        if mup:
            with torch.no_grad():
                model.output.weight.mul_(math.sqrt((base_width or width) / width))
        return model

    def param_count(self, width: int) -> int:
        return _param_count(self, width)

    def macs(self, width: int) -> float:
        """Multiply-adds of one forward pass over one sample (one window for text)."""
        from .data import input_dim, n_classes
        from .nets import cnn_macs, lm_macs

        d_in, k = input_dim(self.dataset), n_classes(self.dataset)
        if self.arch == "mlp":
            return d_in * width + width * width + k * width
        if self.arch == "cnn":
            return cnn_macs(d_in, width, k)
        return lm_macs(k, d_in, width)


@lru_cache(maxsize=256)
def _param_count(net: Net, width: int) -> int:
    with torch.device("meta"):  # shapes only: no memory, no random numbers drawn
        return sum(p.numel() for p in net.build(width).parameters())
