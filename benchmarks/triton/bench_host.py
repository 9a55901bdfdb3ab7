"""Host time per optimizer step with many tensors: is the fused path launch-bound?

    python benchmarks/triton/bench_host.py [--tensors 2000] [--numel 4096] [--steps 50] [--out DIR]

On (b) 2,000 tensors of 4,096 elements and (a) GPT-2 small's 148 tensors (124M elements).

With 2,000 tensors of 4,096 elements an AdamW step moves 7 x 4 x 8.2M = 229 MB (fp32), about
50 us of an H100/H200's memory bandwidth, while Python touches every tensor on the host. For
each candidate this prints, per step (median of ``--rounds`` rounds of ``--steps`` steps):

- host: the time ``opt.step()`` takes to return, steps issued back to back with no sync
  (what the Python side costs: plan, layout checks, table lookups, launches);
- wall: host clock over the same steps plus one final synchronize (what training sees);
- gpu: CUDA events around the steps, divided by their number (includes idle gaps when the
  host cannot keep the device busy);
- graph: one captured step replayed (sd[triton] with capturable=True and torch fused with
  capturable=True), the device-bound floor without launch gaps.

host ≈ wall and gpu ≈ wall mean host-bound; gpu ≈ graph means device-bound. A cProfile of the
sd[triton] step (top functions by cumulative time) goes to ``--out/host_profile.txt``.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import itertools
import json
import pstats
import statistics
import time
from pathlib import Path

import torch
from bench_triton import gpt2_small_shapes, make_params

import scaled_decay as sd


def case_shapes(args):
    """(b) ``--tensors`` x ``--numel`` and (a) GPT-2 small's 148 tensors (bench_triton.py)."""
    return {
        f"b_{args.tensors}x{args.numel}": [(args.numel,)] * args.tensors,
        "a_gpt2_small": gpt2_small_shapes(),
    }


def _has_optimi() -> bool:
    try:
        import optimi  # noqa: F401
    except ImportError:
        return False
    return True


def candidates(family, capturable=False):
    hp = dict(lr=1e-3, weight_decay=0.01)
    cap = dict(capturable=True) if capturable else {}
    if family == "adamw":
        return {
            "sd[triton]": lambda p: sd.AdamW(p, backend="triton", **hp, **cap),
            "sd[triton] fan_in": lambda p: sd.AdamW(
                p, backend="triton", decay_scaling="fan_in", **hp
            ),
            "sd[foreach]": lambda p: sd.AdamW(p, backend="foreach", **hp),
            "torch[fused]": lambda p: torch.optim.AdamW(p, fused=True, **hp, **cap),
            "torch[foreach]": lambda p: torch.optim.AdamW(p, foreach=True, **hp),
            # torch-optimi's Triton AdamW, torch's hyperparameters (where it installs)
            **(
                {}
                if capturable or not _has_optimi()
                else {
                    "optimi[triton]": lambda p: __import__("optimi").AdamW(
                        p, betas=(0.9, 0.999), eps=1e-8, triton=True, **hp
                    )
                }
            ),
        }
    return {
        "sd[triton]": lambda p: sd.SGD(p, momentum=0.9, backend="triton", **hp),
        "sd[foreach]": lambda p: sd.SGD(p, momentum=0.9, backend="foreach", **hp),
        "torch[fused]": lambda p: torch.optim.SGD(p, momentum=0.9, fused=True, **hp),
        # (torch's fused SGD has no capturable flag: it has no step count to keep)
        "torch[foreach]": lambda p: torch.optim.SGD(p, momentum=0.9, foreach=True, **hp),
    }


def measure(opt, steps, rounds):
    for _ in range(3):
        opt.step()
    torch.cuda.synchronize()
    host, wall, gpu = [], [], []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        start.record()
        spent = 0.0
        for _ in range(steps):
            s = time.perf_counter()
            opt.step()
            spent += time.perf_counter() - s
        end.record()
        torch.cuda.synchronize()
        wall.append((time.perf_counter() - t0) * 1e3 / steps)
        host.append(spent * 1e3 / steps)
        gpu.append(start.elapsed_time(end) / steps)
    return statistics.median(host), statistics.median(wall), statistics.median(gpu)


def graph_ms(opt, reps=50):
    """One captured step, replayed: ms per replay (None when capture fails)."""
    for _ in range(3):
        opt.step()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        opt.step()  # warm on the capture stream too
        with torch.cuda.graph(graph, stream=stream):
            opt.step()
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def profile_step(opt, steps=20):
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        opt.step()
    torch.cuda.synchronize()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(35)
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tensors", type=int, default=2000)
    ap.add_argument("--numel", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--note", default="")
    ap.add_argument(
        "--out",
        default=str(Path(__file__).parent / "results" / "cuda"),
        help="where the results go (default: results/cuda/, beside the recorded ones)",
    )
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_host.py measures CUDA launch overhead: it needs a CUDA device")
    device = torch.device("cuda")
    rows, profiles = [], []
    for case, shapes in case_shapes(args).items():
        for dtype, family in itertools.product(
            (torch.float32, torch.bfloat16), ("adamw", "sgd_momentum")
        ):
            fam = "adamw" if family == "adamw" else "sgd"
            for name, make in candidates(fam).items():
                params = make_params(shapes, dtype, device)
                row = dict(case=case, optimizer=family, dtype=str(dtype).split(".")[-1], impl=name)
                opt = None
                try:
                    opt = make(params)
                    row["host_ms"], row["wall_ms"], row["gpu_ms"] = measure(
                        opt, args.steps, args.rounds
                    )
                    if name == "sd[triton]" and family == "adamw":
                        profiles.append(
                            f"== {case} {name} {family} {row['dtype']} ==\n" + profile_step(opt)
                        )
                except Exception as e:
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                if name in ("sd[triton]", "torch[fused]") and "error" not in row:
                    try:
                        cap = candidates(fam, capturable=True)[name]
                        row["graph_ms"] = graph_ms(cap(make_params(shapes, dtype, device, seed=1)))
                    except Exception as e:
                        row["graph_error"] = f"{type(e).__name__}: {e}"[:300]
                rows.append(row)
                print(json.dumps(row), flush=True)
                del params, opt
                torch.cuda.empty_cache()
    write(args, rows, profiles)


def fmt(x):
    return "" if x is None else f"{x:.3f}"


def write(args, rows, profiles):
    import triton

    meta = dict(
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        triton=triton.__version__,
        tensors=args.tensors,
        numel=args.numel,
        steps=args.steps,
        rounds=args.rounds,
        note=args.note,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_cuda.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    (out / "host_profile.txt").write_text("\n".join(profiles))
    lines = [
        f"# Host time per step: {meta['device']}",
        "",
        f"{meta['date']}; torch {meta['torch']}, triton {meta['triton']}; "
        f"(b) {args.tensors} tensors x {args.numel} elements, (a) GPT-2 small's 148 tensors "
        f"(124M elements); median of {args.rounds} rounds "
        f"of {args.steps} steps." + (f" Note: {args.note}" if args.note else ""),
        "",
        "| case | optimizer | dtype | impl | host ms/step | wall ms/step | gpu ms/step "
        "| graph replay ms | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['optimizer']} | {r['dtype']} | {r['impl']} | "
            f"{fmt(r.get('host_ms'))} | {fmt(r.get('wall_ms'))} | "
            f"{fmt(r.get('gpu_ms'))} | {fmt(r.get('graph_ms'))} | "
            f"{r.get('error', r.get('graph_error', ''))} |"
        )
    (out / "host_cuda.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
