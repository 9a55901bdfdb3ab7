"""Every backend against "loop", one step from drawn state, on drawn layouts and dtypes.

The matrix: backends (foreach, torch_fused, auto; triton under the interpreter in a smaller
test) x fp32/bf16/fp16 x layouts (contiguous, transposed, channels_last, strided slices,
grads and state whose strides differ from the param's, size-1 dims, 0 elements) x
SGD/Adam/AdamW x decay modes x scaling rules. Tolerances are the README's per-dtype table
(tests/helpers/triton_interpret.py): a fused backend's tensor must be within ULPS of the reference
math on fp32 copies rounded once, or bit-equal to "loop" (a tensor a fused backend handed
to the foreach math). The unfused backends must equal "loop" bit for bit.

It catches torch's fused-kernel bugs when the package's guard is off (tested below):
torch's CPU fused AdamW/SGD mix up elements when a grad's strides differ from its param's,
and torch 2.13's CPU fused SGD is wrong for bf16/fp16 tensors of 16 elements or more.
"""

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import scaled_decay as sd
from scaled_decay import fused_guard as G
from scaled_decay import step_plan
from tests.helpers.fused_checks import check_tensor, torch_fused_sgd_wrong
from tests.helpers.problems import DECAY_MODES, SCALINGS
from tests.helpers.triton_interpret import interpret  # noqa: F401  (fixture)

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
OPTIMIZERS = ["sgd", "sgd_momentum", "sgd_nesterov", "sgd_damp", "adam", "adam_amsgrad", "adamw"]
SHAPES = [
    (5, 3),
    (4, 8),
    (2, 3, 2, 2),
    (3, 1),
    (1, 4),
    (1, 3, 1, 2),
    (17,),
    (1,),
    (0,),
    (0, 3),
    (2, 0, 2, 2),
]
PARAM_LAYOUTS = ["contiguous", "transposed", "channels_last", "sliced"]
OTHER_LAYOUTS = ["like", "contiguous", "transposed"]  # grads and state

tensor_specs = st.tuples(
    st.sampled_from(SHAPES),
    st.sampled_from(PARAM_LAYOUTS),
    st.sampled_from(OTHER_LAYOUTS),
    st.sampled_from(OTHER_LAYOUTS),
)


def _laid_out(values: torch.Tensor, layout: str, like: torch.Tensor = None) -> torch.Tensor:
    """``values`` copied into a tensor of the named layout."""
    if layout == "like":
        out = torch.empty_like(like, memory_format=torch.preserve_format)
    elif layout == "transposed" and values.dim() >= 2:
        out = torch.empty(tuple(reversed(values.shape)), dtype=values.dtype).permute(
            *reversed(range(values.dim()))
        )
    elif layout == "channels_last" and values.dim() == 4:
        out = torch.empty_like(values, memory_format=torch.channels_last)
    elif layout == "sliced" and values.dim() >= 1:
        out = torch.empty(*values.shape[:-1], 2 * values.shape[-1], dtype=values.dtype)[..., ::2]
    else:
        out = torch.empty_like(values, memory_format=torch.contiguous_format)
    return out.copy_(values)


def _same_layout_copy(t: torch.Tensor) -> torch.Tensor:
    """A copy with ``t``'s exact strides (clone() makes non-dense tensors contiguous)."""
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype).copy_(t)


def _state_keys(name):
    if name.startswith("adam"):
        return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if name == "adam_amsgrad" else [])
    return ["momentum_buffer"] if name != "sgd" else []


