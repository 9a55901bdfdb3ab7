"""``low_precision`` for ``sd.with_scaled_decay``'s classes: the wrapped step on fp32 copies.

The wrapped optimizer updates ``p`` in place, in p's dtype: a bf16 weight would lose what
rounds away before the package sees it. So, for the step, each bf16/fp16 param (with a grad)
of a ``low_precision`` group steps as an fp32 copy (``p + comp`` for "kahan"; ``p.data`` and
``p.grad`` swapped), the decay and the wrapped update both land on it, and ``narrow`` stores
the result by the group's rounding (``updates.low_precision.store_``). Costs an fp32 copy of
those params and grads during the step; the wrapped optimizer's state for them is fp32.
"""

from __future__ import annotations

import torch

from .updates import low_precision as LP


def loaded_state_dtype(group: dict, p: torch.Tensor):
    """Under ``low_precision`` the wrapped optimizer's state of a bf16/fp16 param is fp32
    (it was made while the param stepped as fp32): a load keeps it so."""
    if group.get("low_precision") is not None and p.dtype in LP.LOW_DTYPES:
        return torch.float32
    return None


@torch.no_grad()
def widen(opt) -> list:
    """Swaps in the fp32 copies; returns what ``narrow`` puts back."""
    out = []
    for group in opt.param_groups:
        if group.get("low_precision") is None:
            continue
        for p in group["params"]:
            if p.grad is None or p.dtype not in LP.LOW_DTYPES:
                continue
            work = p.detach().float()
            comp = opt.state[p].get(LP.COMP)
            if comp is not None:
                work.add_(comp)
            out.append((p, p.data, p.grad, group))
            p.data, p.grad = work, p.grad.float()
    return out


@torch.no_grad()
def narrow(opt, widened: list, store: bool) -> None:
    """Puts each param's own storage and grad back, stored from its fp32 result (``store``
    False: the step failed, the param keeps its value)."""
    for i, (p, low, grad, group) in enumerate(widened):
        work = p.data
        p.data, p.grad = low, grad
        if store:
            # made after the wrapped step: before it, a non-empty state would tell torch's
            # optimizers that theirs is initialized
            state = opt.state[p]
            LP.init_state(state, p, group)
            LP.store_(
                [low], [work], group["low_precision"], [[state[LP.state_keys(group)[0]]]], salt=i
            )
