"""Distributed run == single-process run, step for step, for every rule and mode.

``python parity.py fsdp|ddp|zero`` on 2 gloo ranks (see launch.py). Every rank feeds the
same batch, so the data-parallel gradient mean ((g + g) / 2) equals the single-process
gradient exactly, and any difference in the parameters after the steps comes from the
optimizer: a rule that saw a local shard or a local count, or an update that went wrong on
the shards. Rank 0 writes ``results.json``: per case, the largest parameter difference to
the single-process run and, for FSDP2, whether ``decay_report()`` rows (shapes, fan-ins,
scales, lams) equal the single-process ones.
"""

from __future__ import annotations

import contextlib
import sys

import torch
from common import finish, init, loss_fn, make_net, max_diff
from torch.nn.parallel import DistributedDataParallel as DDP

import scaled_decay as sd
from scaled_decay.backends import resolve_backend

STEPS = 20
MODES = ("decoupled", "independent", "corrected", "l2")
RULES = {
    "none": None,
    "fan_in": "fan_in",
    "param_count": sd.ParamCount(reference=100),
    "steps_per_epoch": sd.StepsPerEpoch(10, epochs=3),
    "fan_in*param_count": (sd.FanIn(reference=4, power=0.5), sd.ParamCount(reference=100)),
}


def total_count() -> int:
    return sum(p.numel() for p in make_net().parameters())


def cases(wrap: str):
    """(name, optimizer class, kwargs, params kind) for one wrapper."""
    out = []
    if wrap == "zero":  # plain params or groups without per-tensor keys (see README)
        n = total_count()
        for mode in MODES:
            out.append(
                (
                    f"AdamW/{mode}/param_count(total)",
                    sd.AdamW,
                    dict(
                        lr=0.05,
                        weight_decay=0.5,
                        decay_mode=mode,
                        decay_scaling=sd.ParamCount(reference=100, total_count=n),
                    ),
                    "plain",
                )
            )
        out.append(
            (
                "SGD/corrected/fan_in*param_count(total)/2 groups",
                sd.SGD,
                dict(
                    lr=0.1,
                    momentum=0.9,
                    nesterov=True,
                    weight_decay=0.5,
                    decay_mode="corrected",
                    decay_scaling=(sd.FanIn(4, 0.5), sd.ParamCount(100, total_count=n)),
                ),
                "two_groups",
            )
        )
        # the control: without total_count each rank's N is its own share, so this differs
        out.append(
            (
                "control: AdamW/decoupled/param_count(local N)",
                sd.AdamW,
                dict(lr=0.05, weight_decay=0.5, decay_scaling=sd.ParamCount(reference=100)),
                "plain",
            )
        )
        return out
    for mode in MODES:
        for rname, rule in RULES.items():
            out.append(
                (
                    f"AdamW/{mode}/{rname}/param_groups",
                    sd.AdamW,
                    dict(
                        lr=0.05,
                        weight_decay=0.5,
                        decay_mode=mode,
                        decay_scaling=rule,
                        backend="foreach",
                    ),
                    "param_groups",
                )
            )
        out.append(
            (
                f"SGD/{mode}/fan_in*param_count/plain",
                sd.SGD,
                dict(
                    lr=0.1,
                    momentum=0.9,
                    nesterov=True,
                    weight_decay=0.5,
                    decay_mode=mode,
                    decay_scaling=RULES["fan_in*param_count"],
                    backend="foreach",
                ),
                "plain",
            )
        )
    out.append(
        (
            "Adam/l2/fan_in/amsgrad/plain",
            sd.Adam,
            dict(
                lr=0.05, weight_decay=0.5, amsgrad=True, decay_scaling="fan_in", backend="foreach"
            ),
            "plain",
        )
    )
    out.append(
        (
            "AdamW/independent/fan_in/loop/plain",
            sd.AdamW,
            dict(
                lr=0.05,
                weight_decay=0.5,
                decay_mode="independent",
                decay_scaling="fan_in",
                backend="loop",
            ),
            "plain",
        )
    )
    # low precision: moments in another dtype on the shards; bf16 weights with Kahan
    # compensation and stochastic rounding (sharded like their parameters)
    out.append(
        (
            "AdamW/decoupled/fan_in/state_dtype=bf16/param_groups",
            sd.AdamW,
            dict(
                lr=0.05,
                weight_decay=0.5,
                decay_scaling="fan_in",
                backend="foreach",
                state_dtype=torch.bfloat16,
            ),
            "param_groups",
        )
    )
    for rounding in ("kahan", "stochastic"):
        out.append(
            (
                f"AdamW/decoupled/fan_in/bf16/{rounding}/param_groups",
                sd.AdamW,
                dict(
                    lr=0.05,
                    weight_decay=0.5,
                    decay_scaling="fan_in",
                    backend="foreach",
                    low_precision=rounding,
                ),
                "bf16",
            )
        )
    out.append(
        (
            "SGD/decoupled/param_count/loop/param_groups",
            sd.SGD,
            dict(
                lr=0.1, momentum=0.9, weight_decay=0.5, decay_scaling="param_count", backend="loop"
            ),
            "param_groups",
        )
    )
    return out


