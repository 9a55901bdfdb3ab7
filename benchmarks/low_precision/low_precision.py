"""What each optimizer keeps of the decay and the update in pure bf16, and what it costs.

    python benchmarks/low_precision/low_precision.py [--quick] [--out DIR]

(1) Decay alone: a 256x256 bf16 weight, zero gradients, AdamW lr 1e-3, weight decay 0.1,
    1,000 steps: the norm should shrink to (1 - 1e-4)**1000 = 0.9048 of itself.
(2) Training in pure bf16 (weights, grads, activations): a small MLP on scikit-learn's digits
    (300 steps) and a tiny GPT-2 (transformers' GPT2LMHeadModel from a config, byte-level, on
    the standard library's text, 200 steps), each against the same run in fp32 (same init,
    same batches): the distance of the final weights from the fp32 run's, and the held-out
    loss (evaluated in fp32).
(3) Step time of each on ~13M bf16 parameters in 200 tensors, as a ratio to torch's fused
    AdamW timed in the same rounds (alternating order, median over rounds), and the bytes
    each keeps per parameter (weights and state).

Optimizers: torch AdamW (foreach; fused in (1) and (3)), ``sd.AdamW`` with
``low_precision=None``, ``"kahan"``, ``"stochastic"`` (and ``state_dtype=torch.float32``),
torch-optimi's AdamW with ``kahan_sum=True`` and torchao's ``_AdamW(bf16_stochastic_round=
True)`` where they install. Writes ``low_precision.md``/``.json`` with the CPU model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import scaled_decay as sd

LR, WD = 1e-3, 0.1


def cpu_model() -> str:
    """The CPU's model name (speed/bench_cases.py's; copied so this folder runs on its own)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def optimizers():
    """name -> constructor(params) for the optimizers that import here."""
    out = {
        "torch AdamW": lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WD, foreach=True),
        "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WD, fused=True),
        "sd AdamW": lambda ps: sd.AdamW(ps, lr=LR, weight_decay=WD),
        "sd AdamW kahan": lambda ps: sd.AdamW(ps, lr=LR, weight_decay=WD, low_precision="kahan"),
        "sd AdamW stochastic": lambda ps: sd.AdamW(
            ps, lr=LR, weight_decay=WD, low_precision="stochastic"
        ),
        "sd AdamW kahan, fp32 moments": lambda ps: sd.AdamW(
            ps, lr=LR, weight_decay=WD, low_precision="kahan", state_dtype=torch.float32
        ),
    }
    try:
        import optimi

        out["optimi AdamW kahan_sum"] = lambda ps: optimi.AdamW(
            ps, lr=LR, weight_decay=WD, kahan_sum=True, foreach=True
        )
    except ImportError:
        pass
    try:
        from torchao.optim import _AdamW

        out["torchao _AdamW stochastic"] = lambda ps: _AdamW(
            ps, lr=LR, weight_decay=WD, bf16_stochastic_round=True
        )
    except ImportError:
        pass
    return out


def decay_alone(make, steps: int) -> float:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(256, 256).bfloat16())
    n0 = p.detach().double().norm()
    opt = make([p])
    for _ in range(steps):
        p.grad = torch.zeros_like(p)
        opt.step()
    return float(p.detach().double().norm() / n0)


# ---- (2) training in pure bf16 ---------------------------------------------------------------
def mlp_task():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)

    def model():
        torch.manual_seed(1)
        return torch.nn.Sequential(
            torch.nn.Linear(64, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 10),
        )

    def loss(m, idx, dtype):
        return torch.nn.functional.cross_entropy(m(x[idx].to(dtype)).float(), y[idx])

    return model, loss, 1500, torch.arange(1500, len(y)), 64


def gpt2_task():
    from transformers import GPT2Config, GPT2LMHeadModel

    from scaled_decay.transfer.corpora import text_windows

    xs, ys = (torch.tensor(a) for a in text_windows(6000, seed=0))

    def model():
        torch.manual_seed(1)
        return GPT2LMHeadModel(
            GPT2Config(
                vocab_size=256,
                n_positions=32,
                n_embd=64,
                n_layer=2,
                n_head=4,
                bos_token_id=0,
                eos_token_id=0,
            )
        )

    def loss(m, idx, dtype):
        logits = m(input_ids=xs[idx]).logits.float()
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 256), ys[idx].reshape(-1))

    return model, loss, 5000, torch.arange(5000, 6000), 32


