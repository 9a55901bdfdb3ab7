"""Shared pieces of the distributed workers: process group, model, data, comparisons."""

from __future__ import annotations

import datetime
import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

VOCAB, DIM, HIDDEN, OUT = 16, 8, 12, 5  # OUT=5: uneven shards on 2 ranks


def init() -> int:
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    return dist.get_rank()


class Net(nn.Module):
    """Embedding -> LayerNorm -> Linear -> tanh -> Linear: every kind the rules treat apart."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.norm = nn.LayerNorm(DIM)
        self.fc1 = nn.Linear(DIM, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, OUT)

    def forward(self, ids):
        return self.fc2(torch.tanh(self.fc1(self.norm(self.emb(ids)))))


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net()
    with torch.no_grad():  # LayerNorm starts at 1/0: give its weights something to decay
        net.norm.weight.normal_(1.0, 0.2)
        net.norm.bias.normal_(0.0, 0.2)
    return net


def batch(step: int, size: int = 24):
    """The same batch on every rank (so a data-parallel mean equals it exactly)."""
    g = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(0, VOCAB, (size,), generator=g)
    target = torch.randn(size, OUT, generator=g)
    return ids, target


def loss_fn(net, step: int):
    ids, target = batch(step)
    return ((net(ids) - target) ** 2).mean()


def full(t: torch.Tensor) -> torch.Tensor:
    """A parameter as a plain full tensor (DTensors are gathered)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t.detach()


def max_diff(a: nn.Module, b: nn.Module) -> float:
    """Largest absolute difference between same-named parameters of two models."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys(), (sorted(pa), sorted(pb))
    return max((full(pa[n]) - full(pb[n])).abs().max().item() for n in pa)


def out_dir() -> str:
    return os.getcwd()  # the launcher runs workers in the test's tmp_path


def finish(rank: int, results: dict) -> None:
    """Wait for every rank, have rank 0 write ``results.json`` for the test, and shut down.

    The process then ends with ``os._exit(0)``, skipping interpreter finalization: gloo's
    worker threads can still hold finished async work (FSDP2's reduce-scatters) whose tensors
    are freed while Python tears down, which aborts the process ("terminate called without an
    active exception", SIGABRT; pytorch/pytorch#179291 describes it). The job's results are
    written and every rank has passed the barrier by then, so nothing is lost.
    """
    dist.barrier()
    if rank == 0:
        with open(f"{out_dir()}/results.json", "w") as f:
            json.dump(results, f, indent=1)
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
