"""Python API: compile an ONNX model to a stage, print/save/load its IR, run it.

    from esact_cc import api
    compiled = api.compile("model.onnx", stage="transformer", input_shapes={"input_ids": (1, 128)})
    outputs = compiled.run({"input_ids": ids})      # reference interpreter, named outputs
    compiled.save_ir("model.mlir")                    # + model.npz beside it
    again = api.load_ir("model.mlir")

    binary = api.compile("model.onnx", stage="esb", calibration_data="calib.npz", hw="default")
    binary.save_esb("model.esb")                      # byte-identical on recompile
    result = binary.simulate({"input_ids": ids})      # functional + timing model
    result.outputs, result.report["total"]["cycles"]
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser
from xdsl.printer import Printer

from esact_cc.runtime.atomic_write import atomic_write_text
from esact_cc.pipeline import CompileOptions, compile_model
from esact_cc.runtime.errors import CompileError
from esact_cc.weight_store import WeightStore, bind_to_ir_file

if TYPE_CHECKING:  # importing onnx costs 0.7 s of CPU: not for a compile of an IR file
    from onnx import ModelProto


def ir_text(module: ModuleOp) -> str:
    """The module's IR as text, with locations (deterministic)."""
    stream = io.StringIO()
    Printer(stream=stream, print_debuginfo=True).print_op(module)
    stream.write("\n")
    return stream.getvalue()


def write_ir(module: ModuleOp, store: WeightStore, path: str | os.PathLike[str]) -> None:
    """Write the IR to `path` and its weights beside it (`esact.weight_store` links them)."""
    bind_to_ir_file(module, store, path)
    atomic_write_text(path, ir_text(module))


def parse_ir(text: str, name: str = "<ir>") -> ModuleOp:
    from esact_cc.dialect_registry import make_context

    try:
        return Parser(make_context(), text, name).parse_module()
    except Exception as e:
        raise CompileError(f"cannot parse IR {name}: {' '.join(str(e).split())}") from None


@dataclass
class CompiledModel:
    module: ModuleOp
    store: WeightStore
    stage: str

    def ir(self) -> str:
        return ir_text(self.module)

    def save_ir(self, path: str | os.PathLike[str]) -> None:
        write_ir(self.module, self.store, path)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the reference interpreter on named inputs; named outputs. (A module lowered to
        the `esact` stage runs on the hardware model's functional model instead.)"""
        from esact_cc.interpreter.reference_interpreter import run_module

        if self.is_program():
            return self.simulate(inputs).outputs
        return run_module(self.module, inputs, self.store)

    # --- esact / esb stage: the program ---------------------------------------------------
    def is_program(self) -> bool:
        """True once the module is an `esact` program (after lower-to-esact)."""
        from esact_cc.backend.emit_esb import CONFIG_HASH_ATTR

        return CONFIG_HASH_ATTR in self.module.attributes

    def program(self):  # -> esact_cc.runtime.esb.Program
        """The runtime Program (instructions, DRAM image, I/O, host segments, debug map)."""
        from esact_cc.backend.emit_esb import program_from_module

        return program_from_module(self.module, self.store)

    def save_esb(self, path: str | os.PathLike[str]) -> None:
        """Write the .esb binary atomically."""
        from esact_cc.backend.emit_esb import emit_esb

        emit_esb(self.module, path, self.store)

    def simulate(self, inputs: Mapping[str, np.ndarray], hw: str | None = None):  # -> RunResult
        """Run the program on the hardware model (functional + timing + energy); `hw` is the
        config (default: the default config). Returns outputs and the report."""
        from esact_cc.runtime.hw_config import resolve_config
        from esact_cc.runtime.run_program import run_program

        return run_program(self.program(), inputs, resolve_config(hw))


def compile(
    model: str | os.PathLike[str] | ModelProto,
    stage: str = "transformer",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    dump_ir_dir: str | os.PathLike[str] | None = None,
    debug_lift: bool = False,
    **extra: Any,
) -> CompiledModel:
    """Compile an ONNX model (path or ModelProto) to `stage`.

    `dump_ir_dir` receives one IR file per stage (`<n>-<stage>.mlir`, weights beside them);
    `extra` holds later stages' options (e.g. hw=..., sparsity=..., sparsity_option=[...]):
    each must be one a stage declares (`pipeline.option_types()`), of its type, and read by a
    stage up to `stage`, else a `CompileError` names it (and the nearest valid name).
    """
    options = CompileOptions(input_shapes=dict(input_shapes or {}), debug_lift=debug_lift, extra=extra)
    on_stage = None
    if dump_ir_dir is not None:
        dump_dir = Path(dump_ir_dir)
        counter = iter(range(1, 1000))

        def on_stage(name: str, module: ModuleOp, store: WeightStore) -> None:
            write_ir(module, store, dump_dir / f"{next(counter)}-{name}.mlir")

    module, store = compile_model(model, stage, options, on_stage=on_stage)
    return CompiledModel(module, store, stage)


def load_ir(path: str | os.PathLike[str]) -> CompiledModel:
    """Parse an IR file (`-`: stdin) with its weights: inline (MLIR `dialect_resources`) or
    the `.npz` its `esact.weight_store` names (esact_cc/ir_files.py); the stage is the one its
    dialects show."""
    from esact_cc.ir_files import detect_stage, read_ir

    module, store = read_ir(path)
    return CompiledModel(module, store, stage=detect_stage(module))


def run(
    model: str | os.PathLike[str] | ModelProto,
    inputs: Mapping[str, np.ndarray],
    stage: str = "transformer",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """Compile to `stage` (input shapes default to the given inputs' shapes) and interpret."""
    shapes = dict(input_shapes or {name: np.shape(v) for name, v in inputs.items()})
    return compile(model, stage, shapes).run(inputs)
