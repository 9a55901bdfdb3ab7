"""mkdocs hook: serve the benchmarks' recorded results inside the site, from where they live.

Results, figures and scripts are kept once, under ``benchmarks/`` (outside ``docs/``). Pages
link to them as GitHub reads them, ``../benchmarks/<folder>/results/...``, so the links work
on GitHub and ``tests/docs`` checks them on disk. mkdocs only knows files inside ``docs/``, so
this hook adds the ``benchmarks/`` tree to the site under ``benchmarks/`` and points those
links there: ``mkdocs build --strict`` then fails on any link to a file that does not exist.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parent.parent
SERVED = "benchmarks"
SKIPPED_PARTS = {"__pycache__", ".ipynb_checkpoints"}


def on_files(files, config):
    for path in sorted((REPO / SERVED).rglob("*")):
        if path.is_file() and not SKIPPED_PARTS.intersection(path.parts):
            files.append(
                File(
                    path.relative_to(REPO).as_posix(),
                    src_dir=str(REPO),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
    return files


def on_page_markdown(markdown, page, config, files):
    """``../benchmarks/`` (one ``../`` more than the page's depth: the repo root on GitHub)
    becomes the served copy's path in the site."""
    src_uri = page.file.src_uri
    if src_uri.startswith(SERVED + "/"):
        return markdown  # a benchmark's own README: its links are already inside the tree
    depth = src_uri.count("/")
    on_github = "../" * (depth + 1) + SERVED + "/"
    in_site = "../" * depth + SERVED + "/"
    return markdown.replace("](" + on_github, "](" + in_site)
