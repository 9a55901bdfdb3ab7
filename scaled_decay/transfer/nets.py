"""The CNN and the transformer of the study, named so that the muP rules of ``archs.py``
read their roles off the parameter names: ``input.*`` / ``tok.*`` / ``pos.*`` take the
data in, ``output.*`` is the readout, every other matrix is hidden."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TEXT_HEADS", "TEXT_LAYERS", "TinyLM", "build_cnn"]

TEXT_LAYERS = 2
TEXT_HEADS = 4  # fixed: the head size grows with the width (width / 4)


def build_cnn(d_in: int, width: int, n_classes: int = 10) -> nn.Sequential:
    """A flat square image (``d_in`` pixels) -> conv 3x3 (1 -> width) -> max-pool ->
    conv 3x3 (width -> width) -> max-pool -> linear readout of the flattened map. Images
    wider than 16 pixels (MNIST's 28) are average-pooled 2x first, to keep the hidden conv
    cheap. (A global-average readout learned too slowly to overfit in a preview's steps.)"""
    side = math.isqrt(d_in)
    if side * side != d_in:
        raise ValueError(f"the CNN needs square images, got {d_in} pixels")
    layers = [("unflatten", nn.Unflatten(1, (1, side, side)))]
    if side > 16:
        layers.append(("pool0", nn.AvgPool2d(2)))
        side //= 2
    final = (side // 2) // 2
    layers += [
        ("input", nn.Conv2d(1, width, 3, padding=1)),
        ("act1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("hidden", nn.Conv2d(width, width, 3, padding=1)),
        ("act2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("output", nn.Linear(width * final * final, n_classes)),
    ]
    return nn.Sequential(OrderedDict(layers))


def cnn_macs(d_in: int, width: int, n_classes: int = 10) -> float:
    """Multiply-adds of one forward pass of :func:`build_cnn` (for the cost estimate)."""
    side = math.isqrt(d_in)
    side = side // 2 if side > 16 else side
    final = (side // 2) // 2
    return (
        side * side * 9 * width
        + (side // 2) ** 2 * 9 * width * width
        + final * final * width * n_classes
    )


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, scale: float):
        super().__init__()
        self.heads, self.scale = heads, scale
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, w = h.shape
        q, k, v = (
            self.qkv(self.ln1(h)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        )
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        h = h + self.proj(a.transpose(1, 2).reshape(b, t, w))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class TinyLM(nn.Module):
    """A causal pre-LN transformer over bytes: token and position embeddings, ``layers``
    blocks (attention with ``heads`` heads, MLP x4), final LayerNorm, linear readout.

    ``attention_base``: None for SP, attention scale 1/sqrt(head size); a base head size
    ``d0`` for muP, scale sqrt(d0)/head size (1/d, equal to SP at the base width).
    """

    def __init__(
        self,
        vocab: int,
        context: int,
        width: int,
        layers: int = TEXT_LAYERS,
        heads: int = TEXT_HEADS,
        attention_base: int | None = None,
    ):
        super().__init__()
        if width % heads:
            raise ValueError(f"width must be a multiple of {heads} heads, got {width}")
        d = width // heads
        scale = 1 / math.sqrt(d) if attention_base is None else math.sqrt(attention_base) / d
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(_Block(width, heads, scale) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.output = nn.Linear(width, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            h = block(h)
        return self.output(self.ln_f(h))


def lm_macs(vocab: int, context: int, width: int, layers: int = TEXT_LAYERS) -> float:
    """Multiply-adds of one forward pass over one window (for the cost estimate)."""
    per_token = layers * (12 * width * width + 2 * context * width) + width * vocab
    return context * per_token
