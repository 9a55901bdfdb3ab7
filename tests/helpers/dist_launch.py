"""Run a worker script (``tests/distributed/workers/``) as a small gloo job on this machine,
safely enough for CI; and the marks that select such tests (``-m distributed``) and skip them
where torch.distributed has no gloo backend.

Each rank is its own ``python`` process (no fork of the pytest process). Rendezvous is a
TCP store on 127.0.0.1 at a port the OS picked free just before; gloo is held to the
loopback interface. A deadline bounds the whole job: on timeout or on any rank failing,
every rank still running is killed, so no process outlives the test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKERS = REPO / "tests" / "distributed" / "workers"

dist = pytest.importorskip("torch.distributed")
DIST_MARKS = [
    pytest.mark.distributed,
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(),
        reason="needs torch.distributed with gloo",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(rank: int, world: int, port: int) -> dict:
    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        GLOO_SOCKET_IFNAME="lo",
        OMP_NUM_THREADS="1",
        PYTHONHASHSEED="0",
        # an abort from C++ then prints every thread's Python stack into the log
        PYTHONFAULTHANDLER="1",
    )
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(WORKERS)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    return env


def run_job(
    script: str, args: Sequence[str], tmp_path: Path, world: int = 2, timeout: float = 150.0
) -> list[str]:
    """Run ``tests/distributed/workers/<script>`` on ``world`` ranks; returns each rank's output.

    Raises AssertionError with the ranks' output tails if any rank fails or the deadline
    passes (all ranks are killed then). Two failures that are not the job's are retried, up
    to ``RETRIES`` times: the free port taken by another process between our probe and rank
    0's bind, and a rank aborted by the C++ runtime with nothing raised ("terminate called
    without an active exception", from torch's gloo threads: about once in 50 FSDP2/DCP jobs
    on a loaded 2-core machine, and twice in a row in one CI run). Any other failure, or one
    of these ``RETRIES + 1`` times, fails the test.
    """
    for attempt in range(RETRIES + 1):
        try:
            return _run_once(script, args, tmp_path, world, timeout)
        except AssertionError as e:
            if attempt == RETRIES or not any(m in str(e) for m in RETRIED_FAILURES):
                raise


RETRIES = 2
RETRIED_FAILURES = ("Address already in use", "terminate called without an active exception")


def _run_once(script, args, tmp_path, world, timeout) -> list[str]:
    (tmp_path / "results.json").unlink(missing_ok=True)  # never read a failed try's results
    port = free_port()
    logs = [tmp_path / f"{Path(script).stem}.rank{r}.log" for r in range(world)]
    procs = []
    for rank in range(world):
        with open(logs[rank], "w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(WORKERS / script), *args],
                    cwd=str(tmp_path),
                    env=worker_env(rank, world, port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + timeout
    failed = None
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                failed = f"timed out after {timeout:.0f}s"
                break
            if any(p.poll() not in (None, 0) for p in procs):
                failed = "a rank failed"
                break
            time.sleep(0.05)
    finally:
        for p in procs:  # only our own children, by handle
            if p.poll() is None:
                p.kill()
            p.wait()
    out = [log.read_text() for log in logs]
    if failed is None and any(p.returncode != 0 for p in procs):
        failed = "a rank failed"
    if failed:
        tails = "\n".join(
            f"--- rank {r} (rc {p.returncode}) ---\n{o[-3000:]}"
            for r, (p, o) in enumerate(zip(procs, out))
        )
        written = (tmp_path / "results.json").exists()  # rank 0 writes it after the last barrier
        raise AssertionError(
            f"{script} {' '.join(args)}: {failed} (results.json written: {written})\n{tails}"
        )
    return out
