"""The sparsity schemes `--sparsity` chooses from: built-ins loaded lazily, plus registered ones.

`BUILTIN_SCHEMES` names the module of each built-in scheme (it defines `SCHEME`); a module is
imported only when its scheme is used, so listing names (`--help`, error messages) is free.
Schemes from elsewhere need no edit here: `register_scheme` adds one for this process (a test,
a script), and an installed package adds one for every tool through an entry point in the group
`ENTRY_POINT_GROUP` (`name = "module:SCHEME"`), loaded when the scheme is picked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.settings import SchemeSettings
from esact_cc.typed_options import unknown_name

if TYPE_CHECKING:  # xdsl is not needed to build the parser (esact-cc --help)
    from xdsl.passes import ModulePass

BUILTIN_SCHEMES: dict[str, str] = {
    "dense": "esact_cc.sparsity.dense",
    "spls": "esact_cc.sparsity.spls",
    "sanger": "esact_cc.sparsity.sanger",
    "spatten": "esact_cc.sparsity.spatten",
}
"""Scheme name -> module defining `SCHEME`."""
ENTRY_POINT_GROUP = "esact_cc.sparsity_schemes"


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


def _installed() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def scheme_names() -> list[str]:
    known = [*BUILTIN_SCHEMES, *_registered]
    return known + sorted(set(_installed()) - set(known))


def scheme_named(name: str) -> SparsityScheme:
    if name in _registered:
        return _registered[name]
    if name in BUILTIN_SCHEMES:
        scheme = importlib.import_module(BUILTIN_SCHEMES[name]).SCHEME
        assert isinstance(scheme, SparsityScheme) and scheme.name == name, BUILTIN_SCHEMES[name]
        return scheme
    installed = _installed()
    if name not in installed:
        raise CompileError(f"--sparsity: {unknown_name('sparsity scheme', name, scheme_names())}")
    scheme = installed[name].load()
    if not isinstance(scheme, SparsityScheme) or scheme.name != name:
        raise CompileError(f"--sparsity: entry point '{name}' = '{installed[name].value}' "
                           f"({ENTRY_POINT_GROUP}) is not a SparsityScheme named '{name}'")
    return scheme
