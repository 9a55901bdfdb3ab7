import importlib
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings


def _import_the_installed_kernels_package() -> None:
    """The source tree's top-level ``kernels/`` folder (shipped in the wheel as
    ``scaled_decay.kernels``) shadows the PyPI package ``kernels`` (Hugging Face's, which
    transformers >= 5.25 installs and imports) while the repository root is on ``sys.path``,
    as ``python -m pytest`` and the ``pythonpath`` setting put it: transformers then fails
    with "cannot import name 'CUDAProperties' from 'kernels'". Import the installed package
    first, with the root off the path; ``sys.modules`` keeps it. Nothing of this package
    imports a top-level ``kernels``."""
    root = Path(__file__).resolve().parents[1]
    saved = sys.path[:]
    sys.path[:] = [p for p in saved if Path(p or ".").resolve() != root]
    try:
        importlib.import_module("kernels")
    except ImportError:
        pass  # not installed: nothing is shadowed that anyone imports
    finally:
        sys.path[:] = saved


_import_the_installed_kernels_package()

# "ci": fixed examples (derandomized) so CI never flakes; "dev": more, random examples.
settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=40,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def one_thread():
    """Tiny tensors: a second intra-op thread only spin-waits (seconds per test on a busy
    2-core machine). Restores torch's thread count afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps process-wide state; each test starts and ends without it."""
    state = pytest.importorskip("accelerate.state")
    state.AcceleratorState._reset_state(True)
    state.GradientState._reset_state()
    yield
    state.AcceleratorState._reset_state(True)
    state.GradientState._reset_state()
