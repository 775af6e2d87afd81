"""SPLS settings of a compilation: the one bridge from user input to the `insert-spls` options.

Sources, applied in this order (later wins):
1. `--spls-config FILE.json`: the file `esact-tune` writes (`SplsConfig.to_json`), uniform
   options plus per-layer overrides;
2. `--spls-option NAME=VALUE` (uniform) and `--spls-option LAYER:NAME=VALUE` (one layer),
   repeatable; NAME is an `insert-spls` option (`hlog-bits`, `k-ratio`, `window`, `threshold`,
   `similarity`, `attention`, `pam-scale`).
`--sparsity dense|spls` selects the scheme; giving SPLS options or a config implies `spls`, and
giving them with `--sparsity dense` is an error (a silently ignored option is a wrong result).

Option names, types and the per-layer text syntax are those of `passes/insert_spls.py`
(`LayerOptions`, `parse_layer_overrides`): this module only collects and converts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from esact_cc.runtime.errors import CompileError

SPARSITY_SCHEMES = ("dense", "spls")
CONFIG_FORMAT = "esact-spls-config"
CONFIG_VERSION = 1

OptionValue = int | float | str


def option_types() -> dict[str, type]:
    """`insert-spls` per-layer option names ('-' spelling) -> Python type."""
    from esact_cc.passes.insert_spls import LayerOptions

    converters = {"int": int, "float": float, "str": str}
    return {f.name.replace("_", "-"): converters[str(f.type)] for f in fields(LayerOptions)}


def convert_option(name: str, value: Any, where: str) -> OptionValue:
    """`value` (text or JSON scalar) as the type of option `name`; one-line errors."""
    types = option_types()
    key = name.strip().replace("_", "-")
    if key not in types:
        raise CompileError(f"{where}: unknown SPLS option '{name}' (options: {', '.join(types)})")
    wanted = types[key]
    if isinstance(value, bool) or (wanted is str and not isinstance(value, str)):
        raise CompileError(f"{where}: {key} must be a {wanted.__name__}, got {value!r}")
    try:
        converted = wanted(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise CompileError(f"{where}: {key} has a bad value {value!r} "
                           f"(expected {wanted.__name__})") from None
    if wanted is int and isinstance(value, float) and value != converted:
        raise CompileError(f"{where}: {key} must be an integer, got {value!r}")
    if isinstance(converted, float) and not math.isfinite(converted):
        raise CompileError(f"{where}: {key} must be finite, got {value!r}")
    return converted


@dataclass
class SplsConfig:
    """Uniform SPLS options and per-layer overrides ('-' option names)."""

    options: dict[str, OptionValue] = field(default_factory=dict)
    layers: dict[int, dict[str, OptionValue]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    """Provenance and measured numbers (written by esact-tune; ignored by esact-cc)."""

    def set_option(self, spec: str, where: str = "--spls-option") -> None:
        """Apply `NAME=VALUE` or `LAYER:NAME=VALUE`."""
        target, text = self.options, spec
        head, colon, rest = spec.partition(":")
        if colon and "=" not in head:
            if not head.strip().isdigit():
                raise CompileError(f"{where}: bad layer index '{head}' in '{spec}' "
                                   "(expected LAYER:NAME=VALUE)")
            target, text = self.layers.setdefault(int(head), {}), rest
        name, eq, value = text.partition("=")
        if not eq or not name.strip():
            raise CompileError(f"{where}: bad '{spec}' (expected NAME=VALUE or LAYER:NAME=VALUE)")
        target[name.strip().replace("_", "-")] = convert_option(name, value, where)

    def pass_options(self) -> dict[str, Any]:
        """Keyword arguments of `InsertSplsPass` ('_' field names, `layers` as its text form)."""
        result: dict[str, Any] = {k.replace("-", "_"): v for k, v in self.options.items()}
        if self.layers:
            result["layers"] = format_layers(self.layers)
        return result

    def to_json(self) -> str:
        payload = {
            "format": CONFIG_FORMAT,
            "version": CONFIG_VERSION,
            "options": dict(sorted(self.options.items())),
            "layers": {str(i): dict(sorted(o.items())) for i, o in sorted(self.layers.items())},
            **({"info": self.info} if self.info else {}),
        }
        return json.dumps(payload, indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> SplsConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CompileError(f"{where}: not JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
            raise CompileError(f"{where}: not an SPLS config (\"format\": \"{CONFIG_FORMAT}\" "
                               "missing; write one with esact-tune)")
        if data.get("version") != CONFIG_VERSION:
            raise CompileError(f"{where}: unsupported version {data.get('version')!r} "
                               f"(supported: {CONFIG_VERSION})")
        unknown = sorted(set(data) - {"format", "version", "options", "layers", "info"})
        if unknown:
            raise CompileError(f"{where}: unknown key(s) {', '.join(unknown)}")
        options, layers = data.get("options", {}), data.get("layers", {})
        if not isinstance(options, dict) or not isinstance(layers, dict):
            raise CompileError(f"{where}: \"options\" and \"layers\" must be objects")
        config = cls(info=data.get("info") or {})
        for name, value in options.items():
            config.options[name.replace("_", "-")] = convert_option(name, value, where)
        for index, overrides in layers.items():
            if not str(index).isdigit() or not isinstance(overrides, dict):
                raise CompileError(f"{where}: layers must map layer indices to option objects, "
                                   f"got {index!r}")
            config.layers[int(index)] = {
                n.replace("_", "-"): convert_option(n, v, f"{where}: layer {index}")
                for n, v in overrides.items()}
        return config

    @classmethod
    def load(cls, path: str | Path) -> SplsConfig:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise CompileError(f"cannot read SPLS config '{path}': {e.strerror}") from None
        return cls.from_json(text, f"SPLS config '{path}'")


def format_layers(layers: Mapping[int, Mapping[str, OptionValue]]) -> str:
    """{0: {"threshold": 2.0}} -> "0:threshold=2.0" (the `layers` option of insert-spls)."""
    return ";".join(f"{index}:" + ",".join(f"{name}={value!r}" if isinstance(value, float)
                                            else f"{name}={value}"
                                            for name, value in sorted(options.items()))
                    for index, options in sorted(layers.items()) if options)


def settings_from(extra: Mapping[str, Any]) -> SplsConfig | None:
    """The SPLS settings a compilation asks for (None: dense), from `CompileOptions.extra`:
    `sparsity` ("dense" | "spls" | None), `spls_config` (path), `spls_option` (list of specs)."""
    sparsity = extra.get("sparsity")
    config_path = extra.get("spls_config")
    specs: Sequence[str] = extra.get("spls_option") or []
    if isinstance(specs, str):
        specs = [specs]
    if sparsity is not None and sparsity not in SPARSITY_SCHEMES:
        raise CompileError(f"unknown sparsity scheme '{sparsity}' "
                           f"(schemes: {', '.join(SPARSITY_SCHEMES)})")
    if sparsity == "dense":
        if config_path or specs:
            raise CompileError("--spls-option / --spls-config need --sparsity spls "
                               "(they were given with --sparsity dense)")
        return None
    if sparsity is None and not config_path and not specs:
        return None
    config = SplsConfig.load(config_path) if config_path else SplsConfig()
    for spec in specs:
        config.set_option(spec)
    return config
