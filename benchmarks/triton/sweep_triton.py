"""The fused kernels' block size and warps, side by side on one GPU (CUDA only).

    python benchmarks/triton/sweep_triton.py [--configs 4096x8,2048x8,...] [--iters N] [--out DIR]

For each ``BLOCKxWARPS`` config (``kernels.launch.BLOCK`` elements per program, ``NUM_WARPS``
warps) and for SGD-momentum and AdamW in fp32 and bf16 on bench_triton.py's cases (a)
GPT-2-small shapes and (c) one 256M-element tensor: the median ms of sd[triton]'s step
(CUDA events), GB/s of the minimum traffic and its fraction of a device copy measured in the
same run; torch's fused step alongside as the reference. Before timing, each config's result
on fresh random odd-sized tensors is checked against the foreach backend (fused tolerance).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from pathlib import Path

import torch
from bench_triton import candidates, cases, copy_bandwidth, make_params, timed

import scaled_decay as sd
from scaled_decay.kernels import launch


def _run(family, dtype, seed):
    """3 sd[triton] steps on fresh random odd-sized tensors (the same for a given seed)."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    sizes = [1, 7, 1023, 2049, 4097, 65537, 300001]
    params = [
        torch.randn(n, generator=gen, device="cuda", dtype=dtype).requires_grad_() for n in sizes
    ]
    opt = (
        sd.AdamW(params, lr=1e-2, weight_decay=0.1, backend="triton")
        if family == "adamw"
        else sd.SGD(params, lr=1e-2, momentum=0.9, weight_decay=0.1, backend="triton")
    )
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, device="cuda", dtype=dtype)
        opt.step()
    return params


def check(family, dtype, config, default):
    """A config changes only how the work is cut up, never an element's arithmetic: its
    result must equal the default config's bit for bit (the default is checked against the
    reference by tests/kernels/test_triton_cuda.py)."""
    seed = int(torch.randint(0, 2**31 - 1, ()))
    results = []
    for cfg in (config, default):
        launch.BLOCK, launch.NUM_WARPS = cfg
        results.append(_run(family, dtype, seed))
    launch.BLOCK, launch.NUM_WARPS = config
    for a, b in zip(*results):
        if not torch.equal(a, b):
            raise AssertionError(
                f"{family} {dtype} config {config}: result differs from "
                f"{default} (max |diff| {float((a - b).abs().max())})"
            )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="4096x8,4096x16,2048x8,2048x4,1024x4,1024x8")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument(
        "--out",
        default=str(Path(__file__).parent / "results" / "cuda"),
        help="where the results go (default: results/cuda/, beside the recorded ones)",
    )
    args = ap.parse_args()
    device = torch.device("cuda")
    copy_gbs = copy_bandwidth(device, 1 << 30, 20)
    print(f"copy {copy_gbs:.0f} GB/s", flush=True)
    configs = [tuple(map(int, c.split("x"))) for c in args.configs.split(",")]
    default = (launch.BLOCK, launch.NUM_WARPS)
    rows = []
    all_cases = cases(1.0)
    for case in ("a_gpt2_small", "c_one_256M"):
        shapes = all_cases[case]
        n_elem = sum(torch.Size(s).numel() for s in shapes)
        for dtype in (torch.float32, torch.bfloat16):
            params = make_params(shapes, dtype, device)
            for family, per_elem in (("sgd_momentum", 5), ("adamw", 7)):
                n_bytes = per_elem * n_elem * params[0].element_size()
                make = dict(candidates("adamw" if family == "adamw" else "sgd"))
                impls = [(f"sd[triton] {b}x{w}", (b, w)) for b, w in configs]
                impls.append(("torch[fused]", None))
                for name, cfg in impls:
                    if cfg is not None:
                        launch.BLOCK, launch.NUM_WARPS = cfg
                        if case == "a_gpt2_small":
                            check(family, dtype, cfg, default)
                    opt = make["sd[triton]" if cfg is not None else "torch[fused]"](params)
                    ms, lo, hi = timed(opt.step, device, 3, args.iters)
                    gbs = n_bytes / (ms * 1e-3) / 1e9
                    row = dict(
                        case=case,
                        optimizer=family,
                        dtype=str(dtype).split(".")[-1],
                        impl=name,
                        ms=ms,
                        ms_min=lo,
                        ms_max=hi,
                        gb_s=gbs,
                        of_copy=gbs / copy_gbs,
                    )
                    rows.append(row)
                    print(
                        f"{case:13s} {family:12s} {row['dtype']:9s} {name:22s} {ms:8.3f} ms "
                        f"[{lo:.3f}, {hi:.3f}] {gbs:7.0f} GB/s {gbs / copy_gbs:6.1%}",
                        flush=True,
                    )
                    del opt
            del params
            torch.cuda.empty_cache()
    launch.BLOCK, launch.NUM_WARPS = default
    meta = dict(
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        copy_gb_s=copy_gbs,
        iters=args.iters,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep_cuda.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    best = best_config(rows)
    (out / "best_config.txt").write_text(f"{best[0]} {best[1]}\n")
    print(f"best config (geometric mean of torch[fused] ms / sd[triton] ms): {best}")


def best_config(rows):
    """The config with the highest geometric-mean speed against torch's fused step."""
    ref = {
        (r["case"], r["optimizer"], r["dtype"]): r["ms"]
        for r in rows
        if r["impl"] == "torch[fused]"
    }
    scores = {}
    for r in rows:
        if r["impl"].startswith("sd[triton]"):
            key = (r["case"], r["optimizer"], r["dtype"])
            scores.setdefault(r["impl"].split()[-1], []).append(math.log(ref[key] / r["ms"]))
    name = max(scores, key=lambda k: sum(scores[k]) / len(scores[k]))
    return tuple(int(x) for x in name.split("x"))


if __name__ == "__main__":
    main()
