"""All passes of esact-cc, as lazy factories: pass name -> () -> ModulePass subclass.

One table (`PASS_MODULES`) says where each pass lives; a pass module is imported only when
that pass is used, so the tools start fast however many passes exist. Analyses that run the
interpreter live outside passes/ (passes never import it) and are listed by their full module
path: `calibrate` (esact_cc/tuning/calibrate_pass.py), so esact-opt can run it too. A sparsity
scheme's passes (`insert-spls`, `insert-sanger`, ...) come from its registration
(`SparsityScheme.pass_classes`), asked for by name (`SCHEME_PASSES`) like `calibrate`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from xdsl.passes import ModulePass

# pass name -> (module under esact_cc.passes, or a full dotted path; class name)
PASS_MODULES: dict[str, tuple[str, str]] = {
    "lift-transformer": ("lift_transformer", "LiftTransformerPass"),
    "calibrate": ("esact_cc.tuning.calibrate_pass", "CalibratePass"),
    "quantize": ("quantize", "QuantizePass"),
    "esact-dead-rows": ("dead_rows", "DeadRowsPass"),
    "lower-to-esact": ("lower_to_esact", "LowerToEsactPass"),
    "esact-select-instructions": ("lower_to_esact", "SelectInstructionsPass"),
    "esact-allocate-buffers": ("allocate_buffers", "AllocateBuffersPass"),
    "esact-order": ("order_instructions", "OrderPass"),
    "schedule": ("schedule", "SchedulePass"),
}
SCHEME_PASSES = "esact_cc.sparsity.registry:scheme_passes"
"""() -> {pass name: "module:Class"} of every sparsity scheme's passes."""


def _factory(path: str, class_name: str) -> Callable[[], type[ModulePass]]:
    def load() -> type[ModulePass]:
        return getattr(importlib.import_module(path), class_name)

    return load


def get_all_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """Pass name -> factory returning the pass class."""
    table = {name: _factory(module if "." in module else f"esact_cc.passes.{module}", cls)
             for name, (module, cls) in PASS_MODULES.items()}
    module_name, _, function = SCHEME_PASSES.partition(":")
    for name, reference in getattr(importlib.import_module(module_name), function)().items():
        table[name] = _factory(*reference.split(":"))
    return table