def params_of(net, kind: str, wd: float):
    if kind in ("param_groups", "bf16"):
        return sd.param_groups(net, wd)
    if kind == "two_groups":
        named = list(net.named_parameters())
        return [
            {"params": [p for n, p in named if n.endswith("weight") and "norm" not in n]},
            {
                "params": [p for n, p in named if n.endswith("bias") or "norm" in n],
                "weight_decay": 0.0,
            },
        ]
    return list(net.parameters())


def train(net, opt, forward_net=None):
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / (2 * STEPS))
    for step in range(STEPS):
        loss_fn(forward_net or net, step).backward()
        opt.step()
        sched.step()
        opt.zero_grad()


@contextlib.contextmanager
def math_spy():
    """Records the tensor types the update math receives (FSDP2: local shards, not DTensors)."""
    import scaled_decay.updates.adam as adam_mod
    import scaled_decay.updates.sgd as sgd_mod

    seen, originals = set(), (adam_mod.foreach, sgd_mod.foreach)

    def spy(fn):
        def wrapped(params, *args, **kwargs):
            seen.update(type(p).__name__ for p in params)
            return fn(params, *args, **kwargs)

        return wrapped

    adam_mod.foreach, sgd_mod.foreach = spy(originals[0]), spy(originals[1])
    try:
        yield seen
    finally:
        adam_mod.foreach, sgd_mod.foreach = originals


def make(kind: str):
    return make_net().bfloat16() if kind == "bf16" else make_net()


def run_case(wrap: str, cls, kw: dict, kind: str) -> dict:
    ref = make(kind)
    ref_opt = cls(params_of(ref, kind, kw["weight_decay"]), **kw)
    train(ref, ref_opt)

    net = make(kind)
    res = {}
    if wrap == "fsdp":
        from torch.distributed.fsdp import fully_shard

        fully_shard(net.fc1)  # nested unit as well as the root
        fully_shard(net)
        opt = cls(params_of(net, kind, kw["weight_decay"]), **kw)
        with math_spy() as seen:
            train(net, opt)
        res["math_saw"] = sorted(seen)
        res["report_equal"] = opt.decay_report().to_dicts() == ref_opt.decay_report().to_dicts()
        res["report_shapes"] = [list(r.shape) for r in opt.decay_report()]
        res["state_is_dtensor"] = all(
            type(v).__name__ == "DTensor"
            for st in opt.state.values()
            for k, v in st.items()
            if k not in ("step", "rounding_step")
        )  # (0-d counters)
        res["auto_backend"] = resolve_backend("auto", net.fc1.weight)
    elif wrap == "ddp":
        ddp = DDP(net)
        opt = cls(params_of(net, kind, kw["weight_decay"]), **kw)
        train(net, opt, forward_net=ddp)
        res["report_equal"] = opt.decay_report().to_dicts() == ref_opt.decay_report().to_dicts()
    else:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        ddp = DDP(net)
        opt = ZeroRedundancyOptimizer(
            params_of(net, kind, kw["weight_decay"]), optimizer_class=cls, **kw
        )
        train(net, opt, forward_net=ddp)
        res["local_params"] = sum(len(g["params"]) for g in opt.optim.param_groups)
    res["max_diff"] = max_diff(net, ref)
    return res


def zero_rejects_per_tensor_keys() -> str:
    """sd.param_groups' per-tensor lists cannot follow ZeRO's partition: a clear error."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    try:
        ZeroRedundancyOptimizer(sd.param_groups(make_net(), 0.1), optimizer_class=sd.AdamW)
    except ValueError as e:
        return str(e)
    return ""


def main():
    wrap = sys.argv[1]
    rank = init()
    results = {name: run_case(wrap, cls, kw, kind) for name, cls, kw, kind in cases(wrap)}
    if wrap == "zero":
        results["zero_param_groups_error"] = zero_rejects_per_tensor_keys()
    finish(rank, results)


if __name__ == "__main__":
    main()
