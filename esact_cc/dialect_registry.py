"""All dialects esact-cc tools know, as lazy factories (the CLI starts fast).

Our own dialects (`PROJECT_DIALECT_MODULES`) are imported from `esact_cc.dialects.<name>` only
when a tool first meets one of their ops; each such module defines one `xdsl.ir.Dialect` object
(found by type, whatever its variable name). A sparsity scheme's dialect is named after the
scheme and comes from its registration (`SparsityScheme.dialect`, esact_cc/sparsity/registry.py),
with the module of its lowering rules (`SparsityScheme.lowering`), so IR read from a file
lowers like IR a pipeline built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from xdsl.ir import Dialect

# Our own dialects, by dialect name -> module under esact_cc.dialects.
PROJECT_DIALECT_MODULES: tuple[str, ...] = ("onnx", "transformer", "spls", "esact", "lowering")


def _builtin() -> Dialect:
    from xdsl.dialects.builtin import Builtin

    return Builtin


def _func() -> Dialect:
    from xdsl.dialects.func import Func

    return Func


def _dialect(name: str, module_name: str, also: str | None = None) -> Callable[[], Dialect]:
    def load() -> Dialect:
        module = importlib.import_module(module_name)
        if also is not None:
            importlib.import_module(also)
        for value in vars(module).values():
            if isinstance(value, Dialect) and value.name == name:
                return value
        raise ImportError(f"{module_name} defines no Dialect named '{name}'")

    return load


def get_all_dialects() -> dict[str, Callable[[], Dialect]]:
    """Dialect name -> factory (loading every sparsity scheme's registration, which also adds
    their instructions before the `esact` dialect is built)."""
    from esact_cc.sparsity.registry import all_schemes

    dialects: dict[str, Callable[[], Dialect]] = {"builtin": _builtin, "func": _func}
    for name in PROJECT_DIALECT_MODULES:
        dialects[name] = _dialect(name, f"esact_cc.dialects.{name}")
    for scheme in all_schemes():
        if scheme.dialect is not None:
            dialects[scheme.name] = _dialect(scheme.name, scheme.dialect, scheme.lowering)
    return dialects


def make_context(allow_unregistered: bool = False):  # -> xdsl.context.Context
    """A context with every dialect registered (lazily)."""
    from xdsl.context import Context

    ctx = Context(allow_unregistered=allow_unregistered)
    for name, factory in get_all_dialects().items():
        ctx.register_dialect(name, factory)
    return ctx
