"""The kernels compile for a GPU without one: Triton's NVIDIA backend (with its bundled ptxas)
builds them for sm_90 here, so a kernel that the interpreter accepts but the compiler rejects
fails on the CPU too; and, at the package's block size and warps, the PTX shows vector loads
(16 B for fp32, 8 B for bf16/fp16 at 4 elements per thread) when the tables say aligned.
"""

import os
import re

import pytest

from scaled_decay.kernels import adam as KA
from scaled_decay.kernels import launch
from scaled_decay.kernels import sgd as KS
from tests.helpers.triton_interpret import triton  # importorskip

try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError:  # pragma: no cover - older/newer Triton layouts
    pytest.skip("this Triton has no ASTSource/GPUTarget", allow_module_level=True)

_COMMON = {
    "table": "*i64",
    "values": "*i64",
    "work": "*i32",
    "n_tensors": "i32",
    "n_programs": "i32",
    "lr_lo": "fp32",
    "wd_hi": "fp32",
    "wd_lo": "fp32",
    "eta0_hi": "fp32",
    "eta0_lo": "fp32",
    "grad_scale_ptr": "*fp32",
    "found_inf_ptr": "*fp32",
    "counts": "*i32",
}
# the kernels' low-precision and cautious-decay switches, off unless a test sets them
_OFF = dict(ROUNDING=0, CAUTIOUS=False)


def _ptx(fn, signature, constexprs):
    sig = dict(signature, **{k: "constexpr" for k in constexprs})
    try:
        kernel = triton.compile(
            ASTSource(fn, sig, constexprs=constexprs),
            target=GPUTarget("cuda", 90, 32),
            options=dict(num_warps=launch.NUM_WARPS),
        )
    except (RuntimeError, FileNotFoundError) as e:
        if "ptxas" in str(e).lower():
            pytest.skip(f"no ptxas: {e}")
        raise
    return kernel.asm["ptx"]


def _vector_loads(ptx):
    return len(re.findall(r"ld\.global(?:\.\w+)*\.v[24]\.", ptx))


@pytest.mark.parametrize("elem", [0, 1, 2])
@pytest.mark.parametrize("aligned", [True, False])
def test_adam_kernel_compiles_for_sm90(elem, aligned):
    sig = dict(
        _COMMON,
        lr="*fp32",
        consts="*fp64",
        one_minus_beta1="fp32",
        beta2="fp32",
        one_minus_beta2="fp32",
        eps="fp32",
    )
    ptx = _ptx(
        KA._adam_kernel,
        sig,
        dict(
            _OFF,
            ELEM=elem,
            STATE_ELEM=elem,
            DECAY_KIND=2,
            LR_POW=2,
            DIV_ETA0=True,
            AMSGRAD=True,
            MAXIMIZE=True,
            LR_IS_PTR=True,
            HAS_SCALE=True,
            HAS_INF=True,
            ALIGNED=aligned,
            BLOCK=launch.BLOCK,
        ),
    )
    assert (_vector_loads(ptx) > 0) == aligned
    assert "div.rn.f32" in ptx and "sqrt.rn.f32" in ptx  # IEEE division and sqrt, not approx


@pytest.mark.parametrize("elem", [0, 1])
def test_sgd_kernel_compiles_for_sm90(elem):
    sig = dict(_COMMON, lr="fp32", momentum="fp32", one_minus_dampening="fp32")
    ptx = _ptx(
        KS._sgd_kernel,
        sig,
        dict(
            _OFF,
            ELEM=elem,
            STATE_ELEM=elem,
            DECAY_KIND=1,
            LR_POW=0,
            DIV_ETA0=False,
            MOMENTUM=True,
            NESTEROV=True,
            MAXIMIZE=False,
            LR_IS_PTR=False,
            HAS_SCALE=False,
            HAS_INF=False,
            ALIGNED=True,
            BLOCK=launch.BLOCK,
        ),
    )
    assert _vector_loads(ptx) > 0


