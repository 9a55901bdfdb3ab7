"""A 0-d tensor lr end to end (issue 16 §3): no host sync where a step may be captured.

With ``capturable=True`` the lr and the step counts stay tensors through the math and the
kernels (torch's capturable form), so a CUDA graph of the step replays whatever lr a scheduler
wrote into the tensor, instead of the value read when it was captured. On the CPU this is
checked by making ``.item()``/``.tolist()`` raise during the step, and by compiling the step
with ``fullgraph=True`` under a cosine schedule without a recompile. The CUDA replay test is
in ``test_triton_cuda.py``.
"""

import pytest
import torch

import scaled_decay as sd
from tests.helpers.problems import small_net


def _loss(net, k):
    g = torch.Generator().manual_seed(k)
    return ((net(torch.randn(8, 6, generator=g)) - 1) ** 2).mean()


def _class_step(opt):
    return lambda: type(opt).step(opt)


@pytest.fixture
def no_host_reads(monkeypatch):
    """``.item()`` and ``.tolist()`` raise while the fixture's context is entered."""

    class Guard:
        def __enter__(self):
            def refuse(*args, **kwargs):
                raise AssertionError("a host sync in a capturable step")

            monkeypatch.setattr(torch.Tensor, "item", refuse)
            monkeypatch.setattr(torch.Tensor, "tolist", refuse)
            monkeypatch.setattr(torch.Tensor, "__float__", refuse)
            monkeypatch.setattr(torch.Tensor, "__bool__", refuse)

        def __exit__(self, *exc):
            monkeypatch.undo()

    return Guard()


MODES = [("decoupled", None), ("independent", "fan_in"), ("corrected", None), ("l2", "fan_in")]


@pytest.mark.parametrize("cls", [sd.AdamW, sd.Adam])
@pytest.mark.parametrize("mode, scaling", MODES)
def test_capturable_step_reads_nothing_on_the_host(cls, mode, scaling, no_host_reads):
    runs = {}
    for capturable in (False, True):
        net = small_net()
        opt = cls(
            net.parameters(),
            lr=torch.tensor(0.01),
            weight_decay=0.1,
            decay_mode=mode,
            decay_scaling=scaling,
            amsgrad=True,
            capturable=capturable,
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)
        for k in range(5):
            _loss(net, k).backward()
            if capturable:
                with no_host_reads:
                    opt.step()
            else:
                opt.step()
            sched.step()
            opt.zero_grad()
        runs[capturable] = net
    # tensor (fp32) bias corrections and decay factors against Python floats: close
    for a, b in zip(runs[False].parameters(), runs[True].parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_the_host_read_check_can_fail(no_host_reads):
    """The control: the non-capturable step reads its tensor lr once (``.item()``)."""
    net = small_net()
    opt = sd.AdamW(net.parameters(), lr=torch.tensor(0.01))
    _loss(net, 0).backward()
    with pytest.raises(AssertionError, match="host sync"):
        with no_host_reads:
            opt.step()


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: sd.AdamW(ps, lr=torch.tensor(0.01), weight_decay=0.1, decay_scaling="fan_in"),
        lambda ps: sd.SGD(
            ps, lr=torch.tensor(0.05), momentum=0.9, weight_decay=0.1, decay_mode="independent"
        ),
    ],
)
def test_fullgraph_compiled_step_follows_a_cosine_schedule_without_recompiling(make):
    torch._dynamo.reset()
    runs = {}
    for compiled in (False, True):
        net = small_net()
        opt = make(net.parameters())
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)
        # (the class's step: the scheduler wraps the instance's, and Dynamo skips that)
        step = torch.compile(_class_step(opt), fullgraph=True) if compiled else opt.step
        lrs = []
        try:
            for k in range(6):
                _loss(net, k).backward()
                if k == 0:
                    opt.step()  # lazy state and the plan, eagerly (as torch's optimizers)
                else:
                    if k == 2:
                        torch._dynamo.config.error_on_recompile = compiled
                    step()
                sched.step()
                lrs.append(float(opt.param_groups[0]["lr"]))
                opt.zero_grad()
        finally:
            torch._dynamo.config.error_on_recompile = False
        runs[compiled] = (net, lrs)
    torch._dynamo.reset()
    assert runs[True][1] == runs[False][1] and len(set(runs[True][1])) == 6
    for a, b in zip(runs[False][0].parameters(), runs[True][0].parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
