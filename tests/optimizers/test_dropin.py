"""Drop-in for torch.optim: the same scenario on torch.optim and on scaled_decay, compared.

Each pair (tests/helpers/dropin_pairs.py) is the same optimizer by the package's rule: with no
scaling rules, sd.AdamW is torch.optim.AdamW, sd.Adam is torch.optim.Adam and sd.SGD with
decay_mode="l2" is torch.optim.SGD, step for step. sd runs its default backend ("auto": torch's
fused kernels on CPU), torch.optim its own default (the for-loop on CPU), so parameters are
compared to float32 rounding (torch.testing.assert_close); a copy against its original, bit
for bit.
"""

import copy
import pickle

import pytest
import torch

import scaled_decay as sd
from tests.helpers.checkpoints import save_load
from tests.helpers.dropin_pairs import (
    PAIRS,
    SHAPES,
    assert_same_params,
    make_params,
    on_both,
    set_grads,
)


def train(opt, params, steps, start=0, skip=lambda k: ()):
    for k in range(start, start + steps):
        set_grads(params, k, skip(k))
        opt.step()


def assert_same_dict(a, b, where="state_dict"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            assert_same_dict(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_dict(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} != {b!r}"


# ---- copies of the whole optimizer -----------------------------------------------------------
COPIES = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda o: pickle.loads(pickle.dumps(o)),
    "torch.save": lambda o: save_load(o, weights_only=False),
}


@pytest.mark.parametrize("how", COPIES)
@pytest.mark.parametrize("name", PAIRS)
def test_a_copied_optimizer_continues_like_the_original(name, how):
    def scenario(make):
        params = make_params()
        opt = make(params)
        train(opt, params, 3)
        clone = COPIES[how](opt)
        clone_params = clone.param_groups[0]["params"]
        assert all(c is not p for c, p in zip(clone_params, params))
        train(opt, params, 3, start=3)
        train(clone, clone_params, 3, start=3)
        for a, b in zip(params, clone_params):
            assert torch.equal(a, b)
        return params

    assert_same_params(*on_both(name, scenario))


@pytest.mark.parametrize("how", COPIES)
def test_a_copy_with_rules_reports_and_steps(how):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = sd.AdamW(sd.param_groups(model, 0.1), lr=0.01, decay_scaling=("fan_in", "param_count"))
    report = str(opt.decay_report())
    clone = COPIES[how](opt)
    assert str(clone.decay_report()) == report
    for p in clone.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    clone.step()


# ---- state dicts -------------------------------------------------------------------------------
def _scaled_sd_optimizer():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = sd.AdamW(
        sd.param_groups(model, 0.1),
        lr=0.01,
        decay_mode="independent",
        decay_scaling=("fan_in", sd.StepsPerEpoch(10, epochs=3)),
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    params = list(model.parameters())
    train(opt, params, 2)
    sched.step()
    return opt


@pytest.mark.parametrize(
    "make",
    [
        *(lambda make=make: _trained(make) for pair in PAIRS.values() for make in pair),
        _scaled_sd_optimizer,
    ],
    ids=[f"{lib}-{name}" for name in PAIRS for lib in ("torch", "sd")] + ["sd-scaled-groups"],
)
def test_state_dict_load_state_dict_state_dict_gives_the_same_dict(make):
    opt = make()
    first = opt.state_dict()
    opt.load_state_dict(copy.deepcopy(first))
    assert_same_dict(opt.state_dict(), first)
    opt.load_state_dict(save_load(first, weights_only=True))
    assert_same_dict(opt.state_dict(), first)


def _trained(make):
    params = make_params()
    opt = make(params)
    train(opt, params, 2)
    return opt


@pytest.mark.parametrize("name", PAIRS)
def test_torch_state_dict_through_sd_and_back(name):
    make_torch, make_sd = PAIRS[name]
    params = make_params()
    t = make_torch(params)
    train(t, params, 2)
    first = t.state_dict()
    s = make_sd([p.detach().clone().requires_grad_() for p in params])
    s.load_state_dict(copy.deepcopy(first))
    back = s.state_dict()
    for group in back["param_groups"]:  # capturable: a group key of Adam/AdamW, as torch's
        assert not {"foreach", "fused", "differentiable"} & set(group)
        assert group.get("capturable", False) is False and (
            name != "sgd" or "capturable" not in group
        )
    t2 = make_torch([p.detach().clone().requires_grad_() for p in params])
    t2.load_state_dict(back)
    again = t2.state_dict()
    assert_same_dict(again["state"], first["state"])
    # every hyperparameter comes back; torch's execution keys, which sd does not keep, come
    # back as torch's __setstate__ fills them in (e.g. SGD's fused=None becomes False)
    execution = {"foreach", "fused", "capturable", "differentiable"}
    for g_again, g_first in zip(again["param_groups"], first["param_groups"]):
        assert_same_dict(
            {k: g_again[k] for k in g_first if k not in execution},
            {k: v for k, v in g_first.items() if k not in execution},
        )


@pytest.mark.parametrize("backend", ["loop", "foreach", "torch_fused", "auto"])
@pytest.mark.parametrize("step_type", [int, float])
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_an_old_checkpoint_with_a_number_step_loads_and_steps(name, step_type, backend):
    """torch < 1.12 saved ``step`` as a Python number; torch converts it on load."""
    params = make_params()
    t = PAIRS[name][0](params)
    train(t, params, 2)
    old = copy.deepcopy(t.state_dict())
    for state in old["state"].values():
        state["step"] = step_type(state["step"].item())

    def scenario(make):
        ps = [p.detach().clone().requires_grad_() for p in params]
        opt = make(ps)
        opt.load_state_dict(copy.deepcopy(old))
        assert all(isinstance(opt.state[p]["step"], torch.Tensor) for p in ps)
        train(opt, ps, 2, start=2)
        return ps

    ref = scenario(PAIRS[name][0])
    assert_same_params(ref, scenario(lambda ps: PAIRS[name][1](ps, backend=backend)))


# ---- training scenarios --------------------------------------------------------------------------
@pytest.mark.parametrize("name", PAIRS)
def test_tensor_lr_and_a_scheduler(name):
    def scenario(make):
        params = make_params()
        opt = make(params)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        for k in range(5):
            train(opt, params, 1, start=k)
            sched.step()
        assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)
        return params

    assert_same_params(
        *[scenario(lambda ps, make=make: make(ps, lr=torch.tensor(0.01))) for make in PAIRS[name]]
    )  # (a tensor each: schedulers write in it)


@pytest.mark.parametrize("name", PAIRS)
def test_maximize(name):
    def scenario(make):
        params = make_params()
        train(make(params), params, 4)
        return params

    assert_same_params(*on_both(name, scenario, maximize=True))


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("name", PAIRS)
def test_zero_grad_both_ways(name, set_to_none):
    def scenario(make):
        params = make_params()
        opt = make(params)
        train(opt, params, 2)
        opt.zero_grad(set_to_none=set_to_none)
        grads = [p.grad for p in params]
        if not set_to_none:  # zeroed grads still step (decay and momentum act)
            opt.step()
        return grads, params

    (t_grads, t_params), (s_grads, s_params) = on_both(name, scenario)
    for a, b in zip(t_grads, s_grads):
        assert (a is None and b is None) if set_to_none else torch.equal(a, b)
    assert_same_params(t_params, s_params)


@pytest.mark.parametrize("name", PAIRS)
def test_params_without_grads_are_skipped_as_in_torch(name):
    def scenario(make):
        params = make_params(shapes=(*SHAPES, (5,)))
        opt = make(params)
        # param 1 has no grad on odd steps, param 3 never has one
        train(opt, params, 5, skip=lambda k: (3,) if k % 2 == 0 else (1, 3))
        return (
            params,
            sorted(opt.state_dict()["state"]),
            {k: sorted(v) for k, v in opt.state_dict()["state"].items()},
        )

    (t_params, t_keys, t_state), (s_params, s_keys, s_state) = on_both(name, scenario)
    assert t_keys == s_keys == [0, 1, 2] and t_state == s_state
    assert_same_params(t_params, s_params)


@pytest.mark.parametrize("name", PAIRS)
def test_mixed_dtypes_in_one_group(name):
    def scenario(make):
        params = make_params(dtypes=[torch.float32, torch.float64, torch.float32])
        train(make(params), params, 4)
        return params

    t_params, s_params = on_both(name, scenario)
    assert [p.dtype for p in s_params] == [torch.float32, torch.float64, torch.float32]
    assert_same_params(t_params, s_params)


@pytest.mark.parametrize("name", PAIRS)
def test_add_param_group_mid_run(name):
    def scenario(make):
        params = make_params()
        opt = make(params[:2])
        train(opt, params[:2], 2)
        opt.add_param_group({"params": [params[2]], "lr": 0.002})
        train(opt, params, 3, start=2)
        return params, opt.param_groups[1]["lr"]

    (t_params, t_lr), (s_params, s_lr) = on_both(name, scenario)
    assert t_lr == s_lr == 0.002
    assert_same_params(t_params, s_params)


@pytest.mark.parametrize("name", PAIRS)
def test_meta_device_params(name):
    def scenario(make):
        params = [torch.empty(3, 2, device="meta", requires_grad=True)]
        opt = make(params)
        state = opt.state_dict()
        params[0].grad = torch.empty(3, 2, device="meta")
        opt.step()
        return state, {k: (v.device.type, v.shape) for k, v in opt.state[params[0]].items()}

    (t_state, t_after), (s_state, s_after) = on_both(name, scenario)
    assert t_state["state"] == s_state["state"] == {}
    assert t_state["param_groups"][0]["params"] == s_state["param_groups"][0]["params"] == [0]
    assert t_after == s_after
