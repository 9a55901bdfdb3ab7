"""Cautious weight decay for ``sd.with_scaled_decay``'s classes (``scaled_decay.wrap``).

The wrapped optimizer's update direction is not known before its step, so the decay moves
after it: the params (with grads, in ``cautious_decay`` groups) are copied before the step
(``snapshot``), the wrapped optimizer steps on the undecayed params, and then (``decay_after``)
``u = (p_before - p_after) / lr`` gives the mask ``1[u * p_before >= 0]`` (only its sign is
used, so the division is never done) and ``p = p_after - c * mask * p_before``: the same
``x <- x - lr * (u + lam * mask * x)`` as sd.AdamW's cautious step, with ``x = p_before``.

Memory: one copy of those params is held across the wrapped step, and the decay then makes
up to three temporaries of their size per (device, dtype) batch (``u``, the decayed copy,
and ``apply_cautious_decay``'s mask and product).
"""

from __future__ import annotations

import torch

from . import distributed as D
from .updates.decay_ops import Decay, apply_cautious_decay, found_inf_set, indices_by


def snapshot(gi: int, group: dict, amounts: list) -> list:
    """``[(gi, positions, local params, copies before the step, amounts c), ...]`` of the
    group's params with grads, one entry per (device, dtype) batch."""
    idx = [i for i, p in enumerate(group["params"]) if p.grad is not None]
    if not idx:
        return []
    local = D.local_lists([[group["params"][i] for i in idx]])[0]
    out = []
    for batch in indices_by([(p.device, p.dtype) for p in local]).values():
        params = [local[i] for i in batch]
        out.append(
            (
                gi,
                [idx[i] for i in batch],
                params,
                [p.detach().clone() for p in params],
                [amounts[idx[i]] for i in batch],
            )
        )
    return out


@torch.no_grad()
def decay_after(plan, snaps: list[tuple], found_inf) -> None:
    """The cautious decay of the step the wrapped optimizer just took (nothing where
    GradScaler's ``found_inf`` says it skipped it: read on the host, one sync). The counts
    of decayed coordinates go to ``plan.decayed`` for ``decay_report()``."""
    if not snaps or found_inf_set(found_inf):
        return
    for gi in {s[0] for s in snaps}:
        plan.decayed[gi] = []
    for gi, positions, params, before, amounts in snaps:
        direction = torch._foreach_sub(before, params)  # lr * u
        decay = Decay("amount", tuple(indices_by(amounts).items()), decayed=[None] * len(params))
        shrunk = torch._foreach_mul(before, 1.0)  # a copy, to be decayed
        apply_cautious_decay(shrunk, direction, decay)  # p_before * (1 - c * mask)
        del direction
        torch._foreach_sub_(before, shrunk)  # c * mask * p_before
        torch._foreach_sub_(params, before)
        plan.decayed[gi].append((positions, decay.decayed))
