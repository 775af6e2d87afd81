"""The sparsity schemes `--sparsity` chooses from: built-ins loaded lazily, plus registered ones.

`BUILTIN_SCHEMES` names the module of each built-in scheme (it defines `SCHEME`); a module is
imported only when its scheme is used, so listing names (`--help`, error messages) is free.
`register_scheme` adds a scheme defined anywhere (a plugin, a test) for this process.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from xdsl.passes import ModulePass

from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.settings import SchemeSettings
from esact_cc.typed_options import unknown_name

BUILTIN_SCHEMES: dict[str, str] = {
    "dense": "esact_cc.sparsity.dense",
    "spls": "esact_cc.sparsity.spls",
}
"""Scheme name -> module defining `SCHEME`."""


@dataclass(frozen=True)
class SparsityScheme:
    name: str
    description: str
    options: type | None
    """Per-layer options: a frozen dataclass of `typed_options.option` fields (None: none)."""
    passes: Callable[[SchemeSettings], list[ModulePass]]
    """The passes of the pipeline's `sparsity` stage for these settings."""


_registered: dict[str, SparsityScheme] = {}


def register_scheme(scheme: SparsityScheme) -> None:
    """Make `scheme` selectable by name in this process (a built-in name cannot be taken)."""
    if scheme.name in BUILTIN_SCHEMES or scheme.name in _registered:
        raise CompileError(f"sparsity scheme '{scheme.name}' is already registered")
    _registered[scheme.name] = scheme


def unregister_scheme(name: str) -> None:
    _registered.pop(name, None)


def scheme_names() -> list[str]:
    return [*BUILTIN_SCHEMES, *_registered]


def scheme_named(name: str) -> SparsityScheme:
    if name in _registered:
        return _registered[name]
    if name not in BUILTIN_SCHEMES:
        raise CompileError(f"--sparsity: {unknown_name('sparsity scheme', name, scheme_names())}")
    scheme = importlib.import_module(BUILTIN_SCHEMES[name]).SCHEME
    assert isinstance(scheme, SparsityScheme) and scheme.name == name, BUILTIN_SCHEMES[name]
    return scheme
