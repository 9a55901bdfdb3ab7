"""torch.amp.GradScaler under DDP and FSDP2 (2 gloo ranks, CPU): a smoke check that the
scaled run with one forced overflow equals the single-process GradScaler run exactly, and
that the overflow step is skipped on every rank, including FSDP2 ranks whose own shard held
no inf (DTensor's unscale op reduces found_inf over the mesh). Per-backend AMP behaviour is
tested in test_amp.py.
"""

import json

import pytest

from tests.helpers.dist_launch import DIST_MARKS, run_job

pytestmark = DIST_MARKS


@pytest.mark.parametrize("wrap", ["ddp", "fsdp"])
def test_grad_scaler_overflow_skips_on_every_rank_and_matches_single_process(tmp_path, wrap):
    run_job("amp_smoke.py", [wrap], tmp_path, timeout=120)
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == 2
    for name, r in results.items():
        assert r["ref_skipped"] and r["skipped_on_every_rank"], name
        assert r["scale"] == r["ref_scale"], name
        assert r["max_diff"] == 0.0, name
