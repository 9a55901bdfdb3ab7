"""Run a study: schedule the training runs on worker processes, grow the grids, resume.

Each chain (optimizer x parametrization along one axis) walks its axis points in order,
because a point's grids are centred on where the previous points put lambda*; chains run
side by side. The queue serves the chains' earliest axis points first and, among them, the
most expensive run first: so the two cores stay busy, and a chain of cheap runs (the token
arm's data axis) is not starved behind another chain's expensive widest point.
"""

from __future__ import annotations

import heapq
import math
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context

from .cache import RunCache
from .data import load_pool
from .models import Arm, decay_signature
from .outcomes import SweepState, point_outcome, summarize_chain
from .settings import StudySettings
from .sweeps import Chain, lattice_grid, plan_sweeps
from .train import RunSpec, steps_per_epoch, train_run

__all__ = ["build_chains", "run_study"]


def _width_arms(s: StudySettings, optimizer: str, parametrization: str) -> tuple[Arm, ...]:
    """The arms of one width chain: every rule in every decay mode."""
    return tuple(Arm(optimizer, parametrization, r, m) for r in s.rules for m in s.modes)


def build_chains(s: StudySettings) -> list[Chain]:
    chains = []
    if "width" in s.axes:
        n_trains = tuple(s.n_train_at_width(w) for w in s.widths)
        chains += [
            Chain(
                "width",
                o,
                p,
                tuple(s.widths),
                _width_arms(s, o, p),
                s.data_width,
                s.n_train,
                n_trains,
            )
            for o in s.optimizers
            for p in s.parametrizations
        ]
    if "data" in s.axes:  # steps-per-epoch rules concern data, not width: SP only
        chains += [
            Chain(
                "data",
                o,
                "sp",
                tuple(s.data_sizes),
                tuple(Arm(o, "sp", r, m) for r in s.data_rules for m in s.modes),
                s.data_width,
                s.n_train,
            )
            for o in s.optimizers
        ]
    return chains


def _worker_init():
    import torch

    torch.set_num_threads(1)  # one core per worker process: two workers fill two cores


def _worker_run(spec_dict: dict, cache_dir: str) -> dict:
    spec = RunSpec.from_dict(spec_dict)
    result = train_run(spec, cache_dir)
    RunCache(cache_dir).put(spec, result)  # written here, so a killed parent loses nothing
    return result


