"""The one dispatcher: a group's step plan, run on the backends it chose.

``step_group`` is the whole way through a step for one param group, for every optimizer of
the package: find (or build) the group's step plan, read this step's hyperparameters and
decay from the group, and hand each batch of the plan to its backend - the update module's
foreach math ("loop", "foreach"), its torch fused op ("torch_fused") or its Triton launcher
("triton"). No other module tests a backend's name.

GradScaler: the fused backends take ``grad_scale``/``found_inf`` on the device; for the
others, ``found_inf`` is read on the host once per step (as GradScaler does for optimizers
that cannot skip on the device) and the grads are unscaled in place.

Cautious decay (group key ``cautious_decay``): each batch's ``Decay`` carries a list the math
(or the kernel) fills with its counts of decayed coordinates, device tensors kept as
``opt._plan.decayed[gi]`` for ``decay_report()``: no host read per step.
"""

from __future__ import annotations

import operator
from itertools import repeat

import torch

from . import compiling as C
from .group_keys import peak_lr
from .modes import PEAK_LR_MODES
from .step_plan import GRAD, Batch, GroupPlan
from .updates import low_precision as LP
from .updates.decay_ops import Decay, found_inf_set, unscale_grads_

_MAX_PLANS = 8  # per group: plans for other keys (GradScaler on/off, params without grads)

# decay_mode -> (lr power, divides by eta0) of the Triton kernels' lr factor
_KERNEL_FACTOR = {"decoupled": (1, False), "independent": (1, True), "corrected": (2, True)}


def plan_key(update, group: dict, capturable: bool, amp: tuple, grads_all: list) -> tuple:
    """What selects a plan besides its tensors: the group's structural keys, whether it
    decays at all (torch's fused ops take other code paths then), GradScaler, capturable,
    which params have grads, low precision, and cautious decay (no torch fused op)."""
    wd = group["weight_decay"]
    decays = bool(wd != 0) if not isinstance(wd, torch.Tensor) else True
    selection = None
    if any(map(operator.is_, grads_all, repeat(None))):
        selection = bytes(map(operator.is_not, grads_all, repeat(None)))
    return (
        update.structure(group),
        group["backend"],
        group["decay_mode"] == "l2",
        decays,
        capturable,
        amp[0] is not None,
        amp[1] is not None,
        selection,
        group.get("low_precision"),
        group.get("state_dtype"),
        group.get("cautious_decay", False),
    )


def group_plan(opt, update, gi: int, group: dict, scales, grads_all, capturable, amp):
    """(plan, this step's grads of the params it updates): the cached plan while it holds,
    else a new one (kept for the next steps)."""
    plans = opt._plan.step_plans.setdefault(gi, {})
    key = plan_key(update, group, capturable, amp, grads_all)
    plan = plans.get(key)
    grads = plan.grads_if_holds(group, grads_all, opt.state) if plan is not None else None
    if grads is None:
        plan = GroupPlan(opt, update, group, scales, grads_all, capturable, amp)
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        plans[key] = plan
        grads = [grads_all[i] for i in plan.positions]
    return plan, grads


def step_group(
    opt, update, gi: int, group: dict, scales, *, capturable: bool, grad_scale=None, found_inf=None
) -> None:
    """One step of ``update`` ("adam" or "sgd" module) for the group's params with grads."""
    compiling = C.is_compiling()
    if compiling:  # (Dynamo traces comprehensions, not attrgetter/map)
        grads_all = [p.grad for p in group["params"]]
        if all(g is None for g in grads_all):
            return
    else:
        grads_all = list(map(GRAD, group["params"]))
        if all(map(operator.is_, grads_all, repeat(None))):
            return
    tensor_math = capturable or compiling
    lr = group["lr"] if tensor_math else C.scalar(group["lr"])
    eta0 = peak_lr(group) if group["decay_mode"] in PEAK_LR_MODES else 1.0
    eta0 = eta0 if tensor_math else C.scalar(eta0)
    amp = (grad_scale, found_inf)
    if compiling:  # Dynamo traces a fresh plan: no cache to guard on
        plan = GroupPlan(opt, update, group, scales, grads_all, capturable, amp)
        grads = [grads_all[i] for i in plan.positions]
    else:
        plan, grads = group_plan(opt, update, gi, group, scales, grads_all, capturable, amp)
    hp = update.hparams(group, lr)
    wd = group["weight_decay"]
    skip = None  # found_inf read on the host, once, for the unfused batches
    cautious = group.get("cautious_decay", False)
    record: list | None = [] if cautious else None
    opt._plan.decayed[gi] = record
    for batch in plan.batches:
        fused = batch.backend in ("torch_fused", "triton")
        if not fused:
            if skip is None:
                skip = found_inf_set(found_inf)
            if skip:
                continue
        bgrads = plan.batch_grads(batch, grads)
        if not fused:
            unscale_grads_(bgrads, grad_scale)
        decay = _decay(group, batch, wd, lr, eta0)
        if cautious and decay is not None:  # counts of decayed coordinates, for the report
            decay = decay._replace(cautious=True, decayed=[None] * len(batch.params))
            record.append((batch.group_positions, decay.decayed))  # type: ignore[union-attr]
        run_batch(update, batch, bgrads, decay, hp, tensor_math, grad_scale, found_inf)
        if batch.new_buffers:
            plan.store_new_buffers(opt, batch, update.state_keys(group)[0])


