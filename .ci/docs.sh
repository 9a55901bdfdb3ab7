#!/usr/bin/env bash
# CI: build the documentation site strictly (any warning fails: a broken link or anchor, a
# missing results file, a reference entry griffe cannot read). The docs tools are pinned to
# the versions the site was written against; nothing of the package is imported
# (mkdocstrings reads the source statically), so torch is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

python3 -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install -q --upgrade pip
"$scratch/venv/bin/python" -m pip install -q \
    mkdocs==1.6.1 mkdocs-material==9.8.2 mkdocstrings==1.0.8 mkdocstrings-python==2.0.11 \
    griffelib==2.4.1 pymdown-extensions==13.1.2 mkdocs-autorefs==1.4.5
# NO_MKDOCS_2_WARNING: silences mkdocs-material's banner about its successor
NO_MKDOCS_2_WARNING=1 "$scratch/venv/bin/mkdocs" build --strict -d "$scratch/site"
echo "docs: mkdocs build --strict passed"
