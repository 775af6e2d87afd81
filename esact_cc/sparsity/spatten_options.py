"""The SpAtten config file: uniform `insert-spatten` options plus per-layer overrides, as JSON,
in the SPLS config's form (esact_cc/sparsity/spls_options.py) with its own "format".
`esact-tune --sparsity spatten` writes it, `esact-cc --sparsity spatten --spls-config FILE`
reads it.

    {"format": "esact-spatten-config", "version": 1,
     "options": {"token_keep": 0.8}, "layers": {"2": {"token_keep": 0.6}}, "info": {...}}
"""

from __future__ import annotations

from esact_cc.sparsity.attention_scheme_config import AttentionSchemeConfig


class SpattenConfig(AttentionSchemeConfig):
    SCHEME = "SpAtten"
    OPTIONS = "esact_cc.passes.insert_spatten:SpattenOptions"
