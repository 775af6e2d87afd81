"""The config file of an attention-only scheme (Sanger, SpAtten): the SPLS config's JSON form
(esact_cc/sparsity/spls_options.py) with the format, messages and options class derived from
the scheme's name and its pass's options dataclass."""

from __future__ import annotations

import importlib
from typing import ClassVar

from esact_cc.sparsity.spls_options import SplsConfig


class AttentionSchemeConfig(SplsConfig):
    SCHEME: ClassVar[str]
    """The scheme's name as messages spell it; its format is "esact-<lower-case name>-config"."""
    OPTIONS: ClassVar[str]
    """"module:Class" of the pass's options dataclass, imported on use (the compiler passes
    need not load to read a config's name)."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.FORMAT = f"esact-{cls.SCHEME.lower()}-config"
        cls.WHAT = f"{cls.SCHEME} config"
        cls.A_WHAT = f"a {cls.SCHEME} config"

    @classmethod
    def options_type(cls) -> type:
        module, name = cls.OPTIONS.split(":")
        return getattr(importlib.import_module(module), name)
