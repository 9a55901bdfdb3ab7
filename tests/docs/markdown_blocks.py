"""The Python examples of README.md and docs/, as tests/docs runs them.

Conventions (docs/contributing.md):

- Every fenced block opened by a line that is exactly ```` ```python ```` at the start of a
  line is run. The blocks of one file run in order in one namespace, so a page may build a
  model once and use it in later blocks.
- A ```` ```text ```` block right after it (only blank lines between) is its printed output:
  the test compares it with what the block printed, line by line, trailing spaces ignored.
- An HTML comment on the line just before the block (blank lines allowed) marks a block that
  is not run here: ``<!-- skip: REASON -->`` (needs CUDA, a distributed launch, ...), or
  ``<!-- requires: MODULE -->`` (run only where MODULE imports, e.g. timm).
- A Python block indented (inside a list item) is an error: it would not be found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!--\s*(skip|requires):\s*(.+?)\s*-->$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


@dataclass
class Block:
    path: Path  # the markdown file
    line: int  # 1-based line of the opening fence
    code: str
    output: str | None = None  # the ```text block right after it, if any
    skip: str | None = None  # why it is not run
    requires: str | None = None  # a module it needs

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO).as_posix()}:{self.line}"


def documented_files() -> list[Path]:
    """README.md and every page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _fences(lines: list[str]):
    """(language, indent, first line index, end index exclusive, body) of each fenced block."""
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if j == len(lines):
            raise ValueError(f"unclosed ``` block opened at line {i + 1}")
        body = [line[len(indent) :] for line in lines[i + 1 : j]]
        yield lang, indent, i, j + 1, "\n".join(body) + "\n"
        i = j + 1


def blocks(path: Path) -> list[Block]:
    """The Python blocks of one markdown file, with their outputs and markers."""
    lines = path.read_text(encoding="utf-8").split("\n")
    found: list[Block] = []
    fences = list(_fences(lines))
    for k, (lang, indent, start, end, body) in enumerate(fences):
        if lang != "python":
            continue
        where = f"{path.relative_to(REPO)}:{start + 1}"
        if indent:
            raise ValueError(f"{where}: an indented python block is not run; unindent it")
        block = Block(path, start + 1, body)
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        marker = MARKER.match(lines[prev].strip()) if prev >= 0 else None
        if marker:
            setattr(block, marker.group(1), marker.group(2))
        if k + 1 < len(fences) and fences[k + 1][0] == "text":
            between = lines[end : fences[k + 1][2]]
            if not any(line.strip() for line in between):
                block.output = fences[k + 1][4]
        found.append(block)
    return found
