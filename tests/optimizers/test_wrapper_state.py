"""sd.with_scaled_decay: state dicts (to the plain optimizer and back), resume, pickling,
distributed checkpoints and GradScaler, all bit-identical where the math is."""

import copy
import pickle
import warnings

import pytest
import torch

import scaled_decay as sd
from tests.helpers.checkpoints import save_load
from tests.helpers.problems import (
    QuadraticLoss,
    assert_all_equal,
    clone_params,
    make_params,
    run_amp_steps,
    run_steps,
)

HAS_MUON = hasattr(torch.optim, "Muon")
SHAPES = [(5, 3), (3,), (2, 2, 2)]
MAKERS = {
    "RAdam/independent/fan_in": (
        SHAPES,
        lambda p: sd.with_scaled_decay(torch.optim.RAdam)(
            p, lr=0.01, weight_decay=0.2, decay_mode="independent", decay_scaling="fan_in"
        ),
    ),
    "Adagrad/corrected/param_count": (
        SHAPES,
        lambda p: sd.with_scaled_decay(torch.optim.Adagrad)(
            p,
            lr=0.05,
            weight_decay=0.3,
            decay_mode="corrected",
            decay_scaling=sd.ParamCount(reference=20),
        ),
    ),
    "NAdam/l2/fan_in": (
        SHAPES,
        lambda p: sd.with_scaled_decay(torch.optim.NAdam)(
            p, lr=0.01, weight_decay=0.2, decay_mode="l2", decay_scaling="fan_in"
        ),
    ),
}
if HAS_MUON:
    MAKERS["Muon/MuonShape"] = (
        [(5, 3), (3, 6)],
        lambda p: sd.with_scaled_decay(torch.optim.Muon)(
            p,
            lr=0.02,
            weight_decay=0.2,
            adjust_lr_fn="match_rms_adamw",
            decay_scaling=sd.MuonShape("match_rms_adamw", (4, 4)),
        ),
    )


def _schedule(opt):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + 0.3 * t))


def _straight_and_resumed(make, shapes, seed, move):
    """10 steps, then 10 more; and the same 10 more after ``move(opt, params)`` rebuilt the
    optimizer from the first one's state dict. Returns both final parameter lists."""
    params = make_params(seed, shapes)
    opt = make(params)
    sched = _schedule(opt)
    loss = QuadraticLoss(seed, params)
    run_steps(opt, params, loss, 10, scheduler=sched)
    copies = clone_params(params)
    opt2, sched2 = move(opt, sched, copies)
    noise = loss.noise.get_state()
    run_steps(opt, params, loss, 10, scheduler=sched)
    loss.noise.set_state(noise)
    run_steps(opt2, copies, loss, 10, scheduler=sched2)
    return params, copies


@pytest.mark.parametrize("name", list(MAKERS))
def test_save_reload_continue_is_bit_identical(name):
    shapes, make = MAKERS[name]

    def move(opt, sched, params):
        new = make(params)
        new_sched = _schedule(new)  # before the load: a new scheduler sets the lr
        new.load_state_dict(save_load(opt.state_dict()))
        new_sched.load_state_dict(sched.state_dict())
        return new, new_sched

    assert_all_equal(*_straight_and_resumed(make, shapes, 1, move))


@pytest.mark.parametrize("name", list(MAKERS))
def test_state_dict_goes_through_the_plain_optimizer_and_back(name):
    """wrapped -> plain -> wrapped: the plain optimizer keeps the package's group keys."""
    shapes, make = MAKERS[name]
    plain_cls = make(make_params(0, shapes))._sd_wrapped

    def move(opt, sched, params):
        plain = plain_cls(clone_params(params))
        plain.load_state_dict(save_load(opt.state_dict()))
        assert (
            plain.param_groups[0]["decay_scaling"]
            == opt.state_dict()["param_groups"][0]["decay_scaling"]
        )
        new = make(params)
        new_sched = _schedule(new)
        new.load_state_dict(save_load(plain.state_dict()))
        assert new.param_groups[0]["decay_scaling"] == opt.param_groups[0]["decay_scaling"]
        new_sched.load_state_dict(sched.state_dict())
        return new, new_sched

    assert_all_equal(*_straight_and_resumed(make, shapes, 2, move))


