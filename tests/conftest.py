import os

import pytest
from hypothesis import HealthCheck, settings

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
