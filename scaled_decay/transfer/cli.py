"""``scaled-decay transfer``: the command-line face of the width-transfer study.

``add_transfer_arguments`` fills an argparse parser (the package CLI's ``transfer``
subcommand uses it), ``run_transfer`` runs the parsed study, and ``main`` does both for
``python -m scaled_decay.transfer``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .names import (
    ARCH_DATASETS,
    ARCHS,
    AXES,
    DATASETS,
    MODES,
    OPTIMIZERS,
    PARAMETRIZATIONS,
    RULES,
    STUDY_PACKAGES,
)

__all__ = ["add_transfer_arguments", "main", "run_transfer", "settings_from_args"]


def default_out(quick: bool, dataset: str | None = None, arch: str = "mlp", kind: str = "") -> str:
    """The visible folder a study writes to when --out is not given, in the current
    directory: scaled_decay_quick / scaled_decay_study, with _<arch> for the CNN and the
    transformer, _<dataset> for a dataset other than the arch's default (so a digits
    preview never overwrites an MNIST-1D one) and _tokens / _joint for those studies."""
    name = "scaled_decay_quick" if quick else "scaled_decay_study"
    if arch != "mlp":
        name += f"_{arch}"
    if dataset is not None and dataset != ARCH_DATASETS[arch][0]:
        name += f"_{dataset}"
    return name + (f"_{kind}" if kind else "")


def default_cache(out: str) -> str:
    """The per-run cache lives inside the output folder: one folder holds a whole study."""
    return os.path.join(out, "cache")


def _ints(text: str):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from err
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _choices(allowed):
    def parse(text: str):
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"{', '.join(bad) or repr(text)} not in {', '.join(allowed)}"
            )
        return values

    return parse


def _positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from err
        if not v > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return v

    return parse


def add_transfer_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--quick",
        action="store_true",
        help="3 widths, 1 seed, short runs: a preview in under 2 minutes on 2 cores",
    )
    p.add_argument(
        "--arch",
        choices=ARCHS,
        default="mlp",
        help="mlp (default), cnn (on mnist5k or digits) or transformer (a byte "
        "LM on the standard library's text)",
    )
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="default per arch: " + ", ".join(f"{a} {d[0]}" for a, d in ARCH_DATASETS.items()),
    )
    p.add_argument(
        "--out",
        default=None,
        help="where the figures, tables and JSON go (default ./scaled_decay_quick "
        "with --quick, else ./scaled_decay_study; _digits appended for "
        "--dataset digits)",
    )
    p.add_argument(
        "--cache", default=None, help="per-run cache; rerun to resume (default OUT/cache)"
    )
    p.add_argument(
        "--workers",
        type=_positive(int),
        default=2,
        help="worker processes, one core each (default 2)",
    )
    p.add_argument("--axes", type=_choices(AXES), help="width,data (default both)")
    p.add_argument("--widths", type=_ints, help="e.g. 64,256,1024; the first is the base")
    p.add_argument("--data-sizes", type=_ints, help="training-set sizes of the data arm")
    p.add_argument("--data-width", type=_positive(int), help="the data arm's width")
    p.add_argument("--n-train", type=_positive(int), help="the width arm's training-set size")
    p.add_argument("--optimizers", type=_choices(OPTIMIZERS))
    p.add_argument("--parametrizations", type=_choices(PARAMETRIZATIONS))
    p.add_argument("--rules", type=_choices(RULES))
    p.add_argument("--modes", type=_choices(MODES))
    p.add_argument("--seeds", type=_positive(int))
    p.add_argument("--epochs", type=_positive(int))
    p.add_argument("--batch-size", type=_positive(int))
    p.add_argument(
        "--grid-points",
        type=_positive(int),
        help="initial lambdas per sweep, half a decade apart (>= 3), centred on "
        "the lambda* predicted from the narrower widths (default 3)",
    )
    p.add_argument(
        "--first-grid-points",
        type=_positive(int),
        help="the same at each chain's first point, where there is no "
        "prediction yet (default 5; 3 with --quick)",
    )
    p.add_argument("--lr-sgd", type=_positive(float), help="SGD lr at the base width")
    p.add_argument("--lr-adamw", type=_positive(float), help="AdamW lr at the base width")
    p.add_argument(
        "--tokens",
        action="store_true",
        help="the token-budget arm: the transformer trained one epoch on 20 "
        "tokens per parameter, widths 8 -> 64, and a tokens-per-parameter "
        "axis (implies --arch transformer)",
    )
    p.add_argument(
        "--joint",
        action="store_true",
        help="the joint lr x lambda grids at the base and the widest width "
        "(--arch mlp or transformer)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--finished-only",
        action="store_true",
        help="train nothing: write the outputs for what the cache already "
        "completes (each chain up to its last finished axis point), e.g. "
        "while the study still runs",
    )
    p.add_argument(
        "--replot",
        action="store_true",
        help="train nothing: rewrite the figures and table from OUT/runs.json",
    )
    return p


def settings_from_args(args: argparse.Namespace):
    """The preset (--quick or full) with the flags given on top; ValueError if invalid."""
    from .settings import full_settings, quick_settings, token_settings

    if getattr(args, "tokens", False):
        if args.arch not in ("mlp", "transformer") or args.dataset not in (None, "text"):
            raise ValueError(
                "--tokens trains the transformer on text: no --arch or "
                "--dataset other than transformer / text"
            )
        s = token_settings(args.quick)
    else:
        preset = quick_settings if args.quick else full_settings
        s = preset(args.dataset, args.arch)
    changes = {
        name: getattr(args, name)
        for name in (
            "axes",
            "widths",
            "data_sizes",
            "data_width",
            "n_train",
            "optimizers",
            "parametrizations",
            "rules",
            "modes",
            "seeds",
            "epochs",
            "batch_size",
            "grid_points",
            "first_grid_points",
        )
        if getattr(args, name) is not None
    }
    lr = dict(s.lr)
    if args.lr_sgd is not None:
        lr["sgd"] = args.lr_sgd
    if args.lr_adamw is not None:
        lr["adamw"] = args.lr_adamw
    return s.replace(lr=lr, **changes)


class _Bar:
    """tqdm in cost units (so the ETA weighs a 1024-wide run above a 64-wide one)."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar = enabled, None

    def plan(self, total: float) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit="",
                unit_scale=False,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| [{elapsed}<{remaining}] {postfix}",
            )

    def grow(self, cost: float) -> None:
        if self.bar is not None:
            self.bar.total += cost
            self.bar.refresh()

    def done(self, cost, trained, cached, queued) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"runs trained {trained}, cached {cached}, queued {queued}", refresh=False
            )
            self.bar.update(cost)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _missing_packages():
    import importlib.util

    return [dist for mod, dist in STUDY_PACKAGES.items() if importlib.util.find_spec(mod) is None]


