"""A package directory that runs a source tree's esact_cc instead of the installed one.

The alternating benches (alternating_trees.py) compare two checkouts of this repository;
each runs through such a directory put first on PYTHONPATH. A tree's C extensions (pyproject's
[tool.setuptools] ext-modules, e.g. runtime/_timing_loop.c) are compiled from that tree's
source into the directory, never taken from a build lying in the tree: a checkout's built
module may be older than its source.
"""

from __future__ import annotations

import importlib.machinery
import tomllib
from pathlib import Path

SUBPACKAGES = {"dialects": "esact_cc.dialects", "passes": "esact_cc.passes",
               "runtime": "esact_cc.runtime"}  # pyproject's package-dir mapping


def package_dir(tree: Path, where: Path) -> Path:
    """A directory whose esact_cc package is `tree`'s source (the layout pyproject maps)."""
    package = where / "esact_cc"
    package.mkdir(parents=True)
    for entry in (tree / "esact_cc").iterdir():
        (package / entry.name).symlink_to(entry)
    extensions = tree_extensions(tree)
    for sub, name in SUBPACKAGES.items():
        built = {ext: source for ext, source in extensions.items()
                 if ext.rpartition(".")[0] == name}
        if not built:
            (package / sub).symlink_to(tree / sub)
            continue
        (package / sub).mkdir()
        for entry in (tree / sub).iterdir():
            if not entry.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
                (package / sub / entry.name).symlink_to(entry)
        for ext, source in built.items():
            build_extension(source, ext.rpartition(".")[2], package / sub, where / "build")
    return where


def tree_extensions(tree: Path) -> dict[str, Path]:
    """Module name -> C source of each extension `tree`'s pyproject.toml declares."""
    declared = declared_extensions((tree / "pyproject.toml").read_text())
    return {name: tree / source for name, source in declared.items()}


def _ext_modules(pyproject: str) -> list[dict]:
    return tomllib.loads(pyproject).get("tool", {}).get("setuptools", {}).get("ext-modules", [])


def declared_extensions(pyproject: str) -> dict[str, str]:
    """Module name -> C source path (one file each) of the ext-modules a pyproject.toml's
    text declares."""
    return {ext["name"]: ext["sources"][0] for ext in _ext_modules(pyproject)}


def declared_depends(pyproject: str) -> dict[str, list[str]]:
    """Module name -> the files (headers beside its source) each ext-module declares it
    depends on: a source copied elsewhere needs them beside it."""
    return {ext["name"]: list(ext.get("depends", [])) for ext in _ext_modules(pyproject)}


def build_extension(source: Path, name: str, target: Path, scratch: Path) -> Path:
    """Compile the one-file C extension `source` as module `name` into `target` (as
    setuptools' build_ext does at install); the built file's path."""
    from setuptools import Distribution, Extension

    command = Distribution({"ext_modules": [Extension(name, [str(source)])]}
                           ).get_command_obj("build_ext")
    command.build_lib, command.build_temp = str(target), str(scratch)
    command.ensure_finalized()
    command.run()
    (built,) = command.get_outputs()
    return Path(built)
