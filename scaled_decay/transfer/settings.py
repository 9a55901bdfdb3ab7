"""What a study measures: one frozen, validated object, with the --quick and full presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from .archs import Net
from .data import input_dim as input_dim_of
from .data import max_train_size
from .names import (
    ARCH_DATASETS,
    ARCHS,
    AXES,
    DATA_RULES,
    DATASETS,
    MODES,
    OPTIMIZERS,
    PARAMETRIZATIONS,
    RULES,
)
from .nets import TEXT_HEADS

__all__ = ["AXES", "StudySettings", "full_settings", "quick_settings"]


@dataclass(frozen=True)
class StudySettings:
    """All knobs of a study. ``widths[0]`` is the base width (muP and rule references).

    ``lr``: per optimizer, the base-width lr (muP scales it per tensor from there).
    ``default_lam``: where the first sweep of a chain is centred, as a decoupled lambda;
    later axis points are centred on the lambda* the rule would have there if its drift so
    far continued. ``first_grid_points`` / ``grid_points``: initial points per sweep, half
    a decade apart, at a chain's first point (no prediction yet) / later points; a sweep
    whose best point is at an edge grows by one point on that side, up to
    ``max_extensions`` times per side.

    The defaults (20 epochs of batch 64, SGD lr 0.1 with momentum 0.9, AdamW lr 1e-2) were
    chosen so that even the 64-wide base model overfits MNIST-1D's 4000 samples and decay
    measurably improves its held-out loss: with shorter or slower training the narrow
    model underfits and the sanity gate (rightly) reports lambda* as not identifiable.
    """

    dataset: str = "mnist1d"
    arch: str = "mlp"
    axes: tuple[str, ...] = AXES
    widths: tuple[int, ...] = (64, 256, 1024)
    n_train: int = 4000
    data_sizes: tuple[int, ...] = (1000, 4000, 16000)
    data_width: int = 256
    optimizers: tuple[str, ...] = OPTIMIZERS
    parametrizations: tuple[str, ...] = PARAMETRIZATIONS
    rules: tuple[str, ...] = RULES
    data_rules: tuple[str, ...] = DATA_RULES
    modes: tuple[str, ...] = MODES
    seeds: int = 3
    epochs: int = 20
    batch_size: int = 64
    lr: dict[str, float] = field(default_factory=lambda: {"sgd": 0.1, "adamw": 1e-2})
    default_lam: dict[str, float] = field(default_factory=lambda: {"sgd": 0.03, "adamw": 0.3})
    first_grid_points: int = 5
    grid_points: int = 3
    max_extensions: int = 6
    data_seed: int = 0
    # each seed's 1/8-decade refinement window reaches this many decades either side of its
    # coarse optimum (refine.py); 0: no refinement (lambda* from the coarse grid alone)
    refine_half_span: float = 0.5
    # > 0: the token-budget regime -- the width arm trains each width on this many tokens
    # (transformer) or samples (others) per parameter, instead of n_train
    tokens_per_param: float = 0.0

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        _ = self.net  # checks that the arch reads the dataset
        _subset("axes", self.axes, AXES)
        _subset("optimizers", self.optimizers, OPTIMIZERS)
        _subset("parametrizations", self.parametrizations, PARAMETRIZATIONS)
        _subset("rules", self.rules, RULES)
        _subset("data_rules", self.data_rules, DATA_RULES)
        _subset("modes", self.modes, MODES)
        _increasing("widths", self.widths)
        if self.arch == "transformer" and any(
            w % TEXT_HEADS for w in (*self.widths, self.data_width)
        ):
            raise ValueError(
                f"widths and data_width of the transformer must be multiples of "
                f"its {TEXT_HEADS} heads, got {self.widths} and {self.data_width}"
            )
        if "data" in self.axes:
            _increasing("data_sizes", self.data_sizes)
        for name in ("n_train", "data_width", "seeds", "epochs", "batch_size"):
            _positive_int(name, getattr(self, name))
        for name in ("first_grid_points", "grid_points"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 3:
                raise ValueError(
                    f"{name} must be an integer >= 3 (a parabola needs three points), got {v!r}"
                )
        if not (
            self.refine_half_span == 0
            or (
                isinstance(self.refine_half_span, (int, float))
                and 0.375 <= self.refine_half_span <= 2
            )
        ):
            raise ValueError(
                f"refine_half_span must be 0 (off) or between 0.375 (7 points) "
                f"and 2 decades, got {self.refine_half_span!r}"
            )
        if not (
            isinstance(self.tokens_per_param, (int, float))
            and self.tokens_per_param >= 0
            and math.isfinite(self.tokens_per_param)
        ):
            raise ValueError(
                f"tokens_per_param must be a non-negative number, got {self.tokens_per_param!r}"
            )
        if not isinstance(self.max_extensions, int) or self.max_extensions < 0:
            raise ValueError(
                f"max_extensions must be a non-negative integer, got {self.max_extensions!r}"
            )
        for name in ("lr", "default_lam"):
            value = getattr(self, name)
            for opt in self.optimizers:
                v = value.get(opt) if isinstance(value, dict) else None
                if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                    raise ValueError(f"{name}[{opt!r}] must be a positive number, got {v!r}")
        pool = max_train_size(self.dataset, self.needed_pool())
        largest = max((self.n_train,) + (self.data_sizes if "data" in self.axes else ()))
        if largest > pool:
            raise ValueError(
                f"n_train / data_sizes: {self.dataset} has {pool} training "
                f"samples, asked for {largest}"
            )

    def needed_pool(self) -> int:
        widths = (
            tuple(self.n_train_at_width(w) for w in self.widths) if "width" in self.axes else ()
        )
        return max((self.n_train, *self.data_sizes, *widths))

    def n_train_at_width(self, width: int) -> int:
        """The width arm's training-set size at ``width``: n_train, or in the token regime
        tokens_per_param x parameters, in windows of the context (samples for non-text)."""
        if not self.tokens_per_param:
            return self.n_train
        per_sample = input_dim_of(self.dataset) if self.arch == "transformer" else 1
        return math.ceil(self.tokens_per_param * self.net.param_count(width) / per_sample)

    @property
    def net(self) -> Net:
        return Net(self.arch, self.dataset)

    @property
    def base_width(self) -> int:
        return self.widths[0]

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> StudySettings:
        return replace(self, **changes)


def _subset(name, values, allowed):
    if (
        isinstance(values, str)
        or not values
        or not set(values) <= set(allowed)
        or len(set(values)) != len(values)
    ):
        raise ValueError(
            f"{name} must be a non-empty list of distinct values from "
            f"{list(allowed)}, got {values!r}"
        )


def _positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _increasing(name, values):
    if (
        isinstance(values, (str, bytes))
        or len(values) < 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values)
        or list(values) != sorted(set(values))
    ):
        raise ValueError(
            f"{name} must be at least two increasing positive integers, got {values!r}"
        )


# The CNN's and the transformer's presets, in the MLP's regime: small training sets and
# enough steps that even the narrowest model overfits, so decay measurably helps there.
# Probed with single runs (AdamW, lambda 0 / 0.1 / 1, widths 16 and 64 for the CNN, 32 and
# 128 for the transformer), the CNN's full study and quick preview and the transformer's
# quick preview (the first study, in git at b2e852b:benchmarks/results/transfer/first_study/):
# SGD's lr 0.3 for the transformer trains there without divergence. Planned core-seconds:
# tests/study/test_transfer_archs.py, docs/study.md.
_TEXT = dict(
    n_train=128,
    epochs=40,
    batch_size=32,
    lr={"sgd": 0.3, "adamw": 1e-2},
    default_lam={"sgd": 0.03, "adamw": 1.0},
)
# The rules whose verdicts the recommendation (docs/study.md) cites (FanIn(power=1) never held
# within 2x in the first study); ParamCount shares plain decay's sweeps, so it is free.
_CITED_RULES = ("none", "fan_in_inv", "param_count")
_ARCH_PRESETS = {
    # not part of the 3-hour study (issue 18): 3 seeds, refined, ~2 h on its own
    "cnn": dict(
        full=dict(
            widths=(16, 32, 64, 128),
            n_train=500,
            rules=_CITED_RULES,
            data_sizes=(250, 500, 1000, 2000, 4000),
            data_width=32,
        ),
        quick=dict(widths=(16, 32, 64), n_train=500, data_sizes=(250, 1000, 4000), data_width=16),
    ),
    # 5 seeds over 8x width (16 -> 128: the 256-wide runs alone would cost the 3-hour
    # budget), plain decay and ParamCount (one sweep per mode): the arms the recommendation cites
    "transformer": dict(
        full=dict(
            widths=(16, 32, 128),
            data_sizes=(32, 128, 512),
            data_width=16,
            seeds=5,
            rules=("none", "param_count"),
            **_TEXT,
        ),
        quick=dict(widths=(32, 64, 128), data_sizes=(32, 128, 512), data_width=32, **_TEXT),
    ),
}

# The token-budget regime (issue 18): one epoch on TOKENS_PER_PARAM tokens per parameter
# (Chinchilla's 20, the regime Power Lines and W&A fitted their laws on), AdamW, widths 8 ->
# 64 (the 64-wide model reads 2.7M tokens of the standard library); the data axis varies the
# tokens per parameter (5 -> 40) at width 16. Batch 64 windows (2,048 tokens).
TOKENS_PER_PARAM = 20
TOKEN_AXIS_TPP = (5, 10, 20, 40)


def token_settings(quick: bool = False) -> StudySettings:
    """The token-budget arm: AdamW under SP and muP with `independent` plain decay (one sweep
    each; SP's decoupled arm is the same runs relabelled), one epoch; --quick: 1 seed,
    widths 8 -> 32, tokens-per-parameter axis 5 -> 20."""
    widths, tpp, seeds = (
        ((8, 16, 32), TOKEN_AXIS_TPP[:3], 1) if quick else ((8, 16, 32, 64), TOKEN_AXIS_TPP, 3)
    )
    base = StudySettings(
        dataset="text",
        arch="transformer",
        widths=widths,
        n_train=1000,
        data_sizes=(32, 64),
        data_width=16,
        epochs=1,
        batch_size=64,
        optimizers=("adamw",),
        parametrizations=("sp", "mup"),
        rules=("none",),
        modes=("independent",),
        data_rules=("none",),
        seeds=seeds,
        lr={"sgd": 0.3, "adamw": 1e-2},
        default_lam={"sgd": 0.03, "adamw": 1.0},
        first_grid_points=5,
        tokens_per_param=TOKENS_PER_PARAM,
        refine_half_span=0.375 if quick else 0.5,
    )
    per_window = input_dim_of("text")
    sizes = tuple(math.ceil(t * base.net.param_count(16) / per_window) for t in tpp)
    return base.replace(data_sizes=sizes)


def default_dataset(arch: str) -> str:
    if arch not in ARCH_DATASETS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    return ARCH_DATASETS[arch][0]


def quick_settings(dataset: str | None = None, arch: str = "mlp") -> StudySettings:
    """--quick: one seed, 3 widths spanning 16x (32 -> 512), plain decay and ParamCount()
    (the collapse figure's arms and the mean square), 3-point starting grids, at most 3
    extensions, and refinement windows of +-3/8 decade (7 points; the full study: +-1/2).

    On MNIST-1D the preview trains on 1000 samples and its data arm spans 250 -> 4000 at
    width 64, which keeps the whole preview under 2 minutes on an idle 2-core machine with
    the refinement runs (benchmarks/transfer_study/results/quick_timing.md). Fewer samples
    at the same 20 epochs overfit more, so decay still measurably helps at every width. Digits
    keeps its whole 1,297-sample pool. The CNN and the transformer have their own presets
    (``_ARCH_PRESETS``).
    """
    dataset = dataset or default_dataset(arch)
    if arch != "mlp":
        return StudySettings(
            dataset=dataset,
            arch=arch,
            seeds=1,
            first_grid_points=3,
            grid_points=3,
            max_extensions=3,
            refine_half_span=0.375,
            **_ARCH_PRESETS[arch]["quick"],
        )
    if dataset == "mnist1d":
        n_train, data_sizes = 1000, (250, 1000, 4000)
    else:
        n_train, data_sizes = _n_train(dataset), (80, 320, 1280)
    return StudySettings(
        dataset=dataset,
        widths=(32, 128, 512),
        data_sizes=data_sizes,
        data_width=64,
        n_train=n_train,
        seeds=1,
        rules=("none", "param_count"),
        first_grid_points=3,
        grid_points=3,
        max_extensions=3,
        refine_half_span=0.375,
    )


def full_settings(dataset: str | None = None, arch: str = "mlp") -> StudySettings:
    """The full study's presets: 5 seeds on the MLP and the transformer (the arms the
    recommendation cites), refined to 1/8 decade (+-1/2 decade windows)."""
    dataset = dataset or default_dataset(arch)
    if arch != "mlp":
        return StudySettings(
            **{"dataset": dataset, "arch": arch, "seeds": 3, **_ARCH_PRESETS[arch]["full"]}
        )
    data_sizes = (1000, 4000, 16000) if dataset == "mnist1d" else (80, 320, 1280)
    return StudySettings(
        dataset=dataset,
        widths=(32, 128, 512),
        data_sizes=data_sizes,
        data_width=128,
        n_train=_n_train(dataset),
        seeds=5,
        rules=_CITED_RULES,
    )


def _n_train(dataset: str) -> int:
    """The issue's 4000 MNIST-1D training samples; all 1,297 of digits' training pool."""
    return 4000 if dataset == "mnist1d" else max_train_size(dataset)