@pytest.mark.skipif(not HAS_MUON, reason="torch.optim.Muon needs torch >= 2.9")
def test_plain_muon_checkpoint_continues_in_the_wrapper():
    """A plain Muon's weight_decay becomes the package's; decay_mode and rules stay the
    wrapper's own (here: none, decoupled, so it goes on exactly as torch's Muon)."""

    def move(opt, sched, params):
        new = sd.with_scaled_decay(torch.optim.Muon)(params, lr=0.5, weight_decay=0.9)
        new_sched = _schedule(new)
        new.load_state_dict(save_load(opt.state_dict()))
        assert new.param_groups[0]["weight_decay"] == 0.15
        assert new.param_groups[0]["decay_mode"] == "decoupled"
        new_sched.load_state_dict(sched.state_dict())
        return new, new_sched

    assert_all_equal(
        *_straight_and_resumed(
            lambda p: torch.optim.Muon(p, lr=0.02, weight_decay=0.15), [(4, 6)], 3, move
        )
    )


def test_plain_radam_with_decoupled_flag_loads_with_the_flag_off():
    params = make_params(1, SHAPES)
    plain = torch.optim.RAdam(params, weight_decay=0.3, decoupled_weight_decay=True)
    wrapped = sd.with_scaled_decay(torch.optim.RAdam)(clone_params(params))
    wrapped.load_state_dict(plain.state_dict())
    group = wrapped.param_groups[0]
    assert group["weight_decay"] == 0.3 and group["decoupled_weight_decay"] is False


@pytest.mark.parametrize("bad", ["mode", "groups", "rule"])
def test_failed_load_changes_nothing(bad):
    params = make_params(1, SHAPES)
    opt = MAKERS["RAdam/independent/fan_in"][1](params)
    run_steps(opt, params, QuadraticLoss(1, params), 2)
    before = copy.deepcopy(opt.state_dict())
    state = copy.deepcopy(before)
    if bad == "mode":
        state["param_groups"][0]["decay_mode"] = "sideways"
    elif bad == "groups":
        state["param_groups"].append(dict(state["param_groups"][0], params=[99]))
    else:
        state["param_groups"][0]["decay_scaling"] = [{"rule": "FanIn", "reference": -1}]
    with pytest.raises(ValueError):
        opt.load_state_dict(state)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for key, st in before["state"].items():
        for k, v in st.items():
            assert torch.equal(after["state"][key][k], v)


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_whole_optimizer_copies_continue_identically(how):
    """Parameters and optimizer copied together (the copy's groups hold the copied params)."""
    shapes, make = MAKERS["Adagrad/corrected/param_count"]
    params = make_params(4, shapes)
    opt = make(params)
    loss = QuadraticLoss(4, params)
    run_steps(opt, params, loss, 5)
    if how == "deepcopy":
        params2, opt2 = copy.deepcopy((params, opt))
    elif how == "pickle":
        params2, opt2 = pickle.loads(pickle.dumps((params, opt)))
    else:
        params2, opt2 = save_load((params, opt), weights_only=False)
    assert type(opt2) is type(opt) and opt2.param_groups[0]["params"][0] is params2[0]
    noise = loss.noise.get_state()
    run_steps(opt, params, loss, 5)
    loss.noise.set_state(noise)
    run_steps(opt2, params2, loss, 5)
    assert_all_equal(params, params2)


class MyRAdam(sd.with_scaled_decay(torch.optim.RAdam)):
    """A user's subclass of a wrapped class: copies keep its type."""