def _decay(group: dict, batch: Batch, wd, lr, eta0) -> Decay | None:
    if not isinstance(wd, torch.Tensor) and wd == 0:
        return None
    return Decay(
        group["decay_mode"], tuple((wd * s, idx) for s, idx in batch.scale_groups), lr, eta0, wd
    )


def run_batch(update, batch: Batch, grads, decay, hp, tensor_math, grad_scale, found_inf) -> None:
    """One backend call (a loop of them for "loop") on a batch of the plan."""
    n_own = batch.n_update_states
    lists = [batch.params, grads, *update.state_lists(batch.states[:n_own], hp, len(batch.params))]
    if batch.wide is not None:  # storage narrower (or wider) than the math: loop/foreach only
        rounding, state_dtype = batch.wide
        lp_states = batch.states[n_own:]
        if batch.backend == "loop":
            for i, one_decay in enumerate(_per_tensor(decay, len(batch.params))):
                one = [lst[i : i + 1] if lst else lst for lst in lists]
                LP.wide_step(
                    update.foreach,
                    one,
                    [lst[i : i + 1] for lst in lp_states],
                    rounding=rounding,
                    state_dtype=state_dtype,
                    salt=i,
                    decay=one_decay,
                    **hp,
                    tensor_math=tensor_math,
                )
                _write_back(lists, one, i)
                _write_count(decay, one_decay, i)
        else:
            LP.wide_step(
                update.foreach,
                lists,
                lp_states,
                rounding=rounding,
                state_dtype=state_dtype,
                decay=decay,
                **hp,
                tensor_math=tensor_math,
            )
    elif batch.backend == "triton":
        _triton(update, batch, lists, batch.states[n_own:], decay, hp, grad_scale, found_inf)
    elif batch.backend == "torch_fused":
        update.torch_fused(
            *lists, decay=decay, **hp, first=batch.first, grad_scale=grad_scale, found_inf=found_inf
        )
    elif batch.backend == "loop":
        for i, one_decay in enumerate(_per_tensor(decay, len(batch.params))):
            one = [lst[i : i + 1] if lst else lst for lst in lists]
            update.foreach(*one, decay=one_decay, **hp, tensor_math=tensor_math)
            _write_back(lists, one, i)
            _write_count(decay, one_decay, i)
    else:
        update.foreach(*lists, decay=decay, **hp, tensor_math=tensor_math)


def _write_back(lists: list, one: list, i: int) -> None:
    """State the math made for tensor ``i`` (SGD's first momentum buffer), into the lists."""
    for lst, new in zip(lists, one):
        if lst:
            lst[i] = new[0]


def _write_count(decay: Decay | None, one: Decay | None, i: int) -> None:
    """Tensor ``i``'s count of decayed coordinates (cautious decay), into the batch's list."""
    if decay is not None and decay.decayed is not None:
        decay.decayed[i] = one.decayed[0]  # type: ignore[union-attr,index]  # one: decay cut


def _per_tensor(decay: Decay | None, n: int) -> list:
    """Each tensor's own decay (the loop backend: one tensor a call)."""
    if decay is None:
        return [None] * n
    lams = [0.0] * n
    for lam, idx in decay.groups:
        for i in range(n) if idx is None else idx:
            lams[i] = lam
    counts = decay.decayed is not None
    return [
        decay._replace(groups=((lam, None),), decayed=[None] if counts else None) for lam in lams
    ]


