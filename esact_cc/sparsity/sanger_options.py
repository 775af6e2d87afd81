"""The Sanger config file: uniform `insert-sanger` options plus per-layer overrides, as JSON,
in the SPLS config's form (esact_cc/sparsity/spls_options.py) with its own "format" and the
options of `passes/insert_sanger.SangerOptions`. `esact-tune --sparsity sanger` writes it,
`esact-cc --sparsity sanger --spls-config FILE` reads it.

    {"format": "esact-sanger-config", "version": 1,
     "options": {"threshold": 0.02}, "layers": {"2": {"threshold": 0.05}}, "info": {...}}
"""

from __future__ import annotations

from esact_cc.sparsity.attention_scheme_config import AttentionSchemeConfig


class SangerConfig(AttentionSchemeConfig):
    SCHEME = "Sanger"
    OPTIONS = "esact_cc.passes.insert_sanger:SangerOptions"
