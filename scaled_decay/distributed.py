"""DTensor (FSDP2) support: the rules see global shapes, the update runs on local shards.

Under ``torch.distributed.fsdp.fully_shard`` parameters, gradients and the optimizer state
created with ``zeros_like(p)`` are DTensors. Their ``.shape`` and ``.numel()`` are global,
so the scaling rules (fan-in, ParamCount's N) and ``decay_report()`` already see the full
tensors. The update itself is elementwise, so it runs on each rank's shard: the optimizers
hand the math plain ``to_local()`` views (in-place writes land in the DTensor's storage),
which skips DTensor dispatch on every foreach op and lets kernels that only take plain
tensors run. State that the math creates from those views (SGD's first momentum buffer) is
wrapped back as a DTensor laid out like its parameter, so distributed checkpoints
(``torch.distributed.checkpoint.state_dict``) see sharded state as they expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor
    from typing_extensions import TypeIs

__all__ = ["is_dtensor", "like_param", "local_lists", "local_view"]


def is_dtensor(t: object) -> TypeIs[DTensor]:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (checked without importing
    torch.distributed, which some builds lack)."""
    return type(t).__name__ == "DTensor" and hasattr(t, "to_local")


def local_view(t: torch.Tensor | None) -> torch.Tensor | None:
    """This rank's shard of a DTensor as a plain tensor view; anything else unchanged."""
    return t.to_local() if is_dtensor(t) else t


def local_lists(lists: Sequence[Sequence]) -> list[list]:
    """Each list of tensors with DTensors replaced by their local views (None kept).

    ``lists[0]`` holds the parameters and the others their grads and state: those of a
    plain parameter are plain (autograd and the optimizers make them like it), so when no
    parameter is a DTensor the lists pass through unchanged, without a per-tensor check of
    every list on the hot path."""
    if not any(is_dtensor(t) for t in lists[0]):
        return [list(lst) for lst in lists]
    return [[local_view(t) for t in lst] for lst in lists]


def like_param(
    local: torch.Tensor, p: torch.Tensor, current: torch.Tensor | None = None
) -> torch.Tensor:
    """``local`` (a shard-shaped tensor the math made or updated) as state laid out like ``p``.

    Plain parameters: ``local`` itself. DTensor parameters: ``current`` (the DTensor state
    ``local`` was viewed from) when ``local`` still shares its storage, so updated-in-place
    state keeps its object; otherwise ``local`` wrapped as a DTensor sharded like ``p``.
    """
    if not is_dtensor(p) or is_dtensor(local):
        return local
    if is_dtensor(current) and current.to_local().data_ptr() == local.data_ptr():
        return current
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        local, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
    )
