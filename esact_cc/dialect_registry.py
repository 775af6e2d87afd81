"""All dialects esact-cc tools know, as lazy factories (the CLI starts fast).

`onnx`, `transformer`, `spls` and `esact` are imported from
`esact_cc.dialects.<name>` only when a tool first meets one of their ops. Each such module
defines one `xdsl.ir.Dialect` object (found by type, whatever its variable name).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from xdsl.ir import Dialect

# Our own dialects, by dialect name -> module under esact_cc.dialects.
PROJECT_DIALECT_MODULES: tuple[str, ...] = ("onnx", "transformer", "spls", "sanger", "spatten", "esact",
                                              "lowering")
# Dialects whose ops lower-to-esact lowers through a rule registered outside it
# (`lowering_state.register_lowering`): the rule's module is imported with the dialect, so IR
# read from a file lowers like IR a pipeline built.
LOWERING_MODULES: dict[str, str] = {"sanger": "esact_cc.passes.lower_sanger",
                                    "spatten": "esact_cc.passes.lower_spatten"}


def _builtin() -> Dialect:
    from xdsl.dialects.builtin import Builtin

    return Builtin


def _func() -> Dialect:
    from xdsl.dialects.func import Func

    return Func


def _project_dialect(name: str) -> Callable[[], Dialect]:
    def load() -> Dialect:
        module = importlib.import_module(f"esact_cc.dialects.{name}")
        if name in LOWERING_MODULES:
            importlib.import_module(LOWERING_MODULES[name])
        for value in vars(module).values():
            if isinstance(value, Dialect) and value.name == name:
                return value
        raise ImportError(f"esact_cc.dialects.{name} defines no Dialect named '{name}'")

    return load


def get_all_dialects() -> dict[str, Callable[[], Dialect]]:
    """Dialect name -> factory."""
    dialects: dict[str, Callable[[], Dialect]] = {"builtin": _builtin, "func": _func}
    for name in PROJECT_DIALECT_MODULES:
        dialects[name] = _project_dialect(name)
    return dialects


def make_context(allow_unregistered: bool = False):  # -> xdsl.context.Context
    """A context with every dialect registered (lazily)."""
    from xdsl.context import Context

    ctx = Context(allow_unregistered=allow_unregistered)
    for name, factory in get_all_dialects().items():
        ctx.register_dialect(name, factory)
    return ctx
