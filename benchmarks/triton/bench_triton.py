"""Fused Triton step against the reference backends and torch.optim, per step and per byte.

    python benchmarks/triton/bench_triton.py [--device cuda|cpu] [--scale S] [--iters N] [--out DIR]

For SGD with momentum and AdamW, fp32 and bf16 params, on three sets of tensors:
(a) GPT-2-small shapes (~124M params, 148 tensors), (b) 2,000 tensors of 4,096 elements,
(c) one tensor of 256M elements. Candidates: sd with backend triton / foreach / loop /
torch_fused, and torch.optim with fused=True / foreach=True. Each gets a warm-up, then the
median of ``--iters`` timed steps (CUDA events on a GPU, a host clock on the CPU), with min
and max. Bytes per step are the minimum traffic (each tensor read once, written once: SGD
with momentum reads p, g, buf and writes p, buf = 5 x numel x itemsize; AdamW reads p, g, m, v
and writes p, m, v = 7x); effective GB/s = bytes / time; "of copy" divides that by the
bandwidth of a large device copy (read + write) measured in the same run.

``--scale`` shrinks (a) and (c) (element counts, not tensor counts) for machines with less
memory or time, e.g. the CPU. On the CPU the triton candidate is skipped: Triton runs CPU
tensors only in its interpreter, a correctness tool that is not worth timing. Results go to
``--out/triton_<device>.json`` and ``.md``; rows say what was skipped and why.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import scaled_decay as sd
from scaled_decay import backends as B


def gpt2_small_shapes():
    d, vocab, ctx, layers = 768, 50257, 1024, 12
    block = [
        (d,),
        (d,),
        (d, 3 * d),
        (3 * d,),
        (d, d),
        (d,),
        (d,),
        (d,),
        (d, 4 * d),
        (4 * d,),
        (4 * d, d),
        (d,),
    ]
    return [(vocab, d), (ctx, d)] + block * layers + [(d,), (d,)]


def cases(scale: float):
    shrink = lambda shape: (max(1, int(shape[0] * scale)), *shape[1:])  # noqa: E731
    return {
        "a_gpt2_small": [shrink(s) if len(s) == 2 else s for s in gpt2_small_shapes()],
        "b_2000x4K": [(4096,)] * 2000,
        "c_one_256M": [(max(1, int((256 << 20) * scale)),)],
    }


def make_params(shapes, dtype, device, seed=0):
    """Random params of ``shapes`` with random grads (x 1e-2), from one seeded generator."""
    gen = torch.Generator(device=device).manual_seed(seed)
    params = [
        torch.randn(s, generator=gen, device=device, dtype=dtype).requires_grad_() for s in shapes
    ]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, device=device, dtype=dtype) * 1e-2
    return params


def candidates(family):
    """(name, constructor) pairs; the constructor takes the params and ``capturable`` (for a
    CUDA graph of the step: sd[triton], torch[fused] AdamW; None where it has no such form)."""
    hp = dict(lr=1e-3, weight_decay=0.01)
    out = []
    for be in ("triton", "foreach", "loop", "torch_fused"):
        if family == "adamw":
            out.append(
                (
                    f"sd[{be}]",
                    lambda p, cap=False, be=be: sd.AdamW(
                        p, backend=be, **hp, **({"capturable": True} if cap else {})
                    ),
                )
            )
        else:
            out.append(
                (
                    f"sd[{be}]",
                    lambda p, cap=False, be=be: (
                        None if cap else sd.SGD(p, momentum=0.9, backend=be, **hp)
                    ),
                )
            )
    for kind in ("fused", "foreach"):
        kw = {kind: True}
        if family == "adamw":
            out.append(
                (
                    f"torch[{kind}]",
                    lambda p, cap=False, kw=kw: torch.optim.AdamW(
                        p, **hp, **kw, **({"capturable": True} if cap else {})
                    ),
                )
            )
        else:  # (torch's fused SGD has no step count, and no capturable flag)
            out.append(
                (
                    f"torch[{kind}]",
                    lambda p, cap=False, kw=kw: (
                        None if cap else torch.optim.SGD(p, momentum=0.9, **hp, **kw)
                    ),
                )
            )
    if family == "adamw":  # torch-optimi's Triton AdamW (PyPI torch-optimi), torch's hparams
        out.append(("optimi[triton]", lambda p, cap=False: None if cap else _optimi_adamw(p)))
    return out


def _optimi_adamw(params):
    import optimi

    return optimi.AdamW(
        params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, triton=True
    )


def graph_ms(make, params, device, iters):
    """ms per replay of one captured step (the device's time: no host work between steps),
    or None where the candidate has no capturable form."""
    opt = make(params, True)
    if opt is None or device.type != "cuda":
        return None
    for _ in range(3):
        opt.step()
    graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            opt.step()
    torch.cuda.current_stream().wait_stream(stream)
    ms, _, _ = timed(graph.replay, device, 3, iters)
    return ms


def timed(fn, device, warmup, iters):
    """Median, min and max ms of ``fn`` over ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times), max(times)


