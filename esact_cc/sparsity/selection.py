"""Which sparsity scheme a compilation uses, with which settings, from its options.

Options (`CompileOptions.extra`, i.e. esact-cc's flags and `api.compile`'s keywords):
- `sparsity`: a scheme name (`registry.scheme_names()`); default `dense`, or `spls` when SPLS
  options or an SPLS config are given;
- `sparsity_option`: `[LAYER:]NAME=VALUE` specs for the scheme's options (a string or a list);
  `spls_option` is its older name, still accepted (not both);
- `spls_config`: the scheme's config file (`esact-tune`'s output; `SparsityScheme.config`),
  applied before the specs.
Options given to a scheme that takes none, or an SPLS config with another scheme, are errors:
a silently ignored option is a wrong result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.registry import SparsityScheme, load_attribute, scheme_configs, scheme_named
from esact_cc.sparsity.settings import SchemeSettings

OPTION_KEYS = ("sparsity", "sparsity_option", "spls_option", "spls_config")
"""The compile options this module reads."""


def _specs(extra: Mapping[str, Any]) -> list[str]:
    given = [key for key in ("sparsity_option", "spls_option") if extra.get(key)]
    if len(given) > 1:
        raise CompileError("give sparsity_option or its older name spls_option, not both")
    specs: str | Sequence[str] = extra.get(given[0]) if given else []
    specs = [specs] if isinstance(specs, str) else list(specs)
    bad = [s for s in specs if not isinstance(s, str)]
    if bad:
        raise CompileError(f"{given[0]}: expected NAME=VALUE strings, got {bad[0]!r}")
    return specs


def select_scheme(extra: Mapping[str, Any]) -> tuple[SparsityScheme, SchemeSettings]:
    """The scheme and settings the options ask for (checked: bad options fail here)."""
    specs = _specs(extra)
    config_path = extra.get("spls_config")
    name = extra.get("sparsity")
    if name is None:
        name = "spls" if specs or config_path else "dense"
    if not isinstance(name, str):
        raise CompileError(f"--sparsity: expected a scheme name, got {name!r}")
    scheme = scheme_named(name)
    if config_path and scheme.config is None:
        raise CompileError(f"--spls-config needs --sparsity {' or '.join(scheme_configs())} "
                           f"(given --sparsity {name})")
    if scheme.options is None and specs:
        raise CompileError(f"--sparsity-option: scheme '{name}' takes no options "
                           f"(given {specs[0]!r})")
    if config_path:
        settings: SchemeSettings = load_attribute(scheme.config).load(config_path)
    else:
        settings = SchemeSettings(options_class=scheme.options_class())
    for spec in specs:
        settings.set_option(spec, "--sparsity-option")
    return scheme, settings
