"""All passes of esact-cc, as lazy factories: pass name -> () -> ModulePass subclass.

One table (`PASS_MODULES`) says where each pass lives; a pass module is imported only when
that pass is used, so the tools start fast however many passes exist.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from xdsl.passes import ModulePass

# pass name -> (module under esact_cc.passes, class name)
PASS_MODULES: dict[str, tuple[str, str]] = {
    "lift-transformer": ("lift_transformer", "LiftTransformerPass"),
    "quantize": ("quantize", "QuantizePass"),
    "insert-spls": ("insert_spls", "InsertSplsPass"),
    "insert-sanger": ("insert_sanger", "InsertSangerPass"),
    "lower-to-esact": ("lower_to_esact", "LowerToEsactPass"),
    "esact-select-instructions": ("lower_to_esact", "SelectInstructionsPass"),
    "esact-allocate-buffers": ("allocate_buffers", "AllocateBuffersPass"),
    "esact-order": ("order_instructions", "OrderPass"),
    "schedule": ("schedule", "SchedulePass"),
}


def _factory(module_name: str, class_name: str) -> Callable[[], type[ModulePass]]:
    def load() -> type[ModulePass]:
        module = importlib.import_module(f"esact_cc.passes.{module_name}")
        return getattr(module, class_name)

    return load


def get_all_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """Pass name -> factory returning the pass class."""
    return {name: _factory(module_name, class_name) for name, (module_name, class_name) in PASS_MODULES.items()}
