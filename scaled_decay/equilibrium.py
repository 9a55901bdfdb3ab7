"""Rotational equilibrium, measured per tensor next to its prediction.

Kosson et al. 2024 ("Rotational Equilibrium: How Weight Decay Balances Learning Across
Neural Networks", arXiv 2305.17212): a scale-invariant weight (one followed by a
normalization, so its gradient is orthogonal to it) settles where weight decay shrinks its
norm as fast as the updates grow it. There, per step, with ``c`` the fraction decay removes
(``c = lr * lam`` for decoupled decay) and ``mu`` the momentum (``beta1`` for Adam):

- angular update (the angle between the weight before and after a step):
  decoupled decay (AdamW, SGDW): ``sqrt(2 c (1 - mu) / (1 + mu))``; SGD with L2 decay
  (torch SGD's ``weight_decay``, decay inside the momentum, dampening ``d``):
  ``sqrt(2 lr lam (1 - d) / (1 + mu))``;
- RMS of the weights (AdamW-type only; for SGD it depends on the gradient's size):
  ``sqrt(lr / (2 lam)) = lr / sqrt(2 c)``.

None of these depends on width or parameter count: the per-step shrink sets the dynamics.
:class:`EquilibriumMonitor` measures both per tensor, as exponential moving averages over
steps, so a user can check them on their own run::

    mon = sd.EquilibriumMonitor(opt)        # snapshots the weights
    for x, y in data:
        ...; opt.step(); mon.update()       # after every step, before zero_grad
    print(mon.report())                     # measured against predicted, per tensor

The predictions hold for scale-invariant tensors at equilibrium (reached after a few
``1 / c`` steps) with a slowly varying lr; ``grad_cos`` (|cos| between a weight and its
gradient, 0 for a scale-invariant one) shows which tensors qualify.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .adam import Adam, AdamW
from .group_keys import peak_lr
from .modes import decay_lr_factor
from .report import DecayReport
from .sgd import SGD

__all__ = [
    "OPTIMIZER_KINDS",
    "EquilibriumMonitor",
    "EquilibriumReport",
    "EquilibriumRow",
    "predict_angular_update",
    "predict_rms",
]

# How each optimizer class moves a tensor: "adam" (normalized update, momentum = betas[0]) or
# "sgd" (momentum = group["momentum"]), and its decay mode where the class fixes it (torch's
# own optimizers; the package's carry decay_mode per group, None here). Subclasses match
# their nearest listed parent; add entries for other optimizers.
OPTIMIZER_KINDS: dict[type, tuple[str, str | None]] = {
    SGD: ("sgd", None),
    Adam: ("adam", None),
    AdamW: ("adam", None),
    torch.optim.SGD: ("sgd", "l2"),
    torch.optim.Adam: ("adam", "l2"),
    torch.optim.AdamW: ("adam", "decoupled"),
}


def _kind(optimizer) -> tuple[str | None, str | None]:
    for cls in type(optimizer).__mro__:
        if cls in OPTIMIZER_KINDS:
            return OPTIMIZER_KINDS[cls]
    return None, None


def predict_angular_update(
    kind: str, mode: str, c: float, lr: float, lam: float, momentum: float, dampening: float = 0.0
) -> float | None:
    """Equilibrium angle per step (radians); None where the theory gives none.

    ``c``: the fraction decoupled decay removes per step; ``lam``: the coupled (L2) decay.
    """
    if mode == "l2":
        if kind == "sgd" and lam > 0 and lr > 0:
            return math.sqrt(2 * lr * lam * (1 - dampening) / (1 + momentum))
        return None  # Adam with L2: decay is rescaled per element, no balanced rotation
    if c > 0:
        return math.sqrt(2 * c * (1 - momentum) / (1 + momentum))
    return None


def predict_rms(kind: str, mode: str, c: float, lr: float) -> float | None:
    """Equilibrium RMS of a scale-invariant tensor under AdamW-type decay, ``lr / sqrt(2c)``."""
    if kind == "adam" and mode != "l2" and c > 0 and lr > 0:
        return lr / math.sqrt(2 * c)
    return None


@dataclass(frozen=True)
class EquilibriumRow:
    """One tensor: measured and predicted equilibrium quantities (EMAs over ``steps`` steps).

    ``lr``, ``lam``, ``c``: at the last update (``lam``: the tensor's effective decay, as in
    ``decay_report()``; ``c``: the fraction removed per step, 0 for L2). ``rms`` and
    ``angular`` are measured, ``*_pred`` predicted (None where the theory gives none);
    ``ratio`` = angular / angular_pred; ``grad_cos``: mean |cos(weight, gradient)|.
    Before the first ``update()`` the measured and per-step values are None.

    Attributes:
        group: the index of the tensor's param group.
        index: the tensor's position in its group.
        name: its name from the group's ``param_names``, or None.
        shape: its shape.
        decay_mode: its decay mode at the last update (None where the monitor knows none).
        lr: the group's lr at the last update.
        lam: the tensor's effective decay at the last update.
        c: the fraction decay removed per step at the last update (0 for L2).
        steps: the number of angular updates averaged.
        rms: measured RMS of the weights.
        rms_pred: predicted equilibrium RMS, ``lr / sqrt(2 c)`` (AdamW-type decay only).
        angular: measured angle between the weights before and after a step (radians).
        angular_pred: predicted equilibrium angle per step (radians).
        ratio: ``angular / angular_pred``.
        grad_cos: mean |cos| between the weights and their gradient (0 for a
            scale-invariant tensor).
        note: why there is no prediction (e.g. ``"no decay"``), else None.
    """

    group: int
    index: int
    name: str | None
    shape: tuple[int, ...]
    decay_mode: str | None
    lr: float | None
    lam: float | None
    c: float | None
    steps: int
    rms: float | None
    rms_pred: float | None
    angular: float | None
    angular_pred: float | None
    ratio: float | None
    grad_cos: float | None
    note: str | None


class EquilibriumReport(DecayReport):
    """A list of ``EquilibriumRow``, one per watched tensor (``EquilibriumMonitor.report()``).

    ``str()`` gives a table, ``to_dicts()`` plain data (the same table layout as
    ``decay_report()``).
    """

    _COLUMNS = (
        "name",
        "shape",
        "decay_mode",
        "c",
        "steps",
        "rms",
        "rms_pred",
        "angular",
        "angular_pred",
        "ratio",
        "grad_cos",
        "note",
    )

    def _cells(self, row: EquilibriumRow) -> list[str]:  # type: ignore[override]  # its rows
        def cell(col):
            v = getattr(row, col)
            if col == "name" and v is None:
                return f"[{row.group}][{row.index}]"
            if col == "shape":
                return "x".join(map(str, v)) or "scalar"
            return f"{v:.6g}" if isinstance(v, float) else "-" if v is None else str(v)

        return [cell(col) for col in self._COLUMNS]


class _Ema:
    """Bias-corrected exponential moving average (as Adam's moments): unbiased from step 1."""

    def __init__(self, beta: float):
        self.beta, self.value, self.n = beta, 0.0, 0

    def add(self, x: float) -> None:
        self.value = self.beta * self.value + (1 - self.beta) * x
        self.n += 1

    def get(self) -> float | None:
        return self.value / (1 - self.beta**self.n) if self.n else None


class EquilibriumMonitor:
    """Measure each tensor's RMS and angular update per step against the equilibrium laws.

    Kosson et al. 2024 ("Rotational Equilibrium", arXiv 2305.17212): at equilibrium a
    scale-invariant weight turns by ``sqrt(2 c (1 - mu) / (1 + mu))`` radians per step under
    decoupled decay (``c``: the fraction decay removes per step; ``mu``: the momentum,
    ``beta1`` for Adam), by ``sqrt(2 lr lam (1 - d) / (1 + mu))`` under SGD with L2 decay
    (dampening ``d``), and has RMS ``lr / sqrt(2 c)`` under AdamW-type decay. The
    predictions hold for scale-invariant tensors at equilibrium (reached after a few
    ``1 / c`` steps) with a slowly varying lr; ``grad_cos`` shows which tensors qualify.
    Nesterov momentum and Adam with L2 decay get no prediction.

    The monitor snapshots the weights now; call ``update()`` after every
    ``optimizer.step()`` and before ``zero_grad()`` (it reads the gradients for
    ``grad_cos``), or pass ``attach=True`` to have the optimizer's step post-hook call it.
    Every update syncs with the device once.

    Args:
        optimizer: any ``torch.optim.Optimizer``; predictions for the kinds in
            ``scaled_decay.equilibrium.OPTIMIZER_KINDS`` (torch's SGD, Adam, AdamW) and sd's
            SGD/Adam/AdamW (per-tensor decay from their ``decay_report()``), measurements
            for all.
        params: the tensors to watch (default: every parameter of at least 2 dimensions,
            i.e. the weights a normalization can make scale-invariant); each costs one copy
            of the tensor.
        beta: the EMA factor over steps (the measured values average the last
            ~``1 / (1 - beta)`` steps).
        attach: call ``update()`` from the optimizer's step post-hook (``detach()`` stops
            it).

    Raises:
        ValueError: ``optimizer`` is not a ``torch.optim.Optimizer``; ``beta`` not a number
            in [0, 1); a ``params`` entry that is not a tensor the optimizer holds; no
            tensor to watch.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: torch.Tensor | Iterable[torch.Tensor] | None = None,
        *,
        beta: float = 0.99,
        attach: bool = False,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
            raise ValueError(f"beta must be a number in [0, 1), got {beta!r}")
        self.optimizer, self.beta = optimizer, float(beta)
        self.kind, self.fixed_mode = _kind(optimizer)
        where = {
            id(p): (gi, i)
            for gi, g in enumerate(optimizer.param_groups)
            for i, p in enumerate(g["params"])
        }
        if params is None:
            chosen = [p for g in optimizer.param_groups for p in g["params"] if p.dim() >= 2]
        else:
            chosen = list(params) if not isinstance(params, torch.Tensor) else [params]
            for p in chosen:
                if not isinstance(p, torch.Tensor):
                    raise ValueError(
                        f"params must be tensors the optimizer holds, got a {type(p).__name__}"
                    )
                if id(p) not in where:
                    raise ValueError(
                        f"params: a tensor of shape {tuple(p.shape)} is not held by the optimizer"
                    )
        if not chosen:
            raise ValueError("params: no tensor to watch (default: those of >= 2 dimensions)")
        self._params = chosen
        self._where = [where[id(p)] for p in chosen]
        self._prev = [p.detach().clone() for p in chosen]
        self._ema = [
            {k: _Ema(self.beta) for k in ("rms", "angular", "grad_cos", "rms_pred", "angular_pred")}
            for _ in chosen
        ]
        self._last: list[dict] = [{} for _ in chosen]
        self._handle = (
            optimizer.register_step_post_hook(lambda *_: self.update()) if attach else None
        )

    def detach(self) -> None:
        """Stop the automatic updates of ``attach=True``."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    # ---- per-tensor hyperparameters ---------------------------------------------------
    def _decay(self) -> list[dict]:
        """lr, lam, mode and c of each watched tensor, at this step."""
        groups = self.optimizer.param_groups
        rows = None
        if hasattr(self.optimizer, "decay_report"):
            rows = {(r.group, r.index): r for r in self.optimizer.decay_report()}
        out = []
        for gi, i in self._where:
            g = groups[gi]
            lr = float(g["lr"])
            if rows is not None:
                r = rows[(gi, i)]
                lam, mode = r.lam, r.decay_mode
            else:
                lam = float(g.get("weight_decay", 0.0))
                mode = "decoupled" if g.get("decoupled_weight_decay") else self.fixed_mode
            c = 0.0
            if mode not in (None, "l2"):
                # eta0 as the package's optimizers take it (the peak lr); torch's groups have none
                eta0 = peak_lr(g) if "peak_lr" in g or "max_lr" in g else g.get("initial_lr", lr)
                c = decay_lr_factor(mode, lr, float(eta0)) * lam
            out.append(dict(lr=lr, lam=lam, mode=mode, c=c, group=g))
        return out

    def _predict(self, d: dict) -> tuple[float | None, float | None, str | None]:
        g = d["group"]
        if self.kind is None or d["mode"] is None:
            return None, None, f"no prediction for {type(self.optimizer).__name__}"
        if self.kind == "sgd" and g.get("nesterov"):
            return None, None, "no prediction for nesterov momentum"
        mu = float(g["betas"][0]) if self.kind == "adam" else float(g.get("momentum", 0.0))
        ang = predict_angular_update(
            self.kind, d["mode"], d["c"], d["lr"], d["lam"], mu, float(g.get("dampening", 0.0))
        )
        rms = predict_rms(self.kind, d["mode"], d["c"], d["lr"])
        note = None
        if ang is None:
            note = "no decay" if d["lam"] == 0 else "Adam with L2 decay: no prediction"
        return rms, ang, note

    # ---- measuring ------------------------------------------------------------------------
    @torch.no_grad()
    def update(self) -> None:
        """Measure the step just taken: each tensor's RMS, its angle to the previous
        snapshot and |cos| to its gradient (where it has one), then snapshot it again."""
        stats = []
        for p, prev in zip(self._params, self._prev):
            a, b = prev.double().flatten(), p.detach().double().flatten()
            na, nb = a.norm(), b.norm()
            u, v = a / na, b / nb
            angle = 2 * torch.atan2((u - v).norm(), (u + v).norm())  # accurate for tiny angles
            gcos = torch.tensor(math.nan, dtype=torch.float64, device=a.device)
            if p.grad is not None and not p.grad.is_sparse:
                gr = p.grad.detach().double().flatten()
                gcos = (a @ gr).abs() / (na * gr.norm())
            stats.append(torch.stack([nb / math.sqrt(max(b.numel(), 1)), angle, gcos]).cpu())
        for ema, last, (rms, angle, gcos), d, p, prev in zip(
            self._ema,
            self._last,
            torch.stack(stats).tolist() if stats else [],
            self._decay(),
            self._params,
            self._prev,
        ):
            rms_pred, ang_pred, note = self._predict(d)
            for key, x in (
                ("rms", rms),
                ("angular", angle),
                ("grad_cos", gcos),
                ("rms_pred", rms_pred),
                ("angular_pred", ang_pred),
            ):
                if x is not None and math.isfinite(x):
                    ema[key].add(x)
            last.update(lr=d["lr"], lam=d["lam"], c=d["c"], mode=d["mode"], note=note)
            prev.copy_(p.detach())

    def reset(self) -> None:
        """Forget the averages (e.g. after warm-up); the snapshots stay."""
        for ema in self._ema:
            for e in ema.values():
                e.value, e.n = 0.0, 0

    def report(self) -> EquilibriumReport:
        """One row per watched tensor, in optimizer order of the ``params`` given.

        Returns:
            The measured and predicted values, averaged over the updates so far.
        """
        groups = self.optimizer.param_groups
        rows = EquilibriumReport()
        for (gi, i), p, ema, last in zip(self._where, self._params, self._ema, self._last):
            names = groups[gi].get("param_names")
            ang, pred = ema["angular"].get(), ema["angular_pred"].get()
            rows.append(
                EquilibriumRow(
                    group=gi,
                    index=i,
                    name=names[i] if names else None,
                    shape=tuple(p.shape),
                    decay_mode=last.get("mode"),
                    lr=last.get("lr"),
                    lam=last.get("lam"),
                    c=last.get("c"),
                    steps=ema["angular"].n,
                    rms=ema["rms"].get(),
                    rms_pred=ema["rms_pred"].get(),
                    angular=ang,
                    angular_pred=pred,
                    ratio=ang / pred if ang is not None and pred else None,
                    grad_cos=ema["grad_cos"].get(),
                    note=last.get("note"),
                )
            )
        return rows
