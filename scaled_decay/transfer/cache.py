"""One JSON file per finished training run, named by the hash of its RunSpec.

Files are written atomically (temporary file, then rename), so a study killed at any moment
leaves only whole entries behind, and rerunning the same command resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os

from .train import RunSpec

__all__ = ["RunCache", "decode_result", "encode_result"]


class RunCache:
    def __init__(self, directory: str):
        if not isinstance(directory, (str, os.PathLike)) or not str(directory):
            raise ValueError(f"cache directory must be a path, got {directory!r}")
        self.directory = os.fspath(directory)
        self.runs_dir = os.path.join(self.directory, "runs")
        os.makedirs(self.runs_dir, exist_ok=True)

    def path(self, spec: RunSpec) -> str:
        return os.path.join(self.runs_dir, f"{spec.key()}.json")

    def get(self, spec: RunSpec) -> dict | None:
        """The stored result of ``spec``, or None (also for an unreadable or foreign file)."""
        try:
            with open(self.path(spec)) as f:
                entry = json.load(f)
        except (OSError, ValueError):
            return None
        if entry.get("spec") != spec.to_dict():
            return None  # a hash collision or a hand-edited file: retrain
        return decode_result(entry["result"])

    def put(self, spec: RunSpec, result: dict) -> None:
        path = self.path(spec)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"spec": spec.to_dict(), "result": encode_result(result)}, f)
        os.replace(tmp, path)

    def __len__(self) -> int:
        return sum(1 for n in os.listdir(self.runs_dir) if n.endswith(".json"))


def encode_result(result: dict) -> dict:
    """Strict JSON: a diverged run's infinite loss is written as null."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()
    }


def decode_result(result: dict) -> dict:
    out = dict(result)
    if out.get("holdout_nll") is None:
        out["holdout_nll"] = math.inf
    return out
