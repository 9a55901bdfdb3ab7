"""The drop-in tests' pairs: each torch.optim optimizer next to the sd one configured to be
the same optimizer (sd.SGD with decay_mode="l2", no scaling rules), and the scenario helpers
that run one scenario on both."""

import torch

import scaled_decay as sd


def _maker(cls, defaults):
    return lambda ps, **kw: cls(ps, **{**defaults, **kw})


PAIRS = {
    "sgd": (
        _maker(torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
        _maker(sd.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01, decay_mode="l2")),
    ),
    "adam": (
        _maker(torch.optim.Adam, dict(lr=0.01, weight_decay=0.01, amsgrad=True)),
        _maker(sd.Adam, dict(lr=0.01, weight_decay=0.01, amsgrad=True)),
    ),
    "adamw": (_maker(torch.optim.AdamW, dict(lr=0.01)), _maker(sd.AdamW, dict(lr=0.01))),
}
SHAPES = ((4, 3), (3,), (2, 2, 2))


def make_params(seed=0, shapes=SHAPES, dtypes=None):
    g = torch.Generator().manual_seed(seed)
    dtypes = dtypes or [torch.float32] * len(shapes)
    return [torch.randn(s, generator=g).to(dt).requires_grad_() for s, dt in zip(shapes, dtypes)]


def set_grads(params, step, skip=()):
    g = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        p.grad = None if i in skip else noise.to(p.dtype)


def on_both(name, scenario, **kw):
    """``scenario(make_optimizer)`` for torch.optim and for sd; returns both results."""
    return [scenario(lambda ps, make=make: make(ps, **kw)) for make in PAIRS[name]]


def assert_same_params(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
