"""Fused Triton update kernels, installed as ``scaled_decay.kernels``.

Each kernel sits beside a launcher with the pure-torch reference's signature:
``adam.adam_triton`` mirrors ``scaled_decay.updates.adam.adam_math`` and ``sgd.sgd_triton``
mirrors ``scaled_decay.updates.sgd.sgd_math``, each with GradScaler's ``grad_scale``/
``found_inf`` added; ``adam_launch``/``sgd_launch`` beside them take tables the caller owns
(the optimizers' step plans). The functions exported here take lists of any devices and
dtypes and launch once per (device, dtype) group.

A leaf: nothing here imports the rest of the package. The caller hands over tensors the
kernels can walk flat (``scaled_decay.layouts``) and numbers.

Where they run: CUDA tensors with the compiled kernels; CPU tensors only when the environment
has ``TRITON_INTERPRET=1`` (Triton's interpreter: slow, for tests and debugging). The
interpreter works per kernel object, decided when ``@triton.jit`` runs, so this package keeps
a second copy of itself, imported with the interpreter on, for CPU tensors: the compiled
kernels for CUDA tensors stay compiled whatever the order of imports, and setting
``TRITON_INTERPRET=1`` late (as tests do) still works.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

from . import adam, sgd, tables  # noqa: F401  (imports triton: ImportError without it)

__all__ = ["adam_triton", "available", "package_for", "sgd_triton", "unavailable_reason"]

_INTERPRETED_NAME = "scaled_decay._kernels_interpreted"


def _is_interpreted(package) -> bool:
    return type(package.adam._adam_kernel).__name__ == "InterpretedFunction"


INTERPRETED = _is_interpreted(sys.modules[__name__])  # decided as @triton.jit ran, above


def _interpreted_copy():
    """This package executed again under ``TRITON_INTERPRET=1`` (loaded once, then cached)."""
    if INTERPRETED:
        return sys.modules[__name__]
    package = sys.modules.get(_INTERPRETED_NAME)
    if package is None:
        spec = importlib.util.spec_from_file_location(
            _INTERPRETED_NAME, __file__, submodule_search_locations=[os.path.dirname(__file__)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[_INTERPRETED_NAME] = package
        before = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1"  # read by @triton.jit as each kernel is defined
        try:
            spec.loader.exec_module(package)
        except BaseException:
            for name in [n for n in sys.modules if n.startswith(_INTERPRETED_NAME)]:
                del sys.modules[name]
            raise
        finally:
            if before is None:
                del os.environ["TRITON_INTERPRET"]
            else:
                os.environ["TRITON_INTERPRET"] = before
    return package


def unavailable_reason(device) -> str | None:
    """Why the kernels cannot run on ``device``, or None when they can."""
    device = torch.device(device)
    if device.type == "cuda":
        return None if torch.cuda.is_available() else "CUDA is not available"
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") == "1":
            return None
        return (
            "Triton kernels run on CPU tensors only under Triton's interpreter "
            "(set TRITON_INTERPRET=1)"
        )
    return f"no Triton backend for device type {device.type!r}"


def available(device) -> bool:
    return unavailable_reason(device) is None


def package_for(device):
    """This package, or its interpreted copy for CPU tensors: the one whose launchers run on
    ``device`` (RuntimeError naming the reason where none can)."""
    device = torch.device(device)
    reason = unavailable_reason(device)
    if reason is not None:
        raise RuntimeError(f"backend='triton' cannot run on {device}: {reason}")
    return _interpreted_copy() if device.type == "cpu" else sys.modules[__name__]


def _groups(params):
    """Positions of the tensors of each (device, dtype), in first-seen order."""
    out = {}
    for i, p in enumerate(params):
        out.setdefault((p.device, p.dtype), []).append(i)
    return list(out.values())


def _take(lists, idx):
    return [lst if not lst else [lst[i] for i in idx] for lst in lists]


def adam_triton(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    max_exp_avg_sqs,
    steps,
    *,
    l2_lams,
    decay,
    lr,
    beta1,
    beta2,
    eps,
    amsgrad,
    maximize,
    grad_scale=None,
    found_inf=None,
) -> None:
    """``adam_math`` through the fused kernel, one launch per (device, dtype)."""
    lists = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps]
    for idx in _groups(params):
        package = package_for(params[idx[0]].device)
        lams, c = _take([l2_lams, decay], idx)
        package.adam.adam_triton(
            *_take(lists, idx),
            l2_lams=lams,
            decay=c,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            amsgrad=amsgrad,
            maximize=maximize,
            grad_scale=grad_scale,
            found_inf=found_inf,
        )


def sgd_triton(
    params,
    grads,
    bufs,
    *,
    l2_lams,
    decay,
    lr,
    momentum,
    dampening,
    nesterov,
    maximize,
    grad_scale=None,
    found_inf=None,
) -> None:
    """``sgd_math`` through the fused kernel, one launch per (device, dtype); new momentum
    buffers are written into ``bufs``."""
    for idx in _groups(params):
        package = package_for(params[idx[0]].device)
        p, g, b, lams, c = _take([params, grads, bufs, l2_lams, decay], idx)
        package.sgd.sgd_triton(
            p,
            g,
            b,
            l2_lams=lams,
            decay=c,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            maximize=maximize,
            grad_scale=grad_scale,
            found_inf=found_inf,
        )
        for i, buf in zip(idx, b):
            bufs[i] = buf
