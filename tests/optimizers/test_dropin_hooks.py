"""Drop-in for torch.optim: every optimizer hook torch has, called and honoured as torch does
(the scenario runs on torch.optim and on sd; see tests/optimizers/test_dropin.py)."""

import pytest
import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from tests.helpers.dropin_pairs import PAIRS, assert_same_params, make_params, on_both, set_grads


def _hook_all(opt, events):
    def log(*what):
        events.append(what)

    return [
        opt.register_step_pre_hook(lambda o, a, k: log("step_pre", o is opt, len(a), sorted(k))),
        opt.register_step_post_hook(lambda o, a, k: log("step_post", o is opt)),
        opt.register_state_dict_pre_hook(lambda o: log("sd_pre", o is opt)),
        opt.register_state_dict_post_hook(lambda o, s: log("sd_post", o is opt, sorted(s))),
        opt.register_load_state_dict_pre_hook(lambda o, s: log("load_pre", o is opt, sorted(s))),
        opt.register_load_state_dict_post_hook(lambda o: log("load_post", o is opt)),
        register_optimizer_step_pre_hook(lambda o, a, k: log("global_pre", o is opt)),
        register_optimizer_step_post_hook(lambda o, a, k: log("global_post", o is opt)),
    ]


@pytest.mark.parametrize("name", PAIRS)
def test_every_hook_is_called_as_torch_calls_it(name):
    def scenario(make):
        params = make_params()
        opt = make(params)
        events = []
        handles = _hook_all(opt, events)
        try:
            set_grads(params, 0)
            opt.step()
            opt.step(closure=lambda: torch.tensor(1.0))
            state = opt.state_dict()
            opt.load_state_dict(state)
        finally:
            for h in handles:
                h.remove()
        n = len(events)
        opt.step()
        opt.load_state_dict(opt.state_dict())
        assert len(events) == n  # removed hooks are not called
        return events

    torch_events, sd_events = on_both(name, scenario)
    assert sd_events == torch_events and len(sd_events) == 12


@pytest.mark.parametrize("name", PAIRS)
def test_hooks_that_change_things_change_them_as_in_torch(name):
    """A step pre hook that supplies a closure; a state-dict post hook that wraps the dict and
    a load pre hook that unwraps it (checkpoint code does this)."""

    def scenario(make):
        params = make_params()
        opt = make(params)
        calls = []

        def closure():
            calls.append(1)
            set_grads(params, len(calls))
            return torch.tensor(float(len(calls)))

        opt.register_step_pre_hook(lambda o, a, k: ((o,), {"closure": closure}))
        opt.register_state_dict_post_hook(lambda o, s: {"wrapped": s})
        opt.register_load_state_dict_pre_hook(lambda o, s: s["wrapped"])
        losses = [float(opt.step()) for _ in range(3)]
        state = opt.state_dict()
        assert set(state) == {"wrapped"}
        opt.load_state_dict(state)
        return losses, params

    (t_losses, t_params), (s_losses, s_params) = on_both(name, scenario)
    assert t_losses == s_losses == [1.0, 2.0, 3.0]
    assert_same_params(t_params, s_params)
