"""The option values a compilation gives a sparsity scheme: uniform ones and per-layer overrides.

Values are kept with their '-' names and checked against the scheme's options dataclass when
set (`set_option`, text) and again when turned into pass keyword arguments (`pass_options`), so
settings built in Python are held to the same rules as those typed on a command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from esact_cc.runtime.errors import CompileError
from esact_cc.typed_options import (OptionValue, convert_value, dashed, format_layer_overrides,
                                    parse_assignment, python_name)


@dataclass
class SchemeSettings:
    options: dict[str, OptionValue] = field(default_factory=dict)
    layers: dict[int, dict[str, OptionValue]] = field(default_factory=dict)
    options_class: type | None = field(default=None, kw_only=True)
    """The scheme's options dataclass; None: the scheme takes no options."""

    def set_option(self, spec: str, where: str) -> None:
        """Apply `NAME=VALUE` (every layer) or `LAYER:NAME=VALUE` (one layer)."""
        if self.options_class is None:
            raise CompileError(f"{where}: this sparsity scheme takes no options (got {spec!r})")
        layer, name, value = parse_assignment(spec, where)
        target = self.options if layer is None else self.layers.setdefault(layer, {})
        target[dashed(python_name(name))] = convert_value(self.options_class, name, value, where)

    def pass_options(self) -> dict[str, Any]:
        """Keyword arguments of the scheme's pass: '_' names, `layers` in its text form."""
        if self.options_class is None:
            if self.options or self.layers:
                raise CompileError("this sparsity scheme takes no options")
            return {}
        result: dict[str, Any] = {
            python_name(name): convert_value(self.options_class, name, value, "option")
            for name, value in self.options.items()}
        if any(self.layers.values()):
            result["layers"] = format_layer_overrides(self.options_class, self.layers)
        return result
