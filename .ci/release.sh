#!/usr/bin/env bash
# Release check: build the sdist and the wheel from a clean copy of the tree, `twine check`
# them, install the wheel (not the source tree) in a fresh venv with torch pinned, and in a
# folder outside the checkout import the package, check the wheel ships what a typed library
# ships, and run every Python example of the README that is not marked to skip.
#   bash .ci/release.sh            (about 1 min on the 2-core CPU VM, torch's CPU wheel from the local index)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/build-venv"
"$work/build-venv/bin/python" -m pip install -q --upgrade pip
"$work/build-venv/bin/python" -m pip install -q build twine
# a clean copy: what git tracks, nothing built or cached in this checkout
git archive --format=tar HEAD | (mkdir "$work/src" && tar -x -C "$work/src")
"$work/build-venv/bin/python" -m build -q --outdir "$work/dist" "$work/src" >/dev/null
ls "$work/dist"
"$work/build-venv/bin/python" -m twine check --strict "$work/dist"/*

python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q torch==2.13.0 numpy "$work/dist"/*.whl
mkdir "$work/run" && cd "$work/run"   # away from the checkout: imports come from the wheel
"$work/venv/bin/python" - "$root" "$work"/dist/*.whl <<'EOF'
import importlib.metadata
import importlib.util
import pathlib
import sys
import zipfile

import scaled_decay as sd

where = pathlib.Path(sd.__file__).parent
assert "site-packages" in str(where), f"imported from {where}, not from the installed wheel"
version = importlib.metadata.version("scaled_decay")
assert sd.__version__ == version, (sd.__version__, version)
shipped = set(zipfile.ZipFile(sys.argv[2]).namelist())
for needed in ("scaled_decay/py.typed", "scaled_decay/kernels/__init__.py"):
    assert needed in shipped, f"the wheel does not ship {needed}"
print(f"scaled_decay {version} from the wheel at {where}; {len(sd.__all__)} public names")

# README examples, found and marked as tests/docs finds them (tests/docs/markdown_blocks.py:
# skip / requires markers; one namespace per file); run here against the installed wheel
root = pathlib.Path(sys.argv[1])
spec = importlib.util.spec_from_file_location(
    "markdown_blocks", root / "tests" / "docs" / "markdown_blocks.py"
)
markdown_blocks = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = markdown_blocks  # (its dataclass looks its module up)
spec.loader.exec_module(markdown_blocks)
namespace = {"__name__": "__main__"}
ran = 0
for block in markdown_blocks.blocks(root / "README.md"):
    if block.skip or (block.requires and importlib.util.find_spec(block.requires) is None):
        continue
    exec(compile(block.code, block.name, "exec"), namespace)
    ran += 1
assert ran >= 1, "no README example ran"
print(f"ran {ran} README example(s) against the installed wheel")
EOF
echo "release check passed"
