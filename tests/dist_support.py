"""What every multi-process test module needs: the job launcher and the marks that select it
(``-m distributed``) and skip it where torch.distributed has no gloo backend."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "dist_workers"))
from launch import run_job

__all__ = ["DIST_MARKS", "run_job"]

dist = pytest.importorskip("torch.distributed")
DIST_MARKS = [
    pytest.mark.distributed,
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(),
        reason="needs torch.distributed with gloo",
    ),
]
