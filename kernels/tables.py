"""Device-side tables for one multi-tensor launch, cached across steps.

A launch over n tensors reads, per tensor, the addresses of its parameter, gradient and state
(``layout``: an int64 ``[rows, n]`` table, plus a row of element counts) and its decay value
and flags (``values``: fp64 bits and int64 flags, ``[2, n]``). A work list maps each program
to (tensor, chunk): one program per ``block`` elements, so one launch covers any mix of sizes.

Both tables are cached by their full content: an optimizer step whose tensors did not move
(the usual case) finds them and copies nothing to the device. Storage that moves (new grads,
``load_state_dict``, ``p.data = ...``) or new decay values (an lr schedule in a decoupled
mode) builds the affected table once. Building needs a host-to-device copy, which a CUDA graph
capture cannot hold: during capture a miss raises instead (run one step with the same tensors
and values before capturing, as with torch's own capturable optimizers).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple, Sequence, Tuple

import torch

_MAX_ENTRIES = 1024  # per cache: room for one entry per (param group, dtype) of large models;
#                     an entry is a few small tensors (kilobytes)


class Layout(NamedTuple):
    table: torch.Tensor   # int64 [rows + 1, n]: addresses per row, then element counts
    work: torch.Tensor    # int32 [2, programs]: tensor index, chunk index within the tensor
    n_tensors: int
    n_programs: int
    aligned: bool         # every address a multiple of 16 bytes: vector loads are safe


class _LRU:
    def __init__(self):
        self.entries: "OrderedDict[tuple, object]" = OrderedDict()

    def get(self, key):
        hit = self.entries.get(key)
        if hit is not None:
            self.entries.move_to_end(key)
        return hit

    def put(self, key, value) -> None:
        self.entries[key] = value
        if len(self.entries) > _MAX_ENTRIES:
            self.entries.popitem(last=False)


_layouts = _LRU()
_values = _LRU()
_scalars = _LRU()
_builds = {"layout": 0, "values": 0, "scalars": 0}  # how often each table was (re)built


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _refuse_during_capture(device: torch.device, what: str) -> None:
    if _capturing(device):
        raise RuntimeError(
            f"scaled_decay Triton kernels: the {what} table must be rebuilt (tensors moved or "
            f"values changed), which needs a host-to-device copy that a CUDA graph capture "
            f"cannot record. Run one step with the same tensors and hyperparameters before "
            f"capturing, and keep them fixed while the graph is in use.")


def _to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    return host if device.type == "cpu" else host.to(device, non_blocking=True)


def layout(rows: Sequence[Sequence[int]], numels: Sequence[int], block: int,
           device: torch.device) -> Layout:
    """The address table and work list for tensors whose addresses are ``rows[r][i]``."""
    key = (device, block, tuple(numels), *map(tuple, rows))
    hit = _layouts.get(key)
    if hit is not None:
        return hit
    _refuse_during_capture(device, "address")
    n = len(numels)
    table = torch.tensor([list(r) for r in rows] + [list(numels)], dtype=torch.int64)
    chunks = torch.tensor([(k + block - 1) // block for k in numels], dtype=torch.int64)
    tensor_idx = torch.repeat_interleave(torch.arange(n, dtype=torch.int64), chunks)
    first = torch.cumsum(chunks, 0) - chunks  # first program of each tensor
    chunk_idx = torch.arange(len(tensor_idx), dtype=torch.int64) - first[tensor_idx]
    work = torch.stack([tensor_idx, chunk_idx]).to(torch.int32)
    aligned = all(a % 16 == 0 for r in rows for a in r)
    entry = Layout(_to_device(table, device), _to_device(work, device), n, work.shape[1], aligned)
    _layouts.put(key, entry)
    _builds["layout"] += 1
    return entry


def values(decay: Sequence[float], flags: Sequence[int], device: torch.device) -> torch.Tensor:
    """int64 ``[2, n]``: each tensor's decay value (fp64 bits: lam for "l2", else c) and flag."""
    key = (device, tuple(float(d) for d in decay), tuple(int(f) for f in flags))
    hit = _values.get(key)
    if hit is not None:
        return hit
    _refuse_during_capture(device, "decay value")
    host = torch.empty(2, len(decay), dtype=torch.int64)
    host[0] = torch.tensor(key[1], dtype=torch.float64).view(torch.int64)
    host[1] = torch.tensor(key[2], dtype=torch.int64)
    entry = _to_device(host, device)
    _values.put(key, entry)
    _builds["values"] += 1
    return entry


def scalars(numbers: Tuple[float, ...], device: torch.device) -> torch.Tensor:
    """A small fp64 tensor of hyperparameters that the kernels need in double precision."""
    key = (device, tuple(float(x) for x in numbers))
    hit = _scalars.get(key)
    if hit is not None:
        return hit
    _refuse_during_capture(device, "hyperparameter")
    entry = _to_device(torch.tensor(key[1], dtype=torch.float64), device)
    _scalars.put(key, entry)
    _builds["scalars"] += 1
    return entry


def on_device(t, device: torch.device):
    """``grad_scale``/``found_inf``/lr tensors on the launch's device (None passes)."""
    if t is None or t.device == device:
        return t
    return t.to(device, non_blocking=True)


def build_counts() -> dict:
    """How many times each kind of table was built (tests check that steady steps build none)."""
    return dict(_builds)