class _Study:
    def __init__(self, s: StudySettings, cache: RunCache, progress):
        self.s, self.cache, self.progress = s, cache, progress
        self.results: dict[str, dict] = {}
        self.specs: dict[str, RunSpec] = {}
        self.queue: list = []  # heap of (-cost, key)
        self.queued = set()
        self.chains = build_chains(s)
        self.position = {c: 0 for c in self.chains}
        self.active: dict[Chain, list[SweepState]] = {}
        self.outcomes: dict[Chain, list[dict]] = {c: [] for c in self.chains}
        self.trained = self.cached = 0

    # ---- specs and results ---------------------------------------------------------------
    def spec(self, chain: Chain, value: int, arm: Arm, lam: float, seed: int) -> RunSpec:
        return RunSpec(
            dataset=self.s.dataset,
            n_train=chain.n_train_at(value),
            width=chain.width_at(value),
            base_width=self.s.base_width,
            arm=arm,
            weight_decay=float(lam),
            seed=seed,
            epochs=self.s.epochs,
            batch_size=self.s.batch_size,
            lr=float(self.s.lr[chain.optimizer]),
            data_seed=self.s.data_seed,
            pool_needed=self.s.needed_pool(),
            arch=self.s.arch,
        )

    def need(self, spec: RunSpec, rank: int = 0) -> None:
        """Queue ``spec`` unless it is known or cached; ``rank``: its axis point's index in
        its chain (lower ranks are served first)."""
        key = spec.key()
        if key in self.results or key in self.queued:
            return
        self.specs[key] = spec
        hit = self.cache.get(spec)
        if hit is not None:
            self.results[key] = hit
            self.cached += 1
            self._tick(spec)
            return
        self.queued.add(key)
        heapq.heappush(self.queue, (rank, -spec.cost(), key))

    def record(self, key: str, result: dict) -> None:
        self.queued.discard(key)
        self.results[key] = result
        self.trained += 1
        self._tick(self.specs[key])

    def _tick(self, spec: RunSpec) -> None:
        if self.progress is not None:
            self.progress.done(spec.cost(), self.trained, self.cached, len(self.queued))

    # ---- the chains --------------------------------------------------------------------------
    def advance(self) -> None:
        """Start, grow and close sweeps until nothing changes without new results."""
        changed = True
        while changed:
            changed = False
            for chain in self.chains:
                if self.position[chain] >= len(chain.values):
                    continue
                if chain not in self.active:
                    self.active[chain] = self.open_point(chain)
                    changed = True
                sweeps = self.active[chain]
                value = chain.values[self.position[chain]]
                zero = [
                    self.results.get(self.zero_spec(chain, value, k).key())
                    for k in range(self.s.seeds)
                ]
                # Decide on a sweep only once the point's lambda = 0 runs are in too, so the
                # decisions depend on the results alone, never on the order runs finish in
                # (a resumed study then grows exactly the grids a fresh one would).
                for sw in sweeps:
                    if (
                        not sw.done
                        and all(z is not None for z in zero)
                        and sw.complete(self.results)
                    ):
                        for lam, k in sw.evaluate(self.results, zero):
                            if self.progress is not None:  # beyond the initial plan
                                self.progress.grow(sw.spec_for(lam, k).cost())
                            self.need(sw.spec_for(lam, k), self.position[chain])
                        changed = True
                if all(sw.done for sw in sweeps) and all(z is not None for z in zero):
                    self.outcomes[chain].append(
                        point_outcome(chain, value, sweeps, zero, self.results)
                    )
                    del self.active[chain]
                    self.position[chain] += 1
                    changed = True

    def zero_spec(self, chain: Chain, value: int, seed: int) -> RunSpec:
        return self.spec(
            chain,
            value,
            Arm(chain.optimizer, chain.parametrization, "none", "decoupled"),
            0.0,
            seed,
        )

    def open_point(self, chain: Chain) -> list[SweepState]:
        value = chain.values[self.position[chain]]
        sweeps = []
        points = self.s.grid_points if self.outcomes[chain] else self.s.first_grid_points
        for plan in self.plan(chain, value):
            center = self.center(chain, value, plan.rep)
            sw = SweepState(
                plan,
                lattice_grid(center, points),
                self.s.max_extensions,
                lambda arm, lam, k, c=chain, v=value: self.spec(c, v, arm, lam, k),
                self.s.seeds,
                self.s.refine_half_span or None,
            )
            sweeps.append(sw)
            for lam in sw.lams:
                for k in range(self.s.seeds):
                    self.need(sw.spec_for(lam, k), self.position[chain])
        for k in range(self.s.seeds):
            self.need(self.zero_spec(chain, value, k), self.position[chain])
        return sweeps

    def plan(self, chain: Chain, value: int):
        return plan_sweeps(
            chain,
            value,
            net=self.s.net,
            base_width=self.s.base_width,
            lr=self.s.lr[chain.optimizer],
            epochs=self.s.epochs,
            batch_size=self.s.batch_size,
        )

    def center(self, chain: Chain, value: int, rep: Arm) -> float:
        """Where to centre a sweep, in its representative's lambda: the rep arm's lambda*
        extrapolated (log-log, from the last two points) or, at a chain's first point, the
        default decoupled lambda converted into the rep's units."""
        history = [
            (o["value"], o["arms"][rep.label]["center_lam"])
            for o in self.outcomes[chain]
            if o["arms"][rep.label]["center_lam"] is not None
        ]
        if history:
            (x1, l1) = history[-1]
            log_l = math.log10(l1)
            if len(history) >= 2:
                (x0, l0) = history[-2]
                slope = (math.log10(l1) - math.log10(l0)) / (math.log10(x1) - math.log10(x0))
                slope = max(-2.5, min(2.5, slope))
                log_l += slope * (math.log10(value) - math.log10(x1))
            return 10**log_l
        width, m = (
            chain.width_at(value),
            steps_per_epoch(chain.n_train_at(value), self.s.batch_size),
        )
        kw = dict(
            net=self.s.net,
            width=width,
            base_width=self.s.base_width,
            lr=self.s.lr[chain.optimizer],
            steps_per_epoch=m,
            epochs=self.s.epochs,
        )
        plain = decay_signature(
            Arm(chain.optimizer, chain.parametrization, "none", "decoupled"), **kw
        )[self.s.net.probe]
        mine = decay_signature(rep, **kw)[self.s.net.probe]
        return self.s.default_lam[chain.optimizer] * plain / mine

    def planned_cost(self) -> float:
        """Cost of every run the initial grids need, with each seed's refinement window
        (extensions add to it as they appear)."""
        total = 0.0
        fine = refine_new_points(self.s.refine_half_span)
        for chain in self.chains:
            for i, value in enumerate(chain.values):
                n_sweeps = len(self.plan(chain, value))
                points = (self.s.grid_points if i else self.s.first_grid_points) + fine
                probe = self.spec(chain, value, chain.arms[0], 1.0, 0)
                total += probe.cost() * self.s.seeds * (n_sweeps * points + 1)
        return total

    def finished(self) -> bool:
        return all(self.position[c] >= len(c.values) for c in self.chains)