def run_transfer(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    missing = _missing_packages()
    if missing:
        raise SystemExit(
            f"scaled-decay transfer needs {', '.join(missing)}: pip install 'scaled_decay[study]'"
        )
    from .report import drift_table, load_study, write_outputs
    from .runner import run_study

    if args.replot:
        if args.out is None:
            (parser.error if parser else _raise)("--replot needs --out (the study's folder)")
        if args.joint:  # the joint grids keep their own file, joint.json
            return _replot_joint(args.out, parser)
        try:
            study = load_study(args.out)
        except ValueError as e:
            (parser.error if parser else _raise)(str(e))
        paths = write_outputs(study, args.out)
        print(drift_table(study))
        for kind, path in paths.items():
            print(f"{kind}: {path}")
        return 0

    try:
        settings = settings_from_args(args)
        if args.joint:
            from .joint import JointSettings

            if args.tokens:
                raise ValueError("--joint and --tokens are separate studies: give one")
            joint = JointSettings(settings, seeds=args.seeds or (1 if args.quick else 2))
    except ValueError as e:
        if parser is not None:
            parser.error(str(e))  # exits with status 2 and the usage line
        raise
    kind = "tokens" if args.tokens else "joint" if args.joint else ""
    out = args.out or default_out(
        args.quick, args.dataset, "transformer" if args.tokens else args.arch, kind
    )
    cache = args.cache or default_cache(out)
    if args.joint:
        return _run_joint(joint, out, cache, args.workers)
    bar = _Bar(not args.no_progress)
    start = time.perf_counter()
    try:
        study = run_study(
            settings, cache, workers=args.workers, progress=bar, train=not args.finished_only
        )
        if not study["chains"]:
            raise ValueError(
                f"--finished-only: no chain of the study in {cache} has two "
                f"finished axis points yet"
            )
    except ValueError as e:
        bar.close()
        (parser.error if parser else _raise)(str(e))
    except KeyboardInterrupt:
        bar.close()
        print(
            f"\ninterrupted: finished runs are cached in {cache}; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    bar.close()
    study["wall_seconds"] = time.perf_counter() - start
    paths = write_outputs(study, out)
    print(drift_table(study))
    print(
        f"{study['trained']} runs trained, {study['cached']} from the cache, "
        f"{study['wall_seconds']:.0f} s"
    )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    print(
        f"outputs in {os.path.abspath(out)}{os.sep} (run cache: {cache}; rerun the same "
        f"command to resume or replot)"
    )
    return 0


def _replot_joint(out: str, parser) -> int:
    """joint.md and joint.png drawn anew from the folder's joint.json."""
    import json

    from .joint import joint_table, write_joint_outputs

    try:
        with open(f"{out}/joint.json") as f:
            joint = json.load(f)
    except (OSError, ValueError) as e:
        (parser.error if parser else _raise)(f"--replot: cannot read {out}/joint.json: {e}")
    paths = write_joint_outputs(joint, out)
    print(joint_table(joint))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _run_joint(joint, out: str, cache: str, workers: int) -> int:
    from .joint import joint_table, run_joint, write_joint_outputs

    start = time.perf_counter()
    try:
        result = run_joint(joint, cache, workers=workers)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished runs are cached in {cache}; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    result["wall_seconds"] = time.perf_counter() - start
    paths = write_joint_outputs(result, out)
    print(joint_table(result))
    print(
        f"{result['trained']} runs trained, {result['cached']} from the cache, "
        f"{result['wall_seconds']:.0f} s"
    )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _raise(message: str):
    raise ValueError(message)


def main(argv=None) -> int:
    parser = add_transfer_arguments(
        argparse.ArgumentParser(
            prog="scaled-decay transfer",
            description="How does the best weight decay move as a model widens (MLP, CNN or "
            "transformer)? Measures lambda* per width and scaling rule, its drift "
            "and its exponent.",
        )
    )
    args = parser.parse_args(argv)
    return run_transfer(args, parser)
