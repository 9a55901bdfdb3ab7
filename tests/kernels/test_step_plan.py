"""The step plan (issue 16): built once, reused while nothing it depends on changed.

Reuse is observed through the plan objects an optimizer keeps per group; a rebuild must
happen on every change that would make a kept plan wrong (a new layout, a param that lost its
grad, a load, replaced state), and the numbers after a rebuild must still be the loop
backend's. The per-step host work is pinned by a count of Python calls that must not grow
with the number of tensors (cProfile), never by a timing.
"""

import cProfile
import pstats

import pytest
import torch

import scaled_decay as sd
from scaled_decay import step_plan

MAKERS = {
    "adamw": lambda ps, **kw: sd.AdamW(ps, lr=0.01, weight_decay=0.1, **kw),
    "adamw_fan_in": lambda ps, **kw: sd.AdamW(
        ps, lr=0.01, weight_decay=0.1, decay_scaling="fan_in", **kw
    ),
    "sgd": lambda ps, **kw: sd.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.1, **kw),
    "sgd_l2": lambda ps, **kw: sd.SGD(
        ps, lr=0.05, momentum=0.9, weight_decay=0.1, decay_mode="l2", **kw
    ),
}


def _params(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (7,), (4, 4), (3, 2, 2)] * n
    return [torch.randn(s, generator=g).requires_grad_() for s in shapes[:n]]


def _grads(ps, k):
    g = torch.Generator().manual_seed(100 + k)
    for p in ps:
        p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=g))


def _plans(opt):
    return [plan for plans in opt._plan.step_plans.values() for plan in plans.values()]


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_steady_steps_and_schedules_reuse_the_plan(name):
    ps = _params()
    opt = MAKERS[name](ps)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    _grads(ps, 0)
    opt.step()
    _grads(ps, 1)
    opt.step()  # SGD: its momentum buffers were made at step 1, a new plan holds them
    kept = _plans(opt)
    for k in range(2, 6):
        _grads(ps, k)  # new grad tensors each step, as after zero_grad(set_to_none=True)
        opt.step()
        sched.step()
        opt.param_groups[0]["weight_decay"] *= 0.9  # a weight-decay schedule
        assert _plans(opt) == kept and all(a is b for a, b in zip(_plans(opt), kept))


def _run_pair(name, edit, steps=5):
    """(default backend with ``edit(opt, params, k)`` before each step, loop backend alike)."""
    out = []
    for backend in ("auto", "loop"):
        ps = _params()
        opt = MAKERS[name](ps, backend=backend)
        for k in range(steps):
            _grads(ps, k)
            edit(opt, ps, k)
            opt.step()
        out.append((opt, ps))
    return out


def _transpose_at_3(opt, ps, k):
    if k == 3:  # same storage, other strides: a plan's flat-layout verdict no longer holds
        ps[0].data = ps[0].data.t().contiguous().t()
        ps[0].grad = torch.empty_like(ps[0]).copy_(ps[0].grad)


def _drop_grad_at_2(opt, ps, k):
    if k in (2, 3):
        ps[1].grad = None


def _reset_state_at_3(opt, ps, k):
    if k == 3 and "exp_avg" in opt.state[ps[0]]:
        opt.state[ps[0]]["exp_avg"] = torch.zeros_like(ps[0])
    if k == 3 and "momentum_buffer" in opt.state[ps[0]]:
        opt.state[ps[0]]["momentum_buffer"] = torch.zeros_like(ps[0])


@pytest.fixture
def builds(monkeypatch):
    """How many step plans were built."""
    count = []
    init = step_plan.GroupPlan.__init__

    def counting(self, *args, **kwargs):
        count.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(step_plan.GroupPlan, "__init__", counting)
    return count


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("edit", [_transpose_at_3, _drop_grad_at_2, _reset_state_at_3])
def test_a_change_the_plan_depends_on_rebuilds_it(name, edit, builds):
    (_, fast_ps), (_, loop_ps) = _run_pair(name, edit)
    for a, b in zip(fast_ps, loop_ps):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    builds.clear()
    _run_pair(name, lambda *args: None)
    steady = len(builds)
    builds.clear()
    _run_pair(name, edit)
    assert len(builds) > steady  # the edit made the default backend build again


def test_load_state_dict_and_add_param_group_drop_the_plans():
    ps = _params()
    opt = MAKERS["adamw"](ps)
    _grads(ps, 0)
    opt.step()
    before = _plans(opt)
    opt.load_state_dict(opt.state_dict())
    assert _plans(opt) == []
    _grads(ps, 1)
    opt.step()
    assert _plans(opt) and _plans(opt)[0] is not before[0]
    extra = torch.randn(3, requires_grad=True)
    opt.add_param_group({"params": [extra]})
    assert _plans(opt) == []


def _calls_per_step(name, n, backend="auto", steps=5):
    ps = [torch.randn(16).requires_grad_() for _ in range(n)]
    opt = MAKERS[name](ps, backend=backend)
    for k in range(3):
        _grads(ps, k)
        opt.step()
    for p in ps:
        p.grad = torch.randn(16)
    # The fewest calls of any step: a one-off call (a lazy import, a cache that another test
    # left half filled) is not per step, while a per-tensor call shows up in every step.
    counts = []
    for _ in range(steps):
        prof = cProfile.Profile()
        prof.enable()
        opt.step()
        prof.disable()
        counts.append(pstats.Stats(prof).total_calls)
    return min(counts)


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("backend", ["auto", "foreach"])
def test_python_calls_per_step_do_not_grow_with_the_tensors(name, backend):
    """Issue 16: nothing per tensor per step in Python; the plan's checks are C-level passes
    over lists, which cProfile does not count as calls."""
    assert _calls_per_step(name, 40, backend) == _calls_per_step(name, 400, backend)


def test_python_call_count_check_can_fail():
    """The control: a per-tensor Python call in the step shows up in the count."""

    class Hashing(sd.AdamW):
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    self.state[p]  # Tensor.__hash__: a Python call per tensor
            return super().step(closure)

    MAKERS["hashing"] = lambda ps, **kw: Hashing(ps, lr=0.01, **kw)
    try:
        assert _calls_per_step("hashing", 40) < _calls_per_step("hashing", 400)
    finally:
        del MAKERS["hashing"]


@pytest.mark.parametrize("name, per_group", [("adamw", 1), ("sgd", 2)])
def test_each_group_builds_its_plan_once_however_many_groups(name, per_group, builds):
    # A group's plan checks its own params' state, not the optimizer's: the state that later
    # groups create at step 1 must not rebuild the earlier groups' plans at step 2. (SGD builds
    # twice: its momentum buffers are made by the first step.)
    ps = _params(9)
    opt = MAKERS[name]([{"params": ps[i::3]} for i in range(3)])
    for k in range(5):
        _grads(ps, k)
        opt.step()
    assert len(builds) == 3 * per_group


def test_a_params_state_dropped_rebuilds_its_plan(builds):
    ps = _params()
    opt = MAKERS["adamw"](ps)
    for k in range(2):
        _grads(ps, k)
        opt.step()
    builds.clear()
    del opt.state[ps[2]]  # a fresh start for one param: the plan's state no longer holds
    _grads(ps, 2)
    opt.step()
    assert len(builds) == 1 and float(opt.state[ps[2]]["step"]) == 1.0
