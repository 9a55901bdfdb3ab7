"""GradScaler with DDP and FSDP2 on 2 gloo ranks: scaled steps, a forced overflow, compared
with the single-process GradScaler run.

``python amp_smoke.py ddp|fsdp``. At step OVERFLOW one gradient element is set to inf after
backward: in DDP on every rank (the all-reduced gradients are the same everywhere), in FSDP2
on the rank whose shard holds it (where a real overflow in that tensor would land after the
reduce-scatter). Rank 0 writes ``results.json``: per case, the largest difference to the
single-process run, the scale after the run and whether the overflow step was skipped.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from common import finish, init, loss_fn, make_net, max_diff
from torch.nn.parallel import DistributedDataParallel as DDP

import scaled_decay as sd

STEPS, OVERFLOW = 8, 3
CASES = {
    "AdamW/independent/fan_in/foreach": lambda ps: sd.AdamW(
        ps,
        lr=0.05,
        weight_decay=0.5,
        decay_mode="independent",
        decay_scaling="fan_in",
        backend="foreach",
    ),
    "SGD/decoupled/param_count/foreach": lambda ps: sd.SGD(
        ps,
        lr=0.1,
        momentum=0.9,
        weight_decay=0.5,
        decay_scaling=sd.ParamCount(100),
        backend="foreach",
    ),
}


def inject_inf(net, rank):
    g = net.fc2.weight.grad
    if hasattr(g, "to_local"):  # FSDP2: global row 0 lives in rank 0's shard
        if rank == 0:
            g.to_local()[0, 0] = float("inf")
    else:
        g[0, 0] = float("inf")


def train(net, opt, rank, forward_net=None):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    before = None
    for step in range(STEPS):
        scaler.scale(loss_fn(forward_net or net, step)).backward()
        if step == OVERFLOW:
            inject_inf(net, rank)
            before = [p.detach().clone() for p in net.parameters()]
        scaler.step(opt)
        scaler.update()
        if step == OVERFLOW:
            skipped = all(torch.equal(a, b.detach()) for a, b in zip(before, net.parameters()))
        opt.zero_grad()
    return scaler.get_scale(), skipped


def main():
    wrap = sys.argv[1]
    rank = init()
    results = {}
    for name, make in CASES.items():
        ref = make_net()
        ref_scale, ref_skipped = train(ref, make(list(ref.parameters())), 0)
        net = make_net()
        forward_net = None
        if wrap == "fsdp":
            from torch.distributed.fsdp import fully_shard

            fully_shard(net)
        else:
            forward_net = DDP(net)
        scale, skipped = train(net, make(list(net.parameters())), rank, forward_net)
        skipped_all = torch.tensor([float(skipped)])
        dist.all_reduce(skipped_all, op=dist.ReduceOp.MIN)
        results[name] = {
            "max_diff": max_diff(net, ref),
            "scale": scale,
            "ref_scale": ref_scale,
            "skipped_on_every_rank": bool(skipped_all.item()),
            "ref_skipped": ref_skipped,
        }
    finish(rank, results)


if __name__ == "__main__":
    main()
