"""The sparsity schemes `--sparsity` chooses from: built-ins loaded lazily, plus registered ones.

A scheme registers everything it brings through its one `SparsityScheme` value: options,
insert passes, and (as module names, imported when a tool needs them) its dialect, lowering
rules, interpreter semantics, ISA rows, config file class and tuning hook. The tools ask this
registry (`scheme_modules`, `scheme_passes`, `scheme_configs`) instead of keeping lists, so a
scheme edits no file outside its own.

`BUILTIN_SCHEMES` names the module of each built-in scheme (it defines `SCHEME`); a module is
imported only when its scheme is used, so listing names (`--help`, error messages) is free.
Schemes from elsewhere need no edit here: `register_scheme` adds one for this process (a test,
a script), and an installed package adds one for every tool through an entry point in the group
`ENTRY_POINT_GROUP` (`name = "module:SCHEME"`), loaded when the scheme is picked or a tool
gathers every scheme's modules.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

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
class TuningHook:
    """`esact-tune --sparsity NAME`: an evaluator class (model, data, output, ir) and a search
    (evaluator, budget, per_layer, margin_se, log) -> result with `best` and `grid`, each a
    "module:attribute" (esact_cc/tuning/scheme_tuning.py runs them)."""

    evaluator: str
    search: str


@dataclass(frozen=True)
class SparsityScheme:
    name: str
    description: str
    options: type | str | None
    """Per-layer options: a frozen dataclass of `typed_options.option` fields, or its
    "module:Class" (imported when options are read, so listing schemes loads no pass module);
    None: none."""
    passes: Callable[[SchemeSettings], list[ModulePass]]
    """The passes of the pipeline's `sparsity` stage for these settings."""
    pass_classes: Mapping[str, str] = field(default_factory=dict)
    """Pass name -> "module:Class", for esact-opt and IR dumps (passes/registry.py)."""
    dialect: str | None = None
    """Module defining the xDSL `Dialect` of the scheme's ops (every tool's context has it)."""
    lowering: str | None = None
    """Module registering those ops' lowering rules (`lowering_state.register_lowering`)."""
    interpreter: str | None = None
    """Module registering their reference semantics (`reference_interpreter.register`)."""
    instructions: str | None = None
    """Module whose `register()` adds the scheme's ISA rows (`isa_extension.register_once`);
    called when the scheme is loaded."""
    config: str | None = None
    """"module:Class" of the esact-tune config file `--spls-config` reads (None: none)."""
    tuning: TuningHook | None = None
    """How `esact-tune` calibrates it (None: it cannot be tuned)."""

    def options_class(self) -> type | None:
        """`options`, imported if given by name."""
        return load_attribute(self.options) if isinstance(self.options, str) else self.options


def load_attribute(reference: str) -> Any:
    """The object a "module:attribute" reference names."""
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


_registered: dict[str, SparsityScheme] = {}


def register_scheme(scheme: SparsityScheme) -> None:
    """Make `scheme` selectable by name in this process (a built-in name cannot be taken)."""
    if scheme.name in BUILTIN_SCHEMES or scheme.name in _registered:
        raise CompileError(f"sparsity scheme '{scheme.name}' is already registered")
    _registered[scheme.name] = scheme


def unregister_scheme(name: str) -> None:
    _registered.pop(name, None)


def _installed() -> dict[str, EntryPoint]:
    return _installed_on(tuple(sys.path))


@cache
def _installed_on(path: tuple[str, ...]) -> dict[str, EntryPoint]:
    """The group's entry points for this import path (a lookup takes ~20 ms; interpreters,
    built per calibration sample, ask every time)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def scheme_names() -> list[str]:
    known = [*BUILTIN_SCHEMES, *_registered]
    return known + sorted(set(_installed()) - set(known))


def scheme_named(name: str) -> SparsityScheme:
    scheme = _lookup(name)
    if scheme.instructions is not None:
        importlib.import_module(scheme.instructions).register()
    return scheme


def _lookup(name: str) -> SparsityScheme:
    if name in _registered:
        return _registered[name]
    if name in BUILTIN_SCHEMES:
        scheme = importlib.import_module(BUILTIN_SCHEMES[name]).SCHEME
        assert isinstance(scheme, SparsityScheme) and scheme.name == name, BUILTIN_SCHEMES[name]
        return scheme
    installed = _installed()
    if name not in installed:
        raise CompileError(f"--sparsity: {unknown_name('sparsity scheme', name, scheme_names())}")
    try:
        scheme = installed[name].load()
    except Exception as exc:  # a broken plugin is the user's environment, not our bug
        raise CompileError(f"sparsity scheme entry point '{name}' = '{installed[name].value}' "
                           f"({ENTRY_POINT_GROUP}) cannot be loaded: "
                           f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(scheme, SparsityScheme) or scheme.name != name:
        raise CompileError(f"--sparsity: entry point '{name}' = '{installed[name].value}' "
                           f"({ENTRY_POINT_GROUP}) is not a SparsityScheme named '{name}'")
    return scheme


def all_schemes() -> list[SparsityScheme]:
    """Every known scheme, loaded (built-ins, registered, installed)."""
    return [scheme_named(name) for name in scheme_names()]


def scheme_modules(kind: str) -> dict[str, str]:
    """Scheme name -> its module of one kind ("dialect", "lowering", "interpreter"), for the
    schemes that have one."""
    assert kind in ("dialect", "lowering", "interpreter"), kind
    return {scheme.name: module for scheme in all_schemes()
            if (module := getattr(scheme, kind)) is not None}


def import_scheme_modules(kind: str) -> None:
    """Import every scheme's module of one kind (their import registers them)."""
    for module in scheme_modules(kind).values():
        importlib.import_module(module)


def scheme_passes() -> dict[str, str]:
    """Pass name -> "module:Class" of every scheme's passes."""
    return {name: reference for scheme in all_schemes()
            for name, reference in scheme.pass_classes.items()}


def scheme_configs() -> dict[str, str]:
    """Scheme name -> "module:Class" of the config file `--spls-config` reads."""
    return {scheme.name: scheme.config for scheme in all_schemes() if scheme.config is not None}
