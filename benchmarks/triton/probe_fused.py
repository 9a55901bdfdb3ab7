"""How far torch's fused optimizer ops are from this package's reference math, per output.

    python benchmarks/triton/probe_fused.py [--device cuda] [--out DIR]

Runs the probes of ``scaled_decay.fused_guard`` (the ones the torch_fused backend runs before
it trusts an op) for torch's ``_fused_adam_``, ``_fused_adamw_`` and ``_fused_sgd_`` in fp32,
bf16 and fp16, over the settings that select code paths, and prints each output's worst error
in ulps against the tolerance (fp32 4 ulp, bf16/fp16 1 ulp).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from scaled_decay import fused_guard as G
from scaled_decay.updates import adam, sgd


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for adamw, amsgrad, maximize, has_wd in itertools.product((True, False), repeat=4):
            flags = (adamw, amsgrad, maximize, has_wd, False, False)
            worst = adam.probe(device, dtype, flags)
            rows.append(
                dict(
                    op="_fused_adamw_" if adamw else "_fused_adam_",
                    dtype=str(dtype),
                    flags=flags,
                    worst=worst,
                    ok=G.probe_ok(worst, dtype),
                )
            )
        for momentum, first, nesterov, has_lam in itertools.product((True, False), repeat=4):
            if nesterov and not momentum:
                continue
            flags = (momentum, first, nesterov, False, has_lam, False, False, False)
            worst = sgd.probe(device, dtype, flags)
            rows.append(
                dict(
                    op="_fused_sgd_",
                    dtype=str(dtype),
                    flags=flags,
                    worst=worst,
                    ok=G.probe_ok(worst, dtype),
                )
            )
    for r in rows:
        print(
            f"{r['op']:14s} {r['dtype']:15s} {r['flags']!s:60s} "
            f"{'ok  ' if r['ok'] else 'FAIL'} "
            + ", ".join(f"{k} {v:.3g}" for k, v in r["worst"].items())
        )
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"probe_{device.type}.json").write_text(
            json.dumps(
                dict(
                    torch=torch.__version__,
                    device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    rows=rows,
                ),
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
