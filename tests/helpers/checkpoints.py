"""A checkpoint's round trip in memory, as a training script would do it to disk."""

import io

import torch


def save_load(obj, weights_only: bool = True):
    """``obj`` through ``torch.save`` and back with ``torch.load(weights_only=...)``;
    ``weights_only=True`` (torch's default) is what a state dict must survive."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=weights_only)
