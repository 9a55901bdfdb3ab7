"""Command line: ``scaled-decay SUBCOMMAND`` (also ``python -m scaled_decay SUBCOMMAND``)."""

from __future__ import annotations

import argparse


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train a small MLP with torch.optim.AdamW and sd.AdamW "
        "under each scaling rule; print held-out losses",
    )
    p.add_argument("--width", type=int, default=256, help="hidden width (default 256)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="weight_decay (default 0.1)")
    p.add_argument("--seed", type=int, default=0)

    def run(args):
        from .demo import run_demo

        for name, value in (("--width", args.width), ("--epochs", args.epochs)):
            if value < 1:
                raise SystemExit(f"scaled-decay demo: {name} must be >= 1, got {value}")
        if not args.weight_decay >= 0:
            raise SystemExit(
                f"scaled-decay demo: --weight-decay must be >= 0, got {args.weight_decay}"
            )
        return run_demo(
            width=args.width, epochs=args.epochs, weight_decay=args.weight_decay, seed=args.seed
        )

    p.set_defaults(func=run)


def _add_transfer(sub) -> None:
    # transfer.cli imports nothing heavy: the study's extras load only when it runs
    from .transfer.cli import add_transfer_arguments, run_transfer

    p = sub.add_parser(
        "transfer",
        help="the width-transfer study: how the best weight decay "
        "moves with width (and data) under each rule",
    )
    add_transfer_arguments(p)
    p.set_defaults(func=lambda args: run_transfer(args, p))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaled-decay", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_transfer(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0
