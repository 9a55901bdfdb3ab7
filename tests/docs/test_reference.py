"""The API reference (docs/reference/) documents exactly the names of scaled_decay.__all__,
and the README stays a front door."""

from __future__ import annotations

import re

import pytest

import scaled_decay

from .markdown_blocks import REPO

DIRECTIVE = re.compile(r"^:::\s+scaled_decay\.(\w+)\s*$", re.MULTILINE)


def documented_names() -> list[str]:
    names = []
    for page in sorted((REPO / "docs" / "reference").glob("*.md")):
        names += DIRECTIVE.findall(page.read_text(encoding="utf-8"))
    return names


def test_every_public_name_is_in_the_reference():
    missing = sorted(set(scaled_decay.__all__) - set(documented_names()))
    assert not missing, f"public names without a reference entry: {missing}"


def test_the_reference_documents_only_public_names_once_each():
    names = documented_names()
    assert len(names) == len(set(names)), "a name is documented twice"
    extra = sorted(set(names) - set(scaled_decay.__all__))
    assert not extra, f"reference entries for names not in scaled_decay.__all__: {extra}"


def test_every_public_name_has_a_docstring_the_reference_reads():
    """Read as mkdocstrings reads it: statically, with griffe (an empty entry otherwise)."""
    griffe = pytest.importorskip("griffe")
    extension = REPO / "docs" / "griffe_docstrings.py"
    package = griffe.load(
        "scaled_decay",
        search_paths=[str(REPO)],
        extensions=griffe.load_extensions(f"{extension}:ConcatenatedDocstrings"),
    )
    bare = [n for n in scaled_decay.__all__ if not package[n].docstring]
    assert not bare, f"public names whose reference entry would have no docstring: {bare}"


def test_readme_is_at_most_250_lines():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move detail into docs/"
