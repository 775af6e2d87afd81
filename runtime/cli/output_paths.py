"""Checks on a tool's output paths, made before any work is done.

A tool that fails only after a long compile or search because of its output, or that quietly
overwrites one of its own inputs or one output with another, wastes the user's time or data.
Each CLI calls these on its options first:
- `check_output_file`: the path is not a directory and its parent is not a file;
- `check_output_dir`: the path is a directory or can be created as one;
- `refuse_overwriting_inputs`: no output is the same file as an input (by inode: links,
  `./x` and `x` are caught);
- `output_array_paths`: `<dir>/<output>.npy` for each output name, refusing two names that
  map to one file once sanitised (`a/b` and `a_b` both become `a_b.npy`);
- `refuse_shared_outputs`: no two outputs are one file (`--report x --trace x`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import UsageError
from .npy_arguments import output_file_name

PathArgument = str | os.PathLike[str] | None


def _first_existing_ancestor(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


def check_output_file(option: str, path: PathArgument) -> None:
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} '{path}' is a directory, expected a file name")
    ancestor = _first_existing_ancestor(path)
    if not ancestor.is_dir():
        raise UsageError(f"{option} '{path}': '{ancestor}' is not a directory")


def check_output_dir(option: str, path: PathArgument) -> None:
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} '{path}' is not a directory")
    ancestor = _first_existing_ancestor(path)
    if not path.exists() and not ancestor.is_dir():
        raise UsageError(f"{option} '{path}': '{ancestor}' is not a directory")


def refuse_overwriting_inputs(outputs: Mapping[str, PathArgument],
                              inputs: Mapping[str, PathArgument]) -> None:
    """Outputs and inputs by the option that names them (e.g. {'-o': 'm.esb'})."""
    existing_inputs = [(option, path) for option, path in inputs.items()
                       if path is not None and os.path.exists(path)]
    for out_option, output in outputs.items():
        if output is None or not os.path.exists(output):
            continue
        for in_option, source in existing_inputs:
            if os.path.samefile(output, source):
                raise UsageError(f"{out_option} '{output}' is the same file as {in_option} "
                                 f"'{source}': refusing to overwrite an input")


def refuse_shared_outputs(outputs: Mapping[str, PathArgument]) -> None:
    """Outputs by the option that names them; two may not resolve to the same file."""
    seen: dict[str, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(f"{seen[real]} and {option} are the same file '{path}': one output "
                             "would overwrite the other")
        seen[real] = option


def output_array_paths(option: str, directory: str | os.PathLike[str],
                       names: Iterable[str]) -> dict[str, Path]:
    """The file each output array goes to in `directory`, one file per output."""
    paths: dict[str, Path] = {}
    owner: dict[str, str] = {}
    for name in names:
        file = output_file_name(name)
        if file in owner:
            raise UsageError(f"{option}: outputs '{owner[file]}' and '{name}' would both be "
                             f"written to '{file}'")
        owner[file] = name
        paths[name] = Path(directory) / file
    return paths