def train(task, make, dtype, steps):
    model_fn, loss, n_train, held, batch = task
    m = model_fn().to(dtype)
    opt = make(list(m.parameters()))
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        idx = torch.randint(0, n_train, (batch,), generator=g)
        opt.zero_grad()
        loss(m, idx, dtype).backward()
        opt.step()
    weights = torch.cat([p.detach().double().flatten() for p in m.parameters()])
    m = m.float()
    with torch.no_grad():
        held_loss = float(loss(m, held, torch.float32))
    return weights, held_loss


# ---- (3) step time and memory ----------------------------------------------------------------
def step_costs(makes: dict, rounds: int, steps: int):
    shapes = [(256, 256)] * 200
    torch.manual_seed(0)
    base = [torch.randn(s).bfloat16() for s in shapes]
    grads = [torch.randn(s).bfloat16() * 1e-2 for s in shapes]
    runs = {}
    for name, make in makes.items():
        ps = [torch.nn.Parameter(b.clone()) for b in base]
        for p, gr in zip(ps, grads):
            p.grad = gr
        opt = make(ps)
        opt.step()  # state made
        state_bytes = sum(
            t.numel() * t.element_size()
            for st in opt.state.values()
            for t in st.values()
            if isinstance(t, torch.Tensor)
        )
        numel = sum(p.numel() for p in ps)
        runs[name] = (opt, (state_bytes + numel * 2) / numel)
    ref = "torch AdamW fused"
    ratios = {name: [] for name in runs}
    for r in range(rounds):
        times = {}
        for name in list(runs) if r % 2 == 0 else list(reversed(runs)):
            opt = runs[name][0]
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            times[name] = time.perf_counter() - t0
        for name in runs:
            ratios[name].append(times[name] / times[ref])
    return {name: (statistics.median(ratios[name]), runs[name][1]) for name in runs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds (a smoke run)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    quick = args.quick
    makes = optimizers()
    t_start = time.time()
    decay = {name: decay_alone(make, 20 if quick else 1000) for name, make in makes.items()}
    exact = (1 - LR * WD) ** (20 if quick else 1000)
    training = {}
    for task_name, task, steps in (
        ("MLP (digits)", mlp_task(), 10 if quick else 300),
        ("GPT-2 tiny (stdlib text)", gpt2_task(), 5 if quick else 200),
    ):
        ref_w, ref_loss = train(
            task, lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WD), torch.float32, steps
        )
        rows = {"fp32 (torch AdamW)": (0.0, ref_loss, float(ref_w.norm()))}
        for name, make in makes.items():
            if name.endswith("fused"):
                continue  # (foreach and fused give the same bf16 numbers)
            w, held = train(task, make, torch.bfloat16, steps)
            rows[name] = (float((w - ref_w).norm()), held, float(w.norm()))
        training[task_name] = rows
    costs = step_costs(makes, 2 if quick else 9, 1 if quick else 3)
    record = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "quick": quick,
        "exact_decay": exact,
        "decay_alone": decay,
        "training": training,
        "costs": costs,
        "seconds": round(time.time() - t_start, 1),
    }
    lines = [
        f"# Low precision: what each optimizer keeps ({record['date']}, {record['cpu']}, "
        f"torch {record['torch']}{', QUICK' if quick else ''})",
        "",
        "Command: `python benchmarks/low_precision/low_precision.py`; "
        f"wall time {record['seconds']} s.",
        "",
        f"## Decay alone (bf16, zero grads): norm ratio, exact {exact:.4f}",
        "",
        "| optimizer | norm ratio | decay kept |",
        "|---|---|---|",
    ]
    for name, ratio in decay.items():
        kept = (1 - ratio) / (1 - exact)
        lines.append(f"| {name} | {ratio:.4f} | {kept:.0%} |")
    for task_name, rows in training.items():
        lines += [
            "",
            f"## Pure bf16 training: {task_name}",
            "",
            "| optimizer | distance to fp32 weights | held-out loss | weight norm |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {n} | {d:.4f} | {loss:.4f} | {norm:.3f} |" for n, (d, loss, norm) in rows.items()
        ]
    lines += [
        "",
        "## Step cost (13.1M bf16 params in 200 tensors, CPU)",
        "",
        "| optimizer | step time / torch fused AdamW (median) | bytes per parameter |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {r:.2f} | {b:.1f} |" for n, (r, b) in costs.items()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "low_precision_quick" if quick else "low_precision"
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
