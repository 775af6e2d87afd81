"""A package directory that runs a source tree's esact_cc instead of the installed one.

The alternating benches (alternating_trees.py) compare two checkouts of this repository;
each runs through such a directory put first on PYTHONPATH.
"""

from __future__ import annotations

from pathlib import Path


def package_dir(tree: Path, where: Path) -> Path:
    """A directory whose esact_cc package is `tree`'s source (the layout pyproject maps)."""
    package = where / "esact_cc"
    package.mkdir(parents=True)
    for entry in (tree / "esact_cc").iterdir():
        (package / entry.name).symlink_to(entry)
    for sub in ("dialects", "passes", "runtime"):
        (package / sub).symlink_to(tree / sub)
    return where
