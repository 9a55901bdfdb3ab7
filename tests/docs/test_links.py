"""Every relative link and image in README.md and docs/ points to a file that exists.

Resolved on disk from the file that holds the link, as GitHub resolves it. (mkdocs build
--strict checks the same links, and their #anchors, for the site.)
"""

from __future__ import annotations

import re

import pytest

from .markdown_blocks import REPO, documented_files

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`[^`]*`")


def relative_links(path):
    """(line number, target) of each relative link outside code blocks and code spans."""
    in_fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http(s), mailto; anchors within the page (mkdocs checks those)
            yield number, target.split("#")[0]


FILES = documented_files()


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(REPO).as_posix() for p in FILES])
def test_relative_links_resolve(path):
    broken = [
        f"line {n}: {target}"
        for n, target in relative_links(path)
        if not (path.parent / target).resolve().exists()
    ]
    assert not broken, f"{path.relative_to(REPO)} links to files that do not exist: {broken}"


def test_links_stay_inside_the_repository():
    outside = [
        f"{path.relative_to(REPO)}:{n}: {target}"
        for path in FILES
        for n, target in relative_links(path)
        if not (path.parent / target).resolve().is_relative_to(REPO)
    ]
    assert not outside, outside


def test_readme_table_of_contents_reaches_every_docs_page():
    readme = REPO / "README.md"
    linked = {(REPO / target).resolve() for _, target in relative_links(readme)}
    pages = {p.resolve() for p in (REPO / "docs").glob("*.md")}
    missing = sorted(p.name for p in pages - linked)
    assert not missing, f"README.md links to no docs page named {missing}"
