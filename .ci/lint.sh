#!/usr/bin/env bash
# Lint: ruff (rules and formatting, the whole tree) and mypy (the package as installed, with
# kernels/ as scaled_decay.kernels), each pinned to the version the project was checked
# with, in a fresh venv. Exits non-zero on any finding.
#   bash .ci/lint.sh            (about 1 min on the 2-core CPU VM, torch's CPU wheel from the local index)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
# torch and numpy: mypy reads their annotations (both ship py.typed); typing_extensions for
# TypeIs (torch depends on it too)
"$work/venv/bin/python" -m pip install -q ruff==0.17.6 mypy==2.4.1 torch==2.13.0 numpy \
    typing_extensions

status=0
echo "== ruff check"
"$work/venv/bin/ruff" check --no-cache . || status=1
echo "== ruff format --check"
"$work/venv/bin/ruff" format --check --no-cache . || status=1

# mypy cannot follow setuptools' package-dir mapping (kernels/ -> scaled_decay.kernels), so it
# checks a copy laid out as the wheel installs it; paths in its messages read the same.
mkdir "$work/tree"
cp -R scaled_decay "$work/tree/scaled_decay"
rm -rf "$work/tree/scaled_decay/kernels"  # a developer's symlink to ../kernels, if there is one
cp -R kernels "$work/tree/scaled_decay/kernels"
echo "== mypy"
(cd "$work/tree" && "$work/venv/bin/mypy" --config-file "$root/pyproject.toml" \
    --cache-dir "$work/mypy-cache") || status=1

exit "$status"
