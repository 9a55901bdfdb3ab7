"""Every package directory is listed in pyproject.toml, so a (non-editable) wheel ships it."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_for_the_wheel():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    dirs = {
        "scaled_decay." + ".".join(p.parent.relative_to(ROOT / "scaled_decay").parts)
        for p in (ROOT / "scaled_decay").rglob("__init__.py")
    }
    dirs = {d.rstrip(".") for d in dirs}
    dirs |= {
        "scaled_decay.kernels"
        + "".join("." + part for part in p.parent.relative_to(ROOT / "kernels").parts)
        for p in (ROOT / "kernels").rglob("__init__.py")
    }
    assert dirs <= listed, f"not listed in pyproject.toml packages: {sorted(dirs - listed)}"
    assert tool["package-dir"]["scaled_decay.kernels"] == "kernels"
    assert "kernels" not in listed  # never a top-level `kernels` module