def refine_new_points(half_span: float) -> int:
    """Runs a seed's refinement window adds to its coarse grid: its points less the coarse
    ones inside it (a window of +-1/2 decade holds 2 or 3 of them; 2 assumed)."""
    if not half_span:
        return 0
    from .refine import FINE_STEP
    from .sweeps import GRID_STEP

    return 2 * round(half_span / FINE_STEP) + 1 - int(2 * half_span / GRID_STEP)


def run_study(
    s: StudySettings, cache_dir: str, *, workers: int = 2, progress=None, train: bool = True
) -> dict:
    """Run (or resume) the study; returns the per-chain outcomes, summaries and all runs.

    ``progress``, if given, has ``plan(total_cost)`` (called once, with the cost of the
    initial grids), ``grow(cost)`` (a grid grew) and ``done(cost, trained, cached,
    queued)`` (a run finished or was found in the cache); costs are RunSpec.cost() units.

    ``train=False`` trains nothing: it reads what the cache already completes -- each chain
    up to its last finished axis point, chains with fewer than two left out -- and says so
    in ``"partial"`` (a study interrupted, or still running elsewhere, reported honestly).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    cache = RunCache(cache_dir)
    load_pool(s.dataset, s.data_seed, cache.directory, s.needed_pool())  # generate once
    st = _Study(s, cache, progress)
    if progress is not None:
        progress.plan(st.planned_cost())
    st.advance()
    if train and workers == 1:
        while st.queue:
            key = heapq.heappop(st.queue)[-1]
            st.record(key, _worker_run(st.specs[key].to_dict(), cache.directory))
            st.advance()
    elif train:
        _run_pool(st, workers, cache.directory)
    if train and not st.finished():
        raise RuntimeError("study stopped with chains unfinished; this is a bug")
    done = [c for c in st.chains if len(st.outcomes[c]) >= 2]
    study = {
        "settings": s.to_dict(),
        "chains": {
            c.name: {
                "axis": c.axis,
                "optimizer": c.optimizer,
                "parametrization": c.parametrization,
                "values": list(c.values[: len(st.outcomes[c])]),
                "points": st.outcomes[c],
                "summary": summarize_chain(c, st.outcomes[c]),
            }
            for c in done
        },
        "runs": [
            {"key": k, "spec": st.specs[k].to_dict(), "result": r} for k, r in st.results.items()
        ],
        "trained": st.trained,
        "cached": st.cached,
    }
    if not st.finished():
        study["partial"] = {
            c.name: f"{len(st.outcomes[c])} of {len(c.values)} axis points finished"
            for c in st.chains
        }
    return study


def _run_pool(st: _Study, workers: int, cache_dir: str) -> None:
    ctx = get_context("spawn")  # fresh interpreters: no forked torch thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
        inflight = {}
        try:
            while st.queue or inflight:
                while st.queue and len(inflight) < workers:
                    key = heapq.heappop(st.queue)[-1]
                    inflight[pool.submit(_worker_run, st.specs[key].to_dict(), cache_dir)] = key
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in done:
                    st.record(inflight.pop(fut), fut.result())
                st.advance()
        except BaseException:
            for fut in inflight:
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
