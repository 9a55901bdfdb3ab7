"""FSDP2 + torch.distributed.checkpoint: save mid-run, load into a fresh model and optimizer.

``python dcp_resume.py [flat]`` on 2 gloo ranks. Run A trains 2*K steps, saving model,
optimizer and LR scheduler with ``dcp.save`` after K. Run B starts from a different init and
an optimizer built with other group values (same structure), loads the checkpoint with
``get/set_optimizer_state_dict`` and trains the last K steps. Rank 0 writes
``results.json``: B's final parameters must equal A's exactly, and B's param groups must
hold A's keys (decay_mode, decay_scaling, fan_ins, initial_lr, ...), restored from the file.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed.checkpoint as dcp
from common import finish, init, loss_fn, make_net, max_diff, out_dir
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard

import scaled_decay as sd

K = 8


def schedule(step: int) -> float:
    return 1.0 - step / (4 * K)


def sharded_net(seed: int):
    net = make_net(seed)
    fully_shard(net.fc1)
    fully_shard(net)
    return net


def train(net, opt, sched, steps: range):
    for step in steps:
        loss_fn(net, step).backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def plain_groups(opt) -> list:
    """Group keys other than params, as saved (rules as plain dicts)."""
    return [{k: v for k, v in g.items() if k != "params"} for g in opt.state_dict()["param_groups"]]


def main():
    flat = len(sys.argv) > 1 and sys.argv[1] == "flat"
    options = StateDictOptions(flatten_optimizer_state_dict=flat)
    rank = init()
    ckpt = f"{out_dir()}/ckpt"

    net_a = sharded_net(0)
    opt_a = sd.AdamW(
        sd.param_groups(net_a, 0.5),
        lr=0.05,
        decay_mode="independent",
        decay_scaling=(sd.FanIn(4, 0.5), sd.ParamCount(100)),
        amsgrad=True,
    )
    sched_a = torch.optim.lr_scheduler.LambdaLR(opt_a, schedule)
    train(net_a, opt_a, sched_a, range(K))
    dcp.save(
        {
            "model": get_model_state_dict(net_a, options=options),
            "optim": get_optimizer_state_dict(net_a, opt_a, options=options),
            "sched": sched_a.state_dict(),
        },
        checkpoint_id=ckpt,
    )
    train(net_a, opt_a, sched_a, range(K, 2 * K))

    # Run B: another init and other group values (lr, weight_decay, mode, rule parameters),
    # so everything that matches A must have come from the checkpoint. DCP loads *into* a
    # template, so B keeps A's structure: the same rule types in decay_scaling.
    net_b = sharded_net(1)
    opt_b = sd.AdamW(
        sd.param_groups(net_b, 0.1),
        lr=0.01,
        decay_mode="decoupled",
        decay_scaling=(sd.FanIn(1, 1.0), sd.ParamCount(7)),
        amsgrad=True,
    )
    sched_b = torch.optim.lr_scheduler.LambdaLR(opt_b, schedule)
    groups_before = plain_groups(opt_b)
    state = {
        "model": get_model_state_dict(net_b, options=options),
        "optim": get_optimizer_state_dict(net_b, opt_b, options=options),
        "sched": sched_b.state_dict(),
    }
    dcp.load(state, checkpoint_id=ckpt)
    set_model_state_dict(net_b, state["model"], options=options)
    set_optimizer_state_dict(net_b, opt_b, state["optim"], options=options)
    sched_b.load_state_dict(state["sched"])
    restored = plain_groups(opt_b)
    train(net_b, opt_b, sched_b, range(K, 2 * K))

    results = {
        "max_diff": max_diff(net_a, net_b),
        "group_diffs": [
            {k: [ga.get(k), gb.get(k)] for k in set(ga) | set(gb) if ga.get(k) != gb.get(k)}
            for ga, gb in zip(plain_groups(opt_a), plain_groups(opt_b))
        ],
        "restored_modes": [g["decay_mode"] for g in restored],
        "restored_scaling": [g["decay_scaling"] for g in restored],
        "template_modes": [g["decay_mode"] for g in groups_before],
        "template_lrs": [g["lr"] for g in groups_before],
        "restored_lrs": [g["lr"] for g in restored],
        "restored_keys": sorted(restored[0]),
        "state_dtensor": all(
            type(v).__name__ == "DTensor"
            for st in opt_b.state.values()
            for k, v in st.items()
            if k != "step"
        ),
        "steps": sorted({float(st["step"]) for st in opt_b.state.values()}),
    }
    finish(rank, results)


if __name__ == "__main__":
    main()
