"""FSDP2 + torch.distributed.checkpoint resume: bit-identical, group keys restored.

tests/distributed/workers/dcp_resume.py trains 8 steps, saves model + optimizer + scheduler with
``dcp.save`` (``get_optimizer_state_dict``), trains 8 more; then a fresh sharded model with
another init and an optimizer built with other lr / weight_decay / decay_mode / rule
parameters loads the checkpoint (``set_optimizer_state_dict``) and trains the same 8 steps.
"""

import json

import pytest

from tests.helpers.dist_launch import DIST_MARKS, run_job

pytestmark = DIST_MARKS


@pytest.mark.parametrize("layout", ["nested", "flat"])  # flatten_optimizer_state_dict
def test_fsdp2_dcp_resume_is_exact_and_restores_group_keys(tmp_path, layout):
    run_job("dcp_resume.py", [layout], tmp_path, timeout=120)
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["max_diff"] == 0.0
    # every group key of the resumed optimizer equals the uninterrupted one's; torch's
    # set_optimizer_state_dict itself adds "differentiable" (a torch.optim default)
    assert all(set(d) <= {"differentiable"} for d in r["group_diffs"]), r["group_diffs"]
    # and they came from the file, not from the template optimizer
    assert r["template_modes"] == ["decoupled", "decoupled"]
    assert r["restored_modes"] == ["independent", "independent"]
    assert r["restored_scaling"][0] == [
        {"rule": "FanIn", "reference": 4, "power": 0.5},
        {"rule": "ParamCount", "reference": 100, "power": 1.0, "total_count": None},
    ]
    assert r["template_lrs"] == [0.01, 0.01] and r["restored_lrs"][0] == pytest.approx(0.0375)
    assert {"decay_mode", "decay_scaling", "fan_ins", "param_names", "initial_lr"} <= set(
        r["restored_keys"]
    )
    assert r["state_dtensor"] and r["steps"] == [16.0]
