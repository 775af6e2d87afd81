"""The SPLS config file: uniform `insert-spls` options plus per-layer overrides, as JSON.

`esact-tune` writes it (`SplsConfig.to_json`), `esact-cc --spls-config FILE` reads it. Option
names, types and ranges are those of `passes/insert_spls.py` (`LayerOptions`, checked by
`esact_cc/typed_options.py`); scheme selection and `--sparsity-option` specs are
`esact_cc/sparsity/selection.py`'s.

    {"format": "esact-spls-config", "version": 1,
     "options": {"threshold": 0.95}, "layers": {"0": {"threshold": 2.0}}, "info": {...}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from esact_cc.runtime.bounded_read import CONFIG_FILE_CAP, read_bounded_text
from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.settings import SchemeSettings
from esact_cc.typed_options import (convert_value, dashed, parse_layer_index, python_name,
                                    unknown_name)

CONFIG_FORMAT = "esact-spls-config"
CONFIG_VERSION = 1
CONFIG_KEYS = ("format", "version", "options", "layers", "info")


@dataclass
class SplsConfig(SchemeSettings):
    """Uniform SPLS options and per-layer overrides ('-' option names)."""

    info: dict[str, Any] = field(default_factory=dict)
    """Provenance and measured numbers (written by esact-tune; ignored by esact-cc)."""
    FORMAT: ClassVar[str] = CONFIG_FORMAT
    """The JSON's "format" (another scheme's config subclass names its own and options)."""
    WHAT: ClassVar[str] = "SPLS config"
    A_WHAT: ClassVar[str] = "an SPLS config"

    def __post_init__(self) -> None:
        self.options_class = self.options_type()

    @classmethod
    def options_type(cls) -> type:
        from esact_cc.passes.insert_spls import LayerOptions

        return LayerOptions

    def to_json(self) -> str:
        payload = {
            "format": self.FORMAT,
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
        except RecursionError:
            raise CompileError(f"{where}: JSON nested too deeply") from None
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise CompileError(f"{where}: not {cls.A_WHAT} (\"format\": \"{cls.FORMAT}\" "
                               "missing; write one with esact-tune)")
        if data.get("version") != CONFIG_VERSION:
            raise CompileError(f"{where}: unsupported version {data.get('version')!r} "
                               f"(supported: {CONFIG_VERSION})")
        for key in data:
            if key not in CONFIG_KEYS:
                raise CompileError(f"{where}: {unknown_name('key', key, CONFIG_KEYS)}")
        options, layers = data.get("options", {}), data.get("layers", {})
        if not isinstance(options, dict) or not isinstance(layers, dict):
            raise CompileError(f"{where}: \"options\" and \"layers\" must be objects")
        info = data.get("info") or {}
        if not isinstance(info, dict):
            raise CompileError(f"{where}: \"info\" must be an object")
        config = cls(info=info)
        config.options = config.checked(options, where)
        for index, overrides in layers.items():
            layer = parse_layer_index(index, f"{where}: layers")
            if not isinstance(overrides, dict):
                raise CompileError(f"{where}: layer {layer}: expected an object of options, "
                                   f"got {type(overrides).__name__}")
            config.layers[layer] = config.checked(overrides, f"{where}: layer {layer}")
        return config

    def checked(self, options: dict[str, Any], where: str) -> dict[str, Any]:
        return {dashed(python_name(name)): convert_value(self.options_class, name, value, where)  # type: ignore[arg-type]
                for name, value in options.items()}

    @classmethod
    def load(cls, path: str | Path) -> SplsConfig:
        text = read_bounded_text(path, CONFIG_FILE_CAP, cls.WHAT)
        return cls.from_json(text, f"{cls.WHAT} '{path}'")
