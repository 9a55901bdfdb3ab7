"""Host work per step of the Triton path, measured on the CPU with the kernel launches stubbed.

    python benchmarks/speed/bench_host_cpu.py [--tensors 2000] [--numel 4096] [--steps 30]
        [--out DIR]

On a GPU an optimizer step's device work for many small tensors is tens of microseconds, so
what the host does per step (checks, lists, table lookups, launches) sets its speed. This
measures that host work without a GPU: sd's Triton path runs under Triton's interpreter with
its three kernels replaced by no-ops (the launch arguments are still built), and torch's fused
AdamW/SGD with their device ops (``torch._fused_adamw_``, ``_fused_sgd_`` and the step-count
``_foreach_add_``) replaced likewise. Interleaved rounds; prints host microseconds per tensor,
the ratio sd / torch, and the Python call count per step at two tensor counts (cProfile),
which should not grow with the number of tensors. Issue 16's targets: <= 1 us per tensor and
<= 0.5x torch fused's host time at 2,000 tensors.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import json
import os
import pstats
import statistics
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import torch
from bench_cases import cpu_model

import scaled_decay as sd


class _NoLaunch:
    """Stands for a @triton.jit kernel: ``kernel[grid](*args, **kw)`` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def stubbed_device_work():
    from scaled_decay import kernels

    package = kernels.package_for(torch.device("cpu"))
    saved = [
        (package.adam, "_adam_kernel"),
        (package.adam, "_adam_steps_kernel"),
        (package.sgd, "_sgd_kernel"),
        (torch, "_fused_adamw_"),
        (torch, "_fused_sgd_"),
        (torch, "_foreach_add_"),
    ]
    originals = [getattr(obj, name) for obj, name in saved]
    for obj, name in saved:
        setattr(obj, name, _NoLaunch() if obj is not torch else (lambda *a, **k: None))
    try:
        yield
    finally:
        for (obj, name), value in zip(saved, originals):
            setattr(obj, name, value)


def candidates():
    hp = dict(lr=1e-3, weight_decay=0.01)
    return {
        "AdamW": {
            "sd triton": lambda p: sd.AdamW(p, backend="triton", **hp),
            "sd triton fan_in": lambda p: sd.AdamW(
                p, backend="triton", decay_scaling="fan_in", **hp
            ),
            "torch fused": lambda p: torch.optim.AdamW(p, fused=True, **hp),
        },
        "SGD": {
            "sd triton": lambda p: sd.SGD(p, momentum=0.9, backend="triton", **hp),
            "torch fused": lambda p: torch.optim.SGD(p, momentum=0.9, fused=True, **hp),
        },
    }


def make_params(n, numel):
    params = [torch.zeros(numel).requires_grad_() for _ in range(n)]
    for p in params:
        p.grad = torch.zeros(numel)
    return params


def calls_per_step(opt, steps=5) -> float:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        opt.step()
    prof.disable()
    return pstats.Stats(prof).total_calls / steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=int, default=2000)
    ap.add_argument("--numel", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    rows = []
    with stubbed_device_work():
        for family, makers in candidates().items():
            opts = {
                name: make(make_params(args.tensors, args.numel)) for name, make in makers.items()
            }
            for opt in opts.values():
                for _ in range(3):
                    opt.step()
            times = {name: [] for name in opts}
            names = list(opts)
            for k in range(args.rounds):
                for name in names[k % len(names) :] + names[: k % len(names)]:
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        opts[name].step()
                    times[name].append((time.perf_counter() - t0) / args.steps)
            small = {
                name: make(make_params(args.tensors // 10, args.numel))
                for name, make in makers.items()
            }
            for name in names:
                for _ in range(3):
                    small[name].step()
                ratios = [a / b for a, b in zip(times[name], times["torch fused"])]
                rows.append(
                    dict(
                        optimizer=family,
                        impl=name,
                        us_per_tensor=statistics.median(times[name]) * 1e6 / args.tensors,
                        ratio=statistics.median(ratios),
                        lo=min(ratios),
                        hi=max(ratios),
                        calls_small=calls_per_step(small[name]),
                        calls=calls_per_step(opts[name]),
                    )
                )
                print(json.dumps(rows[-1]), flush=True)
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        cpu=cpu_model(),
        torch=torch.__version__,
        tensors=args.tensors,
        numel=args.numel,
        steps=args.steps,
        rounds=args.rounds,
    )
    text = markdown(meta, rows)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_cpu.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    (out / "host_cpu.md").write_text(text)


def markdown(meta, rows) -> str:
    n = meta["tensors"]
    lines = [
        f"# Host work per step, device work stubbed ({meta['date'][:10]})",
        "",
        f"{meta['cpu']}, torch {meta['torch']}; {n} tensors of {meta['numel']} elements; "
        f"median of {meta['rounds']} interleaved rounds of {meta['steps']} steps. "
        f"Reproduce: `python benchmarks/speed/bench_host_cpu.py`.",
        "",
        f"| optimizer | impl | host us/tensor | / torch fused [spread] | Python calls/step "
        f"at {n // 10} and {n} tensors |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['optimizer']} | {r['impl']} | {r['us_per_tensor']:.3f} | "
            f"{r['ratio']:.2f} [{r['lo']:.2f}-{r['hi']:.2f}] | "
            f"{r['calls_small']:.0f} / {r['calls']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
