"""The SpAtten config file: uniform `insert-spatten` options plus per-layer overrides, as JSON,
in the SPLS config's form (esact_cc/sparsity/spls_options.py) with its own "format".
`esact-tune --sparsity spatten` writes it, `esact-cc --sparsity spatten --spls-config FILE`
reads it.

    {"format": "esact-spatten-config", "version": 1,
     "options": {"token_keep": 0.8}, "layers": {"2": {"token_keep": 0.6}}, "info": {...}}
"""

from __future__ import annotations

from typing import ClassVar

from esact_cc.sparsity.spls_options import SplsConfig


class SpattenConfig(SplsConfig):
    FORMAT: ClassVar[str] = "esact-spatten-config"
    WHAT: ClassVar[str] = "SpAtten config"
    A_WHAT: ClassVar[str] = "a SpAtten config"

    @classmethod
    def options_type(cls) -> type:
        from esact_cc.passes.insert_spatten import SpattenOptions

        return SpattenOptions
