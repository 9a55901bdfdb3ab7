"""Every Python example in README.md and docs/ runs, and prints what the page shows.

The conventions (output blocks, skip and requires markers) are in markdown_blocks.py and
docs/contributing.md. Blocks of one file share a namespace and run in order; a test for a
later block first runs the earlier ones it has not run yet, so `-k` on one block works.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings

import pytest

from .markdown_blocks import blocks, documented_files

ALL_BLOCKS = [block for path in documented_files() for block in blocks(path)]


class _Page:
    """One file's namespace, its working directory, and how far its blocks have run."""

    def __init__(self, workdir):
        self.namespace: dict = {"__name__": "__main__"}
        self.workdir = workdir
        self.done: set[int] = set()
        self.failed: str | None = None


_pages: dict = {}


def _runnable(block) -> str | None:
    """Why the block is not run here, or None."""
    if block.skip:
        return f"{block.name}: marked skip: {block.skip}"
    if block.requires and importlib.util.find_spec(block.requires) is None:
        return f"{block.name}: needs {block.requires}, not installed"
    return None


def _run(block, page: _Page) -> str:
    """Run one block in its page's namespace and working directory; return what it printed."""
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(page.workdir)  # examples that write files write them there
    try:
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # warnings go to stderr, not the checked output
            exec(compile(block.code, block.name, "exec"), page.namespace)
    finally:
        os.chdir(cwd)
    return out.getvalue()


def _normalized(text: str) -> list[str]:
    return [line.rstrip() for line in text.rstrip("\n").split("\n")]


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.name for b in ALL_BLOCKS])
def test_example_runs_and_prints_what_is_shown(block, tmp_path_factory):
    reason = _runnable(block)
    if reason:
        pytest.skip(reason)
    page = _pages.get(block.path)
    if page is None:
        page = _pages[block.path] = _Page(tmp_path_factory.mktemp("docs_page"))
    if page.failed:
        pytest.fail(f"an earlier block of this file failed ({page.failed}); fix that one first")
    for earlier in ALL_BLOCKS:  # the same file's blocks before this one, in order
        if earlier.path != block.path or earlier.line >= block.line:
            continue
        if earlier.line in page.done or _runnable(earlier):
            continue
        try:
            _run(earlier, page)
        except Exception:
            page.failed = earlier.name
            raise
        page.done.add(earlier.line)
    try:
        printed = _run(block, page)
    except Exception:
        page.failed = block.name
        raise
    page.done.add(block.line)
    if block.output is not None:
        assert _normalized(printed) == _normalized(block.output), (
            f"{block.name} printed something other than the output block under it:\n{printed}"
        )


def test_examples_are_found():
    """The parser sees the examples (a broken fence would silently drop them)."""
    names = {b.name.split(":")[0] for b in ALL_BLOCKS}
    assert "README.md" in names
    assert len(ALL_BLOCKS) >= 20
    assert sum(b.output is not None for b in ALL_BLOCKS) >= 5
