"""A small resumable training script: atomic checkpoints, restart where it stopped.

``python train_resume.py DIR [--steps N] [--every K] [--step-delay S] [--crash-in-save-at K]``

Checkpoints (model, optimizer, LR scheduler, torch RNG, step) go to ``DIR/ckpt.pt`` every
``--every`` steps, written atomically: to a temporary file in the same directory, flushed
and fsync'ed, then ``os.replace``d over the old one, so a kill at any instant leaves either
the previous or the new checkpoint, never a torn one. On start the script resumes from
``DIR/ckpt.pt`` if present and removes temporary files a killed run left. It prints
``step k`` after each step and writes the final parameters to ``DIR/final.pt``.
``--crash-in-save-at K`` SIGKILLs the process halfway through writing checkpoint K (tests).
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import batch, make_net

import scaled_decay as sd


def atomic_save(obj, path: Path, crash_halfway: bool = False) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        if crash_halfway:
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--step-delay", type=float, default=0.0)
    ap.add_argument("--crash-in-save-at", type=int, default=-1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = args.dir / "ckpt.pt"
    for stale in args.dir.glob("ckpt.pt.tmp-*"):
        stale.unlink()

    torch.manual_seed(0)
    net = make_net()
    opt = sd.AdamW(
        sd.param_groups(net, 0.3),
        lr=0.03,
        decay_mode="independent",
        decay_scaling=(sd.FanIn(4), sd.StepsPerEpoch(10)),
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=args.steps)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)  # plain data only, by design
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
        print(f"resumed from step {start}", flush=True)

    for step in range(start, args.steps):
        ids, target = batch(step)
        hidden = F.dropout(torch.tanh(net.fc1(net.norm(net.emb(ids)))), p=0.2)  # uses the RNG
        F.mse_loss(net.fc2(hidden), target).backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        done = step + 1
        print(f"step {done}", flush=True)
        if done % args.every == 0 and done < args.steps:
            atomic_save(
                {
                    "model": net.state_dict(),
                    "optim": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "rng": torch.get_rng_state(),
                    "step": done,
                },
                ckpt,
                crash_halfway=done == args.crash_in_save_at,
            )
        time.sleep(args.step_delay)
    atomic_save({k: v.detach() for k, v in net.state_dict().items()}, args.dir / "final.pt")


if __name__ == "__main__":
    main()
