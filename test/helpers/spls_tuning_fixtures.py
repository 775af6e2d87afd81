"""test/unit/spls_tuning's fixture modules (`small_search_tables`, `test_spls_tuning`: the tiny
classifier writer and the small search tables) loaded by file path for tests in other
directories, so each of them does not carry its own loader."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "unit" / "spls_tuning"


def _load(name: str, prefix: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{prefix}_{name}", FIXTURES_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def load_tuning_fixtures(prefix: str) -> tuple[ModuleType, ModuleType]:
    """(small_search_tables, test_spls_tuning) as modules named `prefix`_*."""
    tables = _load("small_search_tables", prefix)
    sys.modules.setdefault("small_search_tables", tables)  # what the fixtures module imports
    return tables, _load("test_spls_tuning", prefix)