def _triton(update, batch: Batch, lists, lp_states, decay, hp, grad_scale, found_inf) -> None:
    """The Triton launcher with the plan's own tables. The value table (s(p), first-step
    flags) and the addresses of params and state are taken once per plan (the plan holds
    while those tensors and their addresses do); each step reads only the grads' addresses
    and builds the address table again when one moved. Low-precision params are stored by
    the kernel's ``rounding`` (their compensations or counters are table rows)."""
    adam = update.name == "adam"
    rounding = batch.rounding
    if rounding == 2:  # stochastic: this step's counters (one op for the batch)
        torch._foreach_add_(lp_states[0], 1)
    comps, counts = (
        (lp_states[0], []) if rounding == 1 else ([], lp_states[0]) if rounding == 2 else ([], [])
    )
    if adam:
        p, g, m, v, vmax, s = lists
    else:
        p, g, bufs = lists
        momentum = hp["momentum"] != 0
        if batch.first and momentum:  # (a first-step batch runs once: its plan is rebuilt)
            if found_inf is not None and found_inf_set(found_inf):
                return  # no buffer may start from this step's gradients
            found_inf = None
            _package(batch.device).sgd.new_buffers(p, bufs, hp["momentum"], batch.state_dtype)
        b = bufs if momentum else []
    if batch.triton is None:
        package = _package(batch.device)
        tables = package.tables.Tables(max_entries=4)
        flags = [1 if batch.first else 0] * len(p)
        values = tables.values(batch.scales, flags, batch.device)
        rows = (
            package.adam.adam_rows(p, g, m, v, vmax, s, comps, counts)
            if adam
            else package.sgd.sgd_rows(p, g, b, comps, counts)
        )
        layout = tables.layout(
            rows, list(map(torch.Tensor.numel, p)), package.launch.BLOCK, batch.device
        )
        batch.triton = [package, tables, values, rows, layout]
    package, tables, values, rows, layout = batch.triton
    grad_row = list(map(torch.Tensor.data_ptr, g))
    if grad_row != rows[1]:  # new grad storage (rows: P, G, ...)
        rows = [*rows[:1], grad_row, *rows[2:]]
        layout = tables.layout(
            rows, list(map(torch.Tensor.numel, p)), package.launch.BLOCK, batch.device
        )
        batch.triton[3:] = [rows, layout]
    kd = _kernel_decay(package.launch, decay, batch)
    counts = None
    if kd.cautious:  # one int32 count per tensor, zeroed (one op), then added to by the kernel
        if batch.counts is None:
            batch.counts = torch.zeros(len(p), dtype=torch.int32, device=batch.device)
        counts = batch.counts
        counts.zero_()
        decay.decayed[:] = [counts]  # (the report reads one tensor for the batch)
    if adam:
        package.adam.adam_launch(
            tables,
            p,
            g,
            m,
            v,
            vmax,
            s,
            values=values,
            kernel_decay=kd,
            layout=layout,
            grad_scale=grad_scale,
            found_inf=found_inf,
            rounding=rounding,
            decayed=counts,
            **hp,
        )
    else:
        package.sgd.sgd_launch(
            tables,
            p,
            g,
            b,
            values=values,
            kernel_decay=kd,
            layout=layout,
            grad_scale=grad_scale,
            found_inf=found_inf,
            rounding=rounding,
            decayed=counts,
            **hp,
        )


def _package(device):
    from .backends import triton_package

    return triton_package(device)


def _kernel_decay(launch, decay: Decay | None, batch: Batch):
    """The kernels' form of this step's decay: the table holds s(p); weight_decay and the
    mode's lr factor are launch arguments (an lr schedule rebuilds no table). A tensor eta0
    (a capturable step's peak lr) is read once, when the batch first launches: a read during
    CUDA graph capture would sync."""
    if decay is None:
        return launch.KernelDecay(launch.NO_DECAY)
    wd = float(decay.weight_decay)
    if decay.l2:
        return launch.KernelDecay(launch.L2, wd)
    lr_pow, div = _KERNEL_FACTOR[decay.mode]
    eta0 = decay.eta0
    if isinstance(eta0, torch.Tensor):
        if batch.eta0[0] is not eta0:
            batch.eta0 = (eta0, float(eta0))
        eta0 = batch.eta0[1]
    return launch.KernelDecay(launch.MULTIPLY, wd, lr_pow, div, float(eta0), decay.cautious)
