"""FSDP2, DDP and ZeroRedundancyOptimizer on 2 gloo ranks (CPU) vs the single-process run.

Each test launches one 2-process job (tests/distributed/workers/parity.py) that runs every case
in turn and writes results.json; the assertions here read it. The workers feed every rank
the same batch, so the data-parallel gradient equals the single-process one bit for bit and
the parameters after 20 steps (with an LR schedule, so the modes differ) must be *equal*:
a rule that used a local shard's shape or a rank's share of N would show up here.
"""

import json

import pytest

from tests.helpers.dist_launch import DIST_MARKS, run_job

pytestmark = DIST_MARKS


def _results(tmp_path, wrap):
    run_job("parity.py", [wrap], tmp_path, timeout=150)
    return json.loads((tmp_path / "results.json").read_text())


def _failures(results, check):
    return {name: r for name, r in results.items() if isinstance(r, dict) and not check(r)}


def test_fsdp2_matches_single_process_for_every_rule_and_mode(tmp_path):
    results = _results(tmp_path, "fsdp")
    assert len(results) >= 27  # 4 modes x (5 AdamW rules + SGD) + Adam amsgrad + loop cases
    # stochastic rounding draws by position in the (local) list: shards draw other bits than
    # the whole tensor, so that run agrees with the single process to a few bf16 ulps only
    sr = results.pop("AdamW/decoupled/fan_in/bf16/stochastic/param_groups")
    print("FSDP2 stochastic rounding, max |diff| to one process:", sr["max_diff"])
    assert 0 < sr["max_diff"] <= 0.25 and sr["state_is_dtensor"] and sr["report_equal"]
    assert not _failures(results, lambda r: r["max_diff"] == 0.0)
    # decay_report rows (shape, fan_in, scale, lam, factor) equal the unsharded ones ...
    assert not _failures(results, lambda r: r["report_equal"])
    # ... and show the global shapes (Embedding 16x8, fc1 12x8, fc2 5x12 split 3/2 per rank)
    shapes = results["AdamW/decoupled/fan_in/param_groups"]["report_shapes"]
    assert shapes[:3] == [[16, 8], [12, 8], [5, 12]]
    # the update ran on plain local shards, the state stayed sharded DTensors (for DCP),
    # and "auto" never hands DTensors to torch's fused kernels
    assert not _failures(results, lambda r: r["math_saw"] == ["Tensor"])
    assert not _failures(results, lambda r: r["state_is_dtensor"])
    assert not _failures(results, lambda r: r["auto_backend"] == "foreach")


def test_ddp_matches_single_process_for_every_rule_and_mode(tmp_path):
    results = _results(tmp_path, "ddp")
    assert len(results) >= 27
    assert not _failures(results, lambda r: r["max_diff"] == 0.0)
    assert not _failures(results, lambda r: r["report_equal"])


def test_zero_redundancy_optimizer_with_global_param_count(tmp_path):
    results = _results(tmp_path, "zero")
    control = results.pop("control: AdamW/decoupled/param_count(local N)")
    error = results.pop("zero_param_groups_error")
    assert len(results) == 5
    # ZeRO did partition: each rank's local optimizer holds fewer than the model's 7 tensors
    assert not _failures(results, lambda r: r["local_params"] < 7)
    assert not _failures(results, lambda r: r["max_diff"] == 0.0)
    # without total_count each rank counts only its share: the trajectories part (why the
    # option exists, and proof that this comparison can fail)
    assert control["max_diff"] > 1e-3
    # sd.param_groups' per-parameter lists cannot follow ZeRO's partition: a clear error
    assert "fan_ins" in error and "one entry per parameter" in error


def test_param_count_total_count_sets_n_and_round_trips():
    import scaled_decay as sd
    from scaled_decay.rules import TensorInfo, as_rules, rules_to_plain

    info = TensorInfo(shape=(3, 4), fan_in=4, total_count=12)
    assert sd.ParamCount(reference=10).scale(info) == pytest.approx(10 / 12)
    assert sd.ParamCount(reference=10, total_count=40).scale(info) == pytest.approx(10 / 40)
    rule = sd.ParamCount(2.0, 0.5, total_count=40)
    assert as_rules(rules_to_plain([rule])) == (rule,)  # state dicts keep it, as plain data
    for bad in (0, -3, 2.5, True, "40"):
        with pytest.raises(ValueError, match="total_count"):
            sd.ParamCount(total_count=bad)


def test_launcher_retries_only_a_runtime_abort_and_only_so_often(tmp_path):
    """A C++ abort with nothing raised is torch's, not the job's: it is retried, but a job
    that aborts every time still fails, after RETRIES + 1 tries; a plain failure is not
    retried at all."""
    from tests.helpers.dist_launch import RETRIES

    with pytest.raises(AssertionError, match=r"a rank failed \(results.json written: False\)"):
        run_job("hang.py", ["abort"], tmp_path, timeout=20)
    assert (tmp_path / "starts.txt").read_text().count("start") == RETRIES + 1
    (tmp_path / "starts.txt").unlink()
    with pytest.raises(AssertionError, match="failed on purpose"):
        run_job("hang.py", ["fail"], tmp_path, timeout=20)
    assert (tmp_path / "starts.txt").read_text().count("start") == 1


@pytest.mark.parametrize("mode", ["hang", "fail"])
def test_launcher_kills_every_rank_on_timeout_or_failure(tmp_path, mode):
    """The harness never hangs CI: a stuck job is killed at its deadline, and a failed rank
    takes the others down at once, none left running."""
    import os
    import time

    start = time.monotonic()
    with pytest.raises(AssertionError, match="timed out" if mode == "hang" else "failed"):
        run_job("hang.py", [mode], tmp_path, timeout=4)
    assert time.monotonic() - start < 30
    pids = [
        int(line)
        for log in tmp_path.glob("hang.rank*.log")
        for line in log.read_text().splitlines()
        if line.strip().isdigit()
    ]
    assert pids
    for pid in pids:  # our children were reaped: the pid no longer exists
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