@pytest.mark.parametrize("elem", [1, 2])
@pytest.mark.parametrize("rounding", [1, 2])
def test_low_precision_and_cautious_kernels_compile_for_sm90(elem, rounding):
    """Kahan and stochastic stores of bf16/fp16 weights with fp32 moments, and cautious decay
    (no GPU in most sessions: this is where the compiled form of those paths is checked)."""
    sig = dict(
        _COMMON,
        lr="fp32",
        consts="*fp64",
        one_minus_beta1="fp32",
        beta2="fp32",
        one_minus_beta2="fp32",
        eps="fp32",
    )
    flags = dict(
        ELEM=elem,
        STATE_ELEM=0,
        ROUNDING=rounding,
        CAUTIOUS=True,
        DECAY_KIND=2,
        LR_POW=1,
        DIV_ETA0=False,
        MAXIMIZE=False,
        LR_IS_PTR=False,
        HAS_SCALE=True,
        HAS_INF=True,
        ALIGNED=True,
        BLOCK=launch.BLOCK,
    )
    ptx = _ptx(KA._adam_kernel, sig, dict(flags, AMSGRAD=False))
    assert _vector_loads(ptx) > 0 and "atom" in ptx  # (the cautious counts)
    sig = dict(_COMMON, lr="fp32", momentum="fp32", one_minus_dampening="fp32")
    _ptx(KS._sgd_kernel, sig, dict(flags, MOMENTUM=True, NESTEROV=False))


def test_step_kernel_compiles_for_sm90():
    _ptx(
        KA._adam_steps_kernel,
        {"table": "*i64", "n_tensors": "i32", "found_inf_ptr": "*fp32"},
        dict(HAS_INF=True, BLOCK_T=1024),
    )


def _registers(ptx: str) -> int:
    """Registers per thread that the bundled ptxas gives the kernel (skip without one)."""
    import subprocess
    import tempfile

    try:
        from triton.backends.nvidia.compiler import get_ptxas

        ptxas = get_ptxas(90).path
    except Exception as e:
        pytest.skip(f"no bundled ptxas ({type(e).__name__}: {e})")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        out = subprocess.run(
            [ptxas, "-v", "--gpu-name", "sm_90a", f.name, "-o", os.devnull],
            capture_output=True,
            text=True,
            check=True,
        )
    return int(re.search(r"Used (\d+) registers", out.stderr).group(1))


@pytest.mark.parametrize("elem", [0, 1])
def test_kernels_leave_room_for_several_programs_per_sm(elem):
    """At 4096 elements x 8 warps the Adam kernel took 187 registers per thread: one program
    per SM, and 40-75% of copy bandwidth on an H200. The package's config must stay at or
    under 96 (at least 2 programs of 8 warps per SM; 64 were measured)."""
    sig = dict(
        _COMMON,
        lr="fp32",
        consts="*fp64",
        one_minus_beta1="fp32",
        beta2="fp32",
        one_minus_beta2="fp32",
        eps="fp32",
    )
    ptx = _ptx(
        KA._adam_kernel,
        sig,
        dict(
            _OFF,
            ELEM=elem,
            STATE_ELEM=elem,
            DECAY_KIND=2,
            LR_POW=2,
            DIV_ETA0=True,
            AMSGRAD=True,
            MAXIMIZE=False,
            LR_IS_PTR=False,
            HAS_SCALE=True,
            HAS_INF=True,
            ALIGNED=True,
            BLOCK=launch.BLOCK,
        ),
    )
    assert _registers(ptx) <= 96


def test_no_fma_contraction_beyond_the_explicit_ones():
    """``launch.FP_FUSION`` (False, passed at every launch) keeps the compiler from fusing
    ``p * (1 - c)`` into Adam's update, which torch rounds apart: with fusion on, the PTX of
    the decoupled Adam kernel has more FMAs than its explicit ``tl.fma`` calls give."""
    sig = dict(
        _COMMON,
        lr="fp32",
        consts="*fp64",
        one_minus_beta1="fp32",
        beta2="fp32",
        one_minus_beta2="fp32",
        eps="fp32",
    )
    consts = dict(
        _OFF,
        ELEM=0,
        STATE_ELEM=0,
        DECAY_KIND=2,
        LR_POW=1,
        DIV_ETA0=False,
        AMSGRAD=False,
        MAXIMIZE=False,
        LR_IS_PTR=False,
        HAS_SCALE=False,
        HAS_INF=False,
        ALIGNED=True,
        BLOCK=launch.BLOCK,
    )
    counts = {}
    for fusion in (True, False):
        s = dict(sig, **{k: "constexpr" for k in consts})
        kernel = triton.compile(
            ASTSource(KA._adam_kernel, s, constexprs=consts),
            target=GPUTarget("cuda", 90, 32),
            options=dict(num_warps=launch.NUM_WARPS, enable_fp_fusion=fusion),
        )
        counts[fusion] = len(re.findall(r"fma\.rn\.f32", kernel.asm["ptx"]))
    assert launch.FP_FUSION is False
    assert counts[False] < counts[True], counts
