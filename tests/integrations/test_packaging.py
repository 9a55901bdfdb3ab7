"""Every package directory is listed in pyproject.toml, so a (non-editable) wheel ships it,
and the wheel carries py.typed."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]


def _build_isolation_flags() -> list[str]:
    """Build with this environment's setuptools (fast, no index needed) where it meets
    pyproject.toml's build requirement; an older one (a Python 3.11 venv ships 65.5, and
    CI's torch 2.11 leg keeps it) gets pip's isolated build environment instead."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]:
        req = Requirement(line)
        try:
            if not req.specifier.contains(version(req.name), prereleases=True):
                return []
        except PackageNotFoundError:
            return []
    return ["--no-build-isolation"]


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


def test_the_wheel_ships_every_module_and_py_typed(tmp_path):
    """A wheel built from a copy of the sources holds each package's modules, the kernels
    as scaled_decay.kernels, and the PEP 561 marker py.typed (type checkers skip a package
    without it)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "kernels")  # kernels: a dev symlink
    shutil.copytree(ROOT / "scaled_decay", src / "scaled_decay", ignore=skip)
    shutil.copytree(ROOT / "kernels", src / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    subprocess.run(
        [*PIP_WHEEL, *_build_isolation_flags(), "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("scaled_decay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "scaled_decay/py.typed" in names
    expected = {
        "scaled_decay/" + p.relative_to(ROOT / "scaled_decay").as_posix()
        for p in (ROOT / "scaled_decay").rglob("*.py")
        if "kernels" not in p.relative_to(ROOT / "scaled_decay").parts
    }
    expected |= {
        "scaled_decay/kernels/" + p.relative_to(ROOT / "kernels").as_posix()
        for p in (ROOT / "kernels").rglob("*.py")
    }
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
