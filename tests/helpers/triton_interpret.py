"""Helpers for tests that run the Triton kernels on CPU tensors, under Triton's interpreter.

``scaled_decay.kernels`` runs CPU tensors through a copy of itself imported with the
interpreter on, so the environment only has to say ``TRITON_INTERPRET=1`` while a test runs
(the package's policy: Triton on CPU only under the interpreter). The ``interpret`` fixture
sets it for one test and restores it after, so other test files (and the compiled kernels
used by the CUDA tests in the same process) are not affected.
"""

import pytest
import torch

from scaled_decay.fused_guard import ulp

triton = pytest.importorskip("triton")


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    yield


def use_backend(backend: str, request) -> str:
    """``backend``, with the ``interpret`` fixture requested for the test when it is "triton"
    (the test module must import the fixture)."""
    if backend == "triton":
        request.getfixturevalue("interpret")
    return backend


# Per-dtype tolerance of a kernel result against the reference (tests and README):
# fp32: the foreach reference on the same tensors, within ULPS[fp32] ulps: the kernel follows
#       torch's operation order and FMAs, but its sqrt/division are IEEE-rounded and torch's
#       CPU sqrt was seen 1 ulp off; Adam's update carries such differences (0-1 ulp usually);
# bf16/fp16: the same math on fp32 copies, rounded once to the dtype: the kernel must be
#       within ULPS[dtype] ulp of it, and bit-equal for at least EXACT_FRACTION of elements
#       (a truncating store, or a per-op rounding like foreach's, fails that).
ULPS = {torch.float32: 4, torch.bfloat16: 1, torch.float16: 1}
EXACT_FRACTION = 0.99


def _interpreter_fma_is_exact() -> bool:
    """Whether Triton's interpreter rounds ``tl.fma`` once, as the GPU does. Before Triton 3.9
    it computed ``x * y + z`` in the operands' dtype (two roundings), so fp32 results that
    cancel can differ from the GPU's (and torch's fused CPU ops) by more than a few ulps; torch
    2.14.1 pins Triton 3.8. Probed on values where one rounding and two differ."""
    import numpy as np
    import triton.language as tl

    try:
        from triton.runtime.interpreter import InterpreterBuilder, TensorHandle
    except ImportError:  # another Triton layout: assume the older, twice-rounding fma
        return False
    x = TensorHandle(np.array([1 + 2.0**-12], np.float32), tl.float32)
    z = TensorHandle(np.array([-(1 + 2.0**-11)], np.float32), tl.float32)
    out = InterpreterBuilder.create_fma(InterpreterBuilder(), x, x, z)  # exact: 2**-24
    return float(out.data[0]) == 2.0**-24


INTERPRETER_FMA_EXACT = _interpreter_fma_is_exact()


def assert_close_ulps(out: torch.Tensor, ref32: torch.Tensor, before: torch.Tensor, what: str):
    """``out`` (any dtype) against the fp32 reference ``ref32``, per the table above. The
    spacing is taken at max(|before|, |ref|, |ref - before|): a result that cancels to near 0
    is judged at the size of the numbers it came from (the old value and the update)."""
    dtype = out.dtype
    if out.numel() == 0:
        return
    if dtype == torch.float32 and out.device.type == "cpu" and not INTERPRETER_FMA_EXACT:
        # ulp-level fp32 checks need the GPU's single-rounding fma (on CPU tensors: the
        # interpreter of Triton >= 3.9);
        # otherwise the fused backends' tolerance (README: rtol 1e-5, atol 1e-6)
        torch.testing.assert_close(out, ref32, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")
        return
    ref = ref32 if dtype == torch.float32 else ref32.to(dtype)
    scale = torch.maximum(
        torch.maximum(before.float().abs(), ref32.abs()), (ref32 - before.float()).abs()
    )
    err = (out.float() - ref.float()).abs()
    bound = ULPS[dtype] * ulp(scale, dtype)
    bad = ~(err <= bound) & ~(out.float().isnan() & ref.float().isnan())
    assert not bad.any(), (
        f"{what} ({dtype}): {int(bad.sum())} of {out.numel()} elements off by "
        f"more than {ULPS[dtype]} ulp; worst {float(err[bad].max())}"
    )
    if dtype != torch.float32:
        exact = (out.float() == ref.float()) | (out.float().isnan() & ref.float().isnan())
        frac = float(exact.float().mean())
        assert frac >= EXACT_FRACTION, f"{what} ({dtype}): only {frac:.4f} bit-equal"
