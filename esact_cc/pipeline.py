"""The compilation pipeline as one table of named stages.

`STAGES` lists the stages in order; compiling to stage N imports the model (stage `onnx`) and
runs the passes of every stage up to N. A stage says which passes take the module from the
previous stage to it, built from the `CompileOptions` (so stages can read CLI options such as
`--hw` or `--sparsity`), and optionally how its result is written when it is the final output
(default: IR text with its weights beside it). Later stages are added by appending to `STAGES`.
Passes are looked up by name in the lazy pass registry (passes/registry.py).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnx import ModelProto
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from esact_cc.runtime.errors import CompileError
from esact_cc.weight_store import WeightStore


@dataclass(frozen=True)
class CompileOptions:
    """Everything a compilation is parameterised by."""

    input_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    debug_lift: bool = False
    """Have lift-transformer report, for each near miss, which check failed."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Options of later stages, by name (the CLI puts every parsed argument here)."""


PassBuilder = Callable[[CompileOptions], list[ModulePass]]
OutputWriter = Callable[[ModuleOp, WeightStore, Path], None]


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    passes: PassBuilder
    """The passes from the previous stage's IR to this stage's."""
    write_output: OutputWriter | None = None
    """How `-o FILE` is written when this is the final stage; None: IR text + weights."""


def make_pass(name: str, **options: Any) -> ModulePass:
    """Instantiate a registered pass; options the pass class has no field for are ignored."""
    from esact_cc.passes.registry import get_all_passes

    passes = get_all_passes()
    if name not in passes:
        raise CompileError(f"unknown pass '{name}' (passes: {', '.join(passes)})")
    pass_class = passes[name]()
    fields = {f.name for f in dataclasses.fields(pass_class)} if dataclasses.is_dataclass(pass_class) else set()
    return pass_class(**{k: v for k, v in options.items() if k in fields})


def _no_passes(options: CompileOptions) -> list[ModulePass]:
    return []


def _lift_passes(options: CompileOptions) -> list[ModulePass]:
    return [make_pass("lift-transformer", debug=options.debug_lift)]


def _quantize_passes(options: CompileOptions) -> list[ModulePass]:
    return [make_pass("quantize", calibration_data=options.extra.get("calibration_data"))]


def _spls_passes(options: CompileOptions) -> list[ModulePass]:
    from esact_cc.spls_options import settings_from

    settings = settings_from(options.extra)
    return [] if settings is None else [make_pass("insert-spls", **settings.pass_options())]


def _lower_passes(options: CompileOptions) -> list[ModulePass]:
    return [make_pass("lower-to-esact", hw=options.extra.get("hw"),
                      spls_chunk_rows=options.extra.get("spls_chunk_rows")),
            make_pass("schedule")]


def _write_esb(module: ModuleOp, store: WeightStore, path: Path) -> None:
    from esact_cc.emit_esb import emit_esb

    emit_esb(module, path, store)


STAGES: list[Stage] = [
    Stage("onnx", "ONNX graph imported 1:1 into the onnx dialect", _no_passes),
    Stage("transformer", "Transformer blocks lifted into the transformer dialect", _lift_passes),
    Stage("quantized", "INT8 post-training quantization (quantized dialect)", _quantize_passes),
    Stage("spls", "SPLS prediction and masked ops (--sparsity spls; unchanged IR when dense)",
          _spls_passes),
    Stage("esact", "ESACT instructions, buffers and dependency tokens (esact dialect)", _lower_passes),
    Stage("esb", "the .esb binary (-o FILE.esb)", _no_passes, _write_esb),
]
"""The stages in order. Append to add one."""


def stage_names() -> list[str]:
    return [stage.name for stage in STAGES]


def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise CompileError(f"unknown stage '{name}' (stages: {', '.join(stage_names())})")


StageCallback = Callable[[str, ModuleOp, WeightStore], None]
PassCallback = Callable[[ModulePass, ModuleOp], None]


def compile_model(
    model: str | os.PathLike[str] | ModelProto,
    stage: str,
    options: CompileOptions = CompileOptions(),
    on_stage: StageCallback | None = None,
    on_pass: PassCallback | None = None,
) -> tuple[ModuleOp, WeightStore]:
    """Import `model` and run the pipeline up to `stage`; callbacks see each stage and pass."""
    from esact_cc.dialect_registry import make_context
    from esact_cc.onnx_frontend import import_onnx

    target = stage_names().index(stage_named(stage).name)
    module, store = import_onnx(model, options.input_shapes)
    ctx = make_context()
    for current in STAGES[: target + 1]:
        for module_pass in current.passes(options):
            module_pass.apply(ctx, module)
            module.verify()
            if on_pass is not None:
                on_pass(module_pass, module)
        if on_stage is not None:
            on_stage(current.name, module, store)
    return module, store