def copy_bandwidth(device, n_bytes, iters):
    """GB/s of a device-to-device copy, counting bytes read plus bytes written."""
    src = torch.randn(n_bytes // 4, device=device)
    dst = torch.empty_like(src)
    ms, _, _ = timed(lambda: dst.copy_(src), device, 3, iters)
    return 2 * n_bytes / (ms * 1e-3) / 1e9


def skip_reason(name, device, dtype):
    if name == "optimi[triton]":
        try:
            import optimi  # noqa: F401
        except ImportError:
            return "torch-optimi is not installed"
        return None if device.type == "cuda" else "optimi's Triton kernels need CUDA"
    if name == "sd[triton]":
        if device.type == "cpu":
            return "Triton runs CPU tensors only in its interpreter (a correctness tool)"
        return B.triton_unavailable_reason(device)
    return None


def run(args):
    device = torch.device(args.device)
    rows = []
    copy_gbs = copy_bandwidth(device, args.copy_mb << 20, args.iters)
    print(f"copy bandwidth: {copy_gbs:.1f} GB/s on {device}")
    for case, shapes in cases(args.scale).items():
        n_elem = sum(torch.Size(s).numel() for s in shapes)
        for dtype in (torch.float32, torch.bfloat16):
            params = make_params(shapes, dtype, device)
            for family, per_elem in (("sgd_momentum", 5), ("adamw", 7)):
                n_bytes = per_elem * n_elem * params[0].element_size()
                for name, make in candidates("adamw" if family == "adamw" else "sgd"):
                    row = dict(
                        case=case,
                        optimizer=family,
                        dtype=str(dtype).split(".")[-1],
                        impl=name,
                        tensors=len(shapes),
                        elements=n_elem,
                        bytes=n_bytes,
                    )
                    reason = skip_reason(name, device, dtype)
                    if (
                        reason is None
                        and name == "sd[loop]"
                        and len(shapes) > 500
                        and device.type == "cpu"
                        and args.skip_slow_loop
                    ):
                        reason = "--skip-slow-loop"
                    if reason is not None:
                        rows.append(dict(row, skipped=reason))
                        print(
                            f"{case:13s} {family:12s} {row['dtype']:9s} {name:18s} "
                            f"skipped: {reason}"
                        )
                        continue
                    try:
                        opt = make(params)
                        ms, lo, hi = timed(opt.step, device, args.warmup, args.iters)
                    except Exception as e:  # an implementation that cannot run this case
                        rows.append(dict(row, skipped=f"{type(e).__name__}: {e}"[:200]))
                        print(f"{case:13s} {family:12s} {row['dtype']:9s} {name:18s} failed: {e}")
                        continue
                    finally:
                        opt = None
                        gc.collect()
                    gbs = n_bytes / (ms * 1e-3) / 1e9
                    graph = None
                    try:
                        graph = graph_ms(make, params, device, args.iters)
                    except Exception as e:  # a capture that fails is reported, not fatal
                        row["graph_error"] = f"{type(e).__name__}: {e}"[:200]
                    finally:
                        gc.collect()
                    rows.append(
                        dict(
                            row,
                            ms=ms,
                            ms_min=lo,
                            ms_max=hi,
                            gb_s=gbs,
                            of_copy=gbs / copy_gbs,
                            graph_ms=graph,
                            graph_of_copy=None
                            if graph is None
                            else n_bytes / (graph * 1e-3) / 1e9 / copy_gbs,
                        )
                    )
                    print(
                        f"{case:13s} {family:12s} {row['dtype']:9s} {name:18s} "
                        f"{ms:9.3f} ms  [{lo:.3f}, {hi:.3f}]  {gbs:7.1f} GB/s  "
                        f"{gbs / copy_gbs:5.1%} of copy"
                    )
            del params
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return copy_gbs, rows


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def ratios(rows):
    """The issue's targets, where both sides were measured."""
    ms = {(r["case"], r["optimizer"], r["dtype"], r["impl"]): r["ms"] for r in rows if "ms" in r}
    out = []
    for case in ("a_gpt2_small", "b_2000x4K", "c_one_256M"):
        for dt in ("float32", "bfloat16"):
            for other in ("torch[fused]", "sd[foreach]", "optimi[triton]"):
                key, ref = (case, "adamw", dt, "sd[triton]"), (case, "adamw", dt, other)
                if key in ms and ref in ms:
                    out.append(
                        f"AdamW {case} {dt}: sd[triton] is {ms[ref] / ms[key]:.2f}x "
                        f"the speed of {other}"
                    )
    return out


def write(args, copy_gbs, rows):
    device = torch.device(args.device)
    meta = dict(
        device=device_name(device),
        device_type=device.type,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__,
        scale=args.scale,
        iters=args.iters,
        copy_gb_s=copy_gbs,
        note=args.note,
    )
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        # other processes on the machine show up in CPU timings: record how busy it was
        meta["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
        meta["cpu_count"] = os.cpu_count()
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        meta["triton"] = None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"triton_{device.type}"
    stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [
        f"# Fused step benchmark: {meta['device']}",
        "",
        f"{meta['date']}; torch {meta['torch']}, triton {meta['triton']}; "
        f"sizes scaled by {args.scale} (cases a and c); median of {args.iters} steps; "
        f"copy bandwidth {copy_gbs:.1f} GB/s (read + write)."
        + (
            f" Load average at the end {meta['load_average_1_5_15']} on {meta['cpu_count']} CPUs."
            if "cpu_count" in meta
            else ""
        )
        + (f" Note: {args.note}" if args.note else ""),
        "",
        "| case | optimizer | dtype | impl | ms/step | [min, max] | GB/s | of copy "
        "| graph replay ms | of copy (replay) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "ms" in r:
            replay = (
                ""
                if r.get("graph_ms") is None
                else f"{r['graph_ms']:.3f} | {r['graph_of_copy']:.1%}"
            )
            lines.append(
                f"| {r['case']} | {r['optimizer']} | {r['dtype']} | {r['impl']} | "
                f"{r['ms']:.3f} | [{r['ms_min']:.3f}, {r['ms_max']:.3f}] | "
                f"{r['gb_s']:.1f} | {r['of_copy']:.1%} | {replay or '|'} |"
            )
        else:
            lines.append(
                f"| {r['case']} | {r['optimizer']} | {r['dtype']} | {r['impl']} | "
                f"skipped: {r['skipped']} | | | | | |"
            )
    lines += ["", *(f"- {s}" for s in ratios(rows) or ["no triton timings on this device"])]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json and {stem}.md")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--scale",
        type=float,
        default=None,
        help="shrink cases a and c (default 1 on CUDA, 1/16 on the CPU)",
    )
    ap.add_argument("--iters", type=int, default=None, help="timed steps (default 50 / 5)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--copy-mb", type=int, default=None, help="copy-bandwidth buffer size")
    ap.add_argument(
        "--skip-slow-loop",
        action="store_true",
        help="skip sd[loop] on the CPU for case b (2,000 tensors)",
    )
    ap.add_argument(
        "--block",
        type=int,
        default=None,
        help="elements per program of the Triton kernels (default: the package's)",
    )
    ap.add_argument("--warps", type=int, default=None, help="warps per program (likewise)")
    ap.add_argument("--note", default="", help="a line on the run's conditions, kept in the output")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    args.scale = args.scale if args.scale is not None else (1.0 if cuda else 1 / 16)
    args.iters = args.iters if args.iters is not None else (50 if cuda else 5)
    args.copy_mb = args.copy_mb if args.copy_mb is not None else (1024 if cuda else 256)
    if args.block or args.warps:
        from scaled_decay.kernels import launch

        launch.BLOCK = args.block or launch.BLOCK
        launch.NUM_WARPS = args.warps or launch.NUM_WARPS
        args.note = f"kernel config {launch.BLOCK}x{launch.NUM_WARPS}. {args.note}".strip()
    write(args, *run(args))


if __name__ == "__main__":
    main()
