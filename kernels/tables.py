"""Device-side tables for one multi-tensor launch, cached across steps.

A launch over n tensors reads, per tensor, the addresses of its parameter, gradient and state
(``layout``: an int64 ``[rows, n]`` table, plus a row of element counts) and its decay value
and flags (``values``: fp64 bits and int64 flags, ``[2, n]``). A work list maps each program
to (tensor, chunk): one program per ``block`` elements, so one launch covers any mix of sizes.

A :class:`Tables` caches them by their full content, and whoever launches owns one: an
optimizer's step plan keeps its own for its whole life (a CUDA graph captured from it can
rely on its tables staying alive), the per-tensor-list launchers share a bounded one. A step
whose tensors did not move (the usual case) finds its tables and copies nothing to the
device; storage that moves (new grads, ``load_state_dict``, ``p.data = ...``) builds the
address table once. The values hold s(p) (or the caller's per-tensor amounts), never the lr,
so an lr schedule builds nothing. Building needs a host-to-device copy, which a CUDA graph
capture cannot hold: during capture a miss raises instead (run one step with the same
tensors and values before capturing, as with torch's own capturable optimizers).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch

_MAX_ENTRIES = 1024  # per cache: room for one entry per (param group, dtype) of large models;
#                     an entry is a few small tensors (kilobytes)


class Layout(NamedTuple):
    table: torch.Tensor  # int64 [rows + 1, n]: addresses per row, then element counts
    work: torch.Tensor  # int32 [2, programs]: tensor index, chunk index within the tensor
    n_tensors: int
    n_programs: int
    aligned: bool  # every address a multiple of 16 bytes: vector loads are safe


class Tables:
    """Address, value and scalar tables by content, at most ``max_entries`` of each kind
    (least recently used dropped first)."""

    def __init__(self, max_entries: int = _MAX_ENTRIES):
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple, object] = OrderedDict()

    def _get(self, key):
        hit = self.entries.get(key)
        if hit is not None:
            self.entries.move_to_end(key)
        return hit

    def _put(self, key, value) -> None:
        self.entries[key] = value
        kinds = [k for k in self.entries if k[0] == key[0]]
        if len(kinds) > self.max_entries:
            del self.entries[kinds[0]]

    def layout(
        self, rows: Sequence[Sequence[int]], numels: Sequence[int], block: int, device: torch.device
    ) -> Layout:
        """The address table and work list for tensors whose addresses are ``rows[r][i]``."""
        key = ("layout", device, block, tuple(numels), *map(tuple, rows))
        hit = self._get(key)
        if hit is None:
            hit = _build_layout(rows, numels, block, device)
            self._put(key, hit)
        return hit

    def values(
        self, values: Sequence[float], flags: Sequence[int], device: torch.device
    ) -> torch.Tensor:
        """int64 ``[2, n]``: each tensor's value (fp64 bits) and flag."""
        key = ("values", device, tuple(float(d) for d in values), tuple(int(f) for f in flags))
        hit = self._get(key)
        if hit is None:
            _refuse_during_capture(device, "decay value")
            host = torch.empty(2, len(values), dtype=torch.int64)
            host[0] = torch.tensor(key[2], dtype=torch.float64).view(torch.int64)
            host[1] = torch.tensor(key[3], dtype=torch.int64)
            hit = _to_device(host, device)
            self._put(key, hit)
            _builds["values"] += 1
        return hit

    def scalars(self, numbers: tuple[float, ...], device: torch.device) -> torch.Tensor:
        """A small fp64 tensor of hyperparameters the kernels need in double precision."""
        key = ("scalars", device, tuple(float(x) for x in numbers))
        hit = self._get(key)
        if hit is None:
            _refuse_during_capture(device, "hyperparameter")
            hit = _to_device(torch.tensor(key[2], dtype=torch.float64), device)
            self._put(key, hit)
            _builds["scalars"] += 1
        return hit


shared = Tables()  # the per-tensor-list launchers' (adam_triton, sgd_triton)
_builds = {"layout": 0, "values": 0, "scalars": 0}  # how often each table was (re)built


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _refuse_during_capture(device: torch.device, what: str) -> None:
    if _capturing(device):
        raise RuntimeError(
            f"scaled_decay Triton kernels: the {what} table must be rebuilt (tensors moved or "
            f"values changed), which needs a host-to-device copy that a CUDA graph capture "
            f"cannot record. Run one step with the same tensors and hyperparameters before "
            f"capturing, and keep them fixed while the graph is in use."
        )


def _to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    return host if device.type == "cpu" else host.to(device, non_blocking=True)


def _build_layout(rows, numels, block: int, device: torch.device) -> Layout:
    _refuse_during_capture(device, "address")
    n = len(numels)
    table = torch.tensor([list(r) for r in rows] + [list(numels)], dtype=torch.int64)
    chunks = torch.tensor([(k + block - 1) // block for k in numels], dtype=torch.int64)
    tensor_idx = torch.repeat_interleave(torch.arange(n, dtype=torch.int64), chunks)
    first = torch.cumsum(chunks, 0) - chunks  # first program of each tensor
    chunk_idx = torch.arange(len(tensor_idx), dtype=torch.int64) - first[tensor_idx]
    work = torch.stack([tensor_idx, chunk_idx]).to(torch.int32)
    aligned = all(a % 16 == 0 for r in rows for a in r)
    _builds["layout"] += 1
    return Layout(_to_device(table, device), _to_device(work, device), n, work.shape[1], aligned)


def on_device(t, device: torch.device):
    """``grad_scale``/``found_inf``/lr tensors on the launch's device (None passes)."""
    if t is None or t.device == device:
        return t
    return t.to(device, non_blocking=True)


def build_counts() -> dict:
    """How many times each kind of table was built (tests check that steady steps build none)."""
    return dict(_builds)