def _problem(seed, specs, dtype, name, first_step):
    """Params, grads and state (plain values with their layouts) drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for shape, p_layout, g_layout, s_layout in specs:
        p = _laid_out(torch.randn(shape, generator=g).to(dtype), p_layout)
        grad = _laid_out(torch.randn(shape, generator=g).to(dtype), g_layout, p)
        state = {}
        if not first_step or name.startswith("adam"):
            for key in _state_keys(name):
                v = torch.randn(shape, generator=g) * 0.5
                if key == "exp_avg_sq":
                    v = torch.rand(shape, generator=g) * 0.01 + 1e-4
                if key == "max_exp_avg_sq":
                    v = state["exp_avg_sq"].float() + torch.rand(shape, generator=g) * 0.01
                state[key] = _laid_out(v.to(dtype), s_layout, p)
            if name.startswith("adam"):
                state["step"] = torch.tensor(0.0 if first_step else 3.0)
                if first_step:
                    state = {k: v.zero_() for k, v in state.items()}
        items.append((p, grad, state))
    return items


def _make(name, params, backend, mode, scaling, maximize):
    kw = dict(
        weight_decay=0.1, decay_mode=mode, decay_scaling=scaling, maximize=maximize, backend=backend
    )
    if name.startswith("adam"):
        cls = sd.AdamW if name == "adamw" else sd.Adam
        return cls(params, lr=0.01, betas=(0.9, 0.99), amsgrad=name == "adam_amsgrad", **kw)
    extra = {
        "sgd": {},
        "sgd_momentum": dict(momentum=0.9),
        "sgd_nesterov": dict(momentum=0.9, nesterov=True),
        "sgd_damp": dict(momentum=0.8, dampening=0.3),
    }[name]
    return sd.SGD(params, lr=0.05, **extra, **kw)


def _step(items, name, backend, mode, scaling, maximize, lr_factor, wide=None):
    """One step on copies of ``items`` (in dtype ``wide`` if given); returns p and state."""
    params = []
    for p, grad, _ in items:
        p2 = _same_layout_copy(p if wide is None else p.to(wide)).requires_grad_()
        p2.grad = _same_layout_copy(grad if wide is None else grad.to(wide))
        params.append(p2)
    opt = _make(name, params, backend, mode, scaling, maximize)
    opt.param_groups[0]["lr"] *= lr_factor  # a scheduled lr: initial_lr stays
    for p2, (_, _, state) in zip(params, items):
        if state:
            opt.state[p2] = {
                k: v.clone()
                if k == "step"
                else _same_layout_copy(v if wide is None else v.to(wide))
                for k, v in state.items()
            }
    opt.step()
    return [(p2.detach(), {k: v for k, v in opt.state[p2].items() if k != "step"}) for p2 in params]


def check_backend(items, name, backend, mode, scaling, maximize, lr_factor):
    """Runs ``backend`` and "loop" (and the fp32 reference) and compares every tensor."""
    args = (name, backend, mode, scaling, maximize, lr_factor)
    out = _step(items, *args)
    loop = _step(items, name, "loop", *args[2:])
    ref = _step(items, name, "loop", *args[2:], wide=torch.float32)
    exact_only = backend in ("loop", "foreach")
    equal = total = 0
    for i, ((p, st_), (lp, lst), (rp, rst), (before, _, bst)) in enumerate(
        zip(out, loop, ref, items)
    ):
        pairs = [("param", p, lp, rp, before)] + [
            (k, st_[k], lst[k], rst[k], bst.get(k, torch.zeros_like(lst[k]))) for k in lst
        ]
        assert set(st_) == set(lst), f"tensor {i}: state keys {set(st_)} != {set(lst)}"
        for what, a, b, r, before_t in pairs:
            e, n = check_tensor(a, b, r, before_t, f"{backend} tensor {i} {what}", exact_only)
            equal, total = equal + e, total + n
    # README: low-precision fused results are also bit-equal to the rounded reference for
    # >= 99% of elements (judged where there are enough elements for a fraction to mean much)
    if total >= 200:
        assert equal / total >= 0.99, f"{backend}: only {equal}/{total} bit-equal"


common = dict(
    seed=st.integers(0, 2**31 - 1),
    specs=st.lists(tensor_specs, min_size=1, max_size=4),
    dtype=st.sampled_from(DTYPES),
    name=st.sampled_from(OPTIMIZERS),
    mode=st.sampled_from(DECAY_MODES),
    scaling=st.sampled_from(SCALINGS),
    maximize=st.booleans(),
    lr_factor=st.sampled_from([1.0, 0.3]),
    first_step=st.booleans(),
)

# The two torch bugs, pinned: a transposed param with a contiguous grad (CPU fused AdamW and
# SGD mix up elements), and bf16 SGD on 16+ elements (torch 2.13's CPU fused SGD).
BUG_LAYOUT = dict(
    seed=1,
    specs=[((5, 3), "transposed", "contiguous", "like")],
    dtype=torch.float32,
    name="adamw",
    mode="decoupled",
    scaling=None,
    maximize=False,
    lr_factor=1.0,
    first_step=False,
)
BUG_BF16 = dict(
    seed=2,
    specs=[((17,), "contiguous", "like", "like")],
    dtype=torch.bfloat16,
    name="sgd",
    mode="l2",
    scaling=None,
    maximize=False,
    lr_factor=1.0,
    first_step=True,
)


@pytest.mark.parametrize("backend", ["foreach", "torch_fused", "auto"])
@settings(max_examples=40)
@given(**common)
@example(**BUG_LAYOUT)
@example(**BUG_BF16)
@example(
    **dict(
        BUG_LAYOUT,
        name="sgd_momentum",
        specs=[((2, 3, 2, 2), "channels_last", "contiguous", "contiguous")],
    )
)
def test_backend_matches_loop(
    backend, seed, specs, dtype, name, mode, scaling, maximize, lr_factor, first_step
):
    items = _problem(seed, specs, dtype, name, first_step)
    check_backend(items, name, backend, mode, scaling, maximize, lr_factor)


@pytest.mark.usefixtures("interpret")
@settings(max_examples=4)
@given(**common)
@example(
    **dict(
        BUG_LAYOUT,
        specs=[
            ((5, 3), "transposed", "contiguous", "contiguous"),
            ((4, 8), "contiguous", "like", "like"),
        ],
    )
)
def test_triton_matches_loop(
    seed, specs, dtype, name, mode, scaling, maximize, lr_factor, first_step
):
    items = _problem(seed, specs, dtype, name, first_step)
    check_backend(items, name, "triton", mode, scaling, maximize, lr_factor)


# ---- the guard is what makes torch_fused right: with it off, the matrix catches the bugs ---
@pytest.fixture
def guard_off(monkeypatch):
    """torch's fused ops trusted for every tensor: no layout routing, no probe."""
    monkeypatch.setattr(step_plan, "flat_layout_ok", lambda p, companions, any_dtype=False: True)
    monkeypatch.setattr(G, "trusted", lambda *args, **kwargs: True)


@pytest.mark.usefixtures("guard_off")
@pytest.mark.parametrize("name", ["adamw", "sgd_momentum"])
def test_without_the_guard_the_stride_bug_is_caught(name):
    items = _problem(1, BUG_LAYOUT["specs"], torch.float32, name, False)
    with pytest.raises(AssertionError, match="elements off"):
        check_backend(items, name, "torch_fused", "decoupled", None, False, 1.0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_without_the_guard_the_low_precision_sgd_bug_is_caught(dtype, monkeypatch):
    if not torch_fused_sgd_wrong(dtype):
        pytest.skip(f"torch {torch.__version__}'s CPU fused SGD is right for {dtype}")
    monkeypatch.setattr(G, "trusted", lambda *args, **kwargs: True)
    items = _problem(2, BUG_BF16["specs"], dtype, "sgd", True)
    with pytest.raises(AssertionError, match="elements off"):
        check_backend(items, "sgd", "torch_fused", "l2", None, False, 1.0)
