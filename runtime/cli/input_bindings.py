"""Arrays bound to model inputs on the command line: one syntax and one resolver for every
option that takes them (`--input` of esact-cc and esact-run, `--calibration-data` of
esact-cc, esact-opt's quantize, esact-tune and esact-demo).

    FILE.npz                 every array of the archive, each bound to the input it is named after
    NAME=FILE.npy            the file's one array
    NAME=FILE.npz            the archive's array NAME, else its only array
    NAME=FILE.npz:ARRAY      the archive's array ARRAY

Files are read by npy_files (header checked before any allocation, numeric dtypes only, no
pickles) under the caller's cap. `resolve_bindings` matches the arrays to the input names:
an explicit NAME must be an input, every input must be bound, and a whole-archive binding whose
array names match no input binds its only array to a one-input model. Every failure is one line
naming the option, the input, the array and the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import CommandLineError, UsageError
from ..npy_files import read_npy_file, read_npz_file

NPZ_SUFFIX = ".npz"


@dataclass(frozen=True)
class Binding:
    """One `--input`/`--calibration-data` value, parsed."""

    option: str
    spec: str
    path: str
    name: str | None = None
    """The input bound; None: every array of the archive, by its own name."""
    array: str | None = None
    """The archive member (`:ARRAY`); None: NAME, else the only one."""

    def where(self) -> str:
        return f"{self.option} '{self.spec}'"


def parse_binding(option: str, spec: str) -> Binding:
    """`FILE.npz`, `NAME=FILE.npy`, `NAME=FILE.npz` or `NAME=FILE.npz:ARRAY`."""
    name, sep, rest = spec.partition("=")
    if not sep:
        if not spec.endswith(NPZ_SUFFIX):
            raise CommandLineError(f"{option} '{spec}': expected FILE.npz, NAME=FILE.npy, "
                                   "NAME=FILE.npz or NAME=FILE.npz:ARRAY")
        return Binding(option, spec, spec)
    if not name or not rest:
        raise CommandLineError(f"{option} '{spec}': expected NAME=FILE (the input name and "
                               "the file are both needed)")
    path, colon, array = rest.rpartition(":")
    if colon and path.endswith(NPZ_SUFFIX):
        if not array:
            raise CommandLineError(f"{option} '{spec}': no array name after ':'")
        return Binding(option, spec, path, name, array)
    return Binding(option, spec, rest, name)


def input_paths(option: str, specs: Iterable[str]) -> dict[str, str | None]:
    """The files the bindings read, by how an error names them (output-is-an-input checks)."""
    paths: dict[str, str | None] = {}
    for spec in specs:
        binding = parse_binding(option, spec)
        key = f"{option} {binding.name}" if binding.name else f"{option} '{binding.path}'"
        paths[key] = binding.path
    return paths


@dataclass
class BoundArrays:
    """What the bindings read: arrays given to one input, and whole archives."""

    named: dict[str, tuple[np.ndarray, Binding]] = field(default_factory=dict)
    archives: list[tuple[dict[str, np.ndarray], Binding]] = field(default_factory=list)


def _archive_member(arrays: dict[str, np.ndarray], binding: Binding) -> np.ndarray:
    members = ", ".join(sorted(arrays)) or "none"
    if binding.array is not None:
        if binding.array not in arrays:
            raise UsageError(f"{binding.where()}: '{binding.path}' has no array "
                             f"'{binding.array}' (arrays: {members})")
        return arrays[binding.array]
    if binding.name in arrays:
        return arrays[binding.name]  # type: ignore[index]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise UsageError(f"{binding.where()}: '{binding.path}' has no array '{binding.name}' and "
                     f"more than one array (arrays: {members}); name one as "
                     f"{binding.name}={binding.path}:ARRAY")


def read_bindings(option: str, specs: Sequence[str], cap: int,
                  what: str | None = None) -> BoundArrays:
    """Read every binding's file (each array at most `cap` bytes); `what` names the files in
    errors (default: the option)."""
    bound = BoundArrays()
    for spec in specs:
        binding = parse_binding(option, spec)
        if binding.path.endswith(NPZ_SUFFIX):
            arrays = read_npz_file(binding.path, what or option, cap)
            if binding.name is None:
                bound.archives.append((arrays, binding))
                continue
            array = _archive_member(arrays, binding)
        else:
            array = read_npy_file(binding.path, f"{what or option} {binding.name}", cap)
        if binding.name in bound.named:
            raise CommandLineError(f"{option} {binding.name} given twice")
        bound.named[binding.name] = (array, binding)  # type: ignore[index]
    return bound


def resolve_bindings(bound: BoundArrays, inputs: Sequence[str], option: str,
                     extra_arrays_allowed: bool = False) -> dict[str, np.ndarray]:
    """Input name -> array, for exactly the given `inputs` (see the module docstring).

    `extra_arrays_allowed`: a whole archive may hold arrays that are no input (calibration
    files carry labels); else such an array is an error, not silently skipped."""
    known = ", ".join(inputs) or "none"
    resolved: dict[str, np.ndarray] = {}
    for name, (array, binding) in bound.named.items():
        if name not in inputs:
            raise UsageError(f"{binding.where()}: the model has no input '{name}' "
                             f"(inputs: {known})")
        resolved[name] = array
    for arrays, binding in bound.archives:
        matching = [name for name in arrays if name in inputs]
        if not matching and len(inputs) == 1 and len(arrays) == 1 and inputs[0] not in resolved:
            resolved[inputs[0]] = next(iter(arrays.values()))  # one array, one input
            continue
        for name in matching:
            if name in resolved:
                raise CommandLineError(f"{option}: input '{name}' is bound twice (again by "
                                       f"array '{name}' of '{binding.path}')")
            resolved[name] = arrays[name]
        extra = sorted(set(arrays) - set(inputs))
        if extra and not extra_arrays_allowed:
            raise UsageError(f"{binding.where()}: array '{extra[0]}' is not an input of the "
                             f"model (inputs: {known}); bind arrays one by one with "
                             "NAME=FILE.npz:ARRAY")
    missing = [name for name in inputs if name not in resolved]
    if missing:
        unused = sorted(f"'{name}' of '{binding.path}'" for arrays, binding in bound.archives
                        for name in arrays if name not in resolved)
        found = f"; arrays: {', '.join(unused)}" if unused else ""
        raise UsageError(f"{option}: lacks input(s) {', '.join(missing)} (bind one as "
                         f"NAME=FILE.npy or NAME=FILE.npz[:ARRAY]{found})")
    return {name: resolved[name] for name in inputs}


def bound_names(bound: BoundArrays) -> dict[str, np.ndarray]:
    """Every array the bindings name an input with (before resolution against the model):
    the arrays of whole archives under their own names, then the explicit ones."""
    arrays = {name: array for members, _ in bound.archives for name, array in members.items()}
    arrays.update({name: array for name, (array, _) in bound.named.items()})
    return arrays


def path_list(value: str | os.PathLike[str] | Sequence[str] | None) -> list[str]:
    """A binding option's value as a list of specs (one string or several)."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    return [os.fspath(v) for v in value]
