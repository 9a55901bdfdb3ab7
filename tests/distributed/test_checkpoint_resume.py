"""Crash and resume: a run SIGKILLed mid-way and restarted ends bit-identical (CPU).

tests/distributed/workers/train_resume.py checkpoints model, sd.AdamW (independent decay, FanIn x
StepsPerEpoch rules, param groups), a OneCycle LR schedule and the RNG (dropout) every 5
of 40 steps, atomically. Each test compares the final parameters to an uninterrupted run
with ``torch.equal``.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKERS = Path(__file__).resolve().parent / "workers"
REPO = WORKERS.parents[2]
TIMEOUT = 90


def _env():
    return dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), str(WORKERS)])
    )


def _train(run_dir: Path, *args, expect_rc=0) -> str:
    run_dir.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(WORKERS / "train_resume.py"), str(run_dir), *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == expect_rc, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def _final(run_dir: Path) -> dict:
    return torch.load(run_dir / "final.pt", weights_only=True)


def _assert_bit_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    out = _train(run_dir)
    assert "resumed" not in out and "step 40" in out
    return _final(run_dir)


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(WORKERS / "train_resume.py"), str(run_dir), "--step-delay", "0.1"],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:  # kill between two checkpoints, from outside
            if line.strip() == "step 13":
                os.kill(proc.pid, signal.SIGKILL)
                break
        rc = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert rc == -signal.SIGKILL
    assert not (run_dir / "final.pt").exists()
    out = _train(run_dir)
    resumed = int(out.split("resumed from step ")[1].split()[0])
    assert resumed in (10, 15)  # the last checkpoint before the kill (13) or one just after
    _assert_bit_identical(_final(run_dir), uninterrupted)


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    _train(run_dir, "--crash-in-save-at", "15", expect_rc=-signal.SIGKILL)
    torn = list(run_dir.glob("ckpt.pt.tmp-*"))
    assert len(torn) == 1  # the half-written file is a temporary, never ckpt.pt itself
    assert torch.load(run_dir / "ckpt.pt", weights_only=True)["step"] == 10
    out = _train(run_dir)
    assert "resumed from step 10" in out
    assert not list(run_dir.glob("ckpt.pt.tmp-*"))  # the restart cleaned up
    _assert_bit_identical(_final(run_dir), uninterrupted)


def test_a_resume_that_loses_optimizer_state_differs(tmp_path, uninterrupted):
    """The control: the comparison is sharp enough to see a resume that loses state."""
    run_dir = tmp_path / "run"
    _train(run_dir, "--crash-in-save-at", "20", expect_rc=-signal.SIGKILL)
    state = torch.load(run_dir / "ckpt.pt", weights_only=True)
    state["optim"]["state"] = {}  # a resume that forgot the optimizer's moments
    torch.save(state, run_dir / "ckpt.pt")
    _train(run_dir)
    final = _final(run_dir)
    assert any(not torch.equal(final[k], uninterrupted[k]) for k in final)