def test_copies_of_a_subclass_keep_its_type():
    params = make_params(0, SHAPES)
    opt = MyRAdam(params, weight_decay=0.1, decay_scaling="fan_in")
    for new in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert type(new) is MyRAdam and new.param_groups[0]["decay_scaling"] == (sd.FanIn(),)


def test_distributed_checkpoint_round_trip_in_one_process(tmp_path):
    """get/set_optimizer_state_dict + dcp.save/load (no process group): exact resume, group
    keys from the file (DCP loads into a template of the same structure)."""
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    wrapped = sd.with_scaled_decay(torch.optim.RAdam)
    x, y = torch.randn(16, 4), torch.randn(16, 2)

    def train(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()

    opt = wrapped(
        sd.param_groups(net, 0.3), lr=0.01, decay_mode="independent", decay_scaling="fan_in"
    )
    train(net, opt, 3)
    net_b = copy.deepcopy(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save({"optim": get_optimizer_state_dict(net, opt)}, checkpoint_id=str(tmp_path))
        opt_b = wrapped(sd.param_groups(net_b, 0.9), lr=0.5, decay_scaling=sd.FanIn(2, 0.5))
        state = {"optim": get_optimizer_state_dict(net_b, opt_b)}
        dcp.load(state, checkpoint_id=str(tmp_path))
    set_optimizer_state_dict(net_b, opt_b, state["optim"])
    group = opt_b.param_groups[0]
    assert (group["decay_mode"], group["weight_decay"], group["lr"]) == ("independent", 0.3, 0.01)
    assert group["decay_scaling"] == (sd.FanIn(),)
    train(net, opt, 3)
    train(net_b, opt_b, 3)
    assert_all_equal(list(net.parameters()), list(net_b.parameters()))


# ---- GradScaler: skipped steps do not decay; scaled runs equal unscaled ones ----------------
SCALED = {
    # GradScaler unscales, then calls step() only without inf/NaN
    "RAdam": lambda p, mode: sd.with_scaled_decay(torch.optim.RAdam)(
        p, lr=0.01, weight_decay=0.2, decay_mode=mode, decay_scaling="fan_in"
    ),
    # _step_supports_amp_scaling: step() is called with grad_scale/found_inf set, always
    "Adam-fused": lambda p, mode: sd.with_scaled_decay(torch.optim.Adam)(
        p, lr=0.01, weight_decay=0.2, decay_mode=mode, decay_scaling="fan_in", fused=True
    ),
}


def _amp_run(make, mode, scaler, steps, overflow_at=None):
    params = clone_params(make_params(7, [(6, 5), (5,), (3, 1, 2)]))
    opt = make(params, mode)
    return params, run_amp_steps(opt, params, QuadraticLoss(7, params), scaler, steps, overflow_at)


@pytest.mark.parametrize("name", list(SCALED))
@pytest.mark.parametrize("mode", ["decoupled", "l2"])
def test_gradscaler_run_equals_unscaled_run(name, mode):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**14, growth_interval=2)
    ours, _ = _amp_run(SCALED[name], mode, scaler, 4)
    ref, _ = _amp_run(SCALED[name], mode, None, 4)
    assert_all_equal(ours, ref)
    assert scaler.get_scale() > 2.0**14  # no step was seen as overflowing


@pytest.mark.parametrize("name", list(SCALED))
@pytest.mark.parametrize("mode", ["decoupled", "independent", "l2"])
@pytest.mark.parametrize("at", [0, 2])
def test_gradscaler_overflow_step_does_not_decay(name, mode, at):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    _, ((p_before, st_before), (p_after, st_after)) = _amp_run(
        SCALED[name], mode, scaler, at + 1, overflow_at=at
    )
    assert_all_equal(p_before, p_after)
    for key, st in st_before["state"].items():
        for k, v in st.items():
            assert torch.equal(st_after["state"][key][k], v), k
