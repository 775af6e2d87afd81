"""The compilation pipeline as one table of named stages.

`STAGES` lists the stages in order; compiling to stage N imports the model (stage `onnx`) and
runs the passes of every stage up to N. A stage says which passes take the module from the
previous stage to it, built from the `CompileOptions` (so stages can read CLI options such as
`--hw` or `--sparsity`), which of those options it reads and their types (`Stage.options`: the
one list `api.compile` and esact-cc check option names against), and optionally how its result
is written when it is the final output (default: IR text with its weights beside it). Later
stages are added by appending to `STAGES`. Passes are looked up by name in the lazy pass
registry (passes/registry.py); `make_pass` rejects options the pass does not have.
`compile_model` constructs every pass that reads weights with the module's weight store
(its `store` field, passes/weight_store_pass.py).

The stage `sparsity` was called `spls` before sparsity schemes became plugins; `spls` is still
accepted as its name (`STAGE_ALIASES`), e.g. `esact-cc --compile-to spls`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esact_cc.collector_pause import collector_paused
from esact_cc.runtime.errors import CompileError
from esact_cc.typed_options import unknown_name

if TYPE_CHECKING:  # onnx and xdsl take seconds to import: not for `esact-cc --help`
    from onnx import ModelProto
    from xdsl.dialects.builtin import ModuleOp
    from xdsl.passes import ModulePass

    from esact_cc.weight_store import WeightStore


@dataclass(frozen=True)
class CompileOptions:
    """Everything a compilation is parameterised by."""

    input_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    debug_lift: bool = False
    """Have lift-transformer report, for each near miss, which check failed."""
    strict_lift: bool = False
    """Any attention or linear left on the host is an error (esact-cc --strict-lift)."""
    verify_each: bool = False
    """Verify the module after every pass (esact-cc --verify-each, MLIR's spelling); by default
    once per stage, as verification after every pass was about 30% of a BERT-base compile."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Options of later stages, by name: each must be one a stage declares (`Stage.options`)."""


PassBuilder = Callable[[CompileOptions], "list[ModulePass]"]
OptionTypes = tuple[type, ...]
OutputWriter = Callable[["ModuleOp", "WeightStore", Path], None]


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    passes: PassBuilder
    """The passes from the previous stage's IR to this stage's."""
    write_output: OutputWriter | None = None
    """How `-o FILE` is written when this is the final stage; None: IR text + weights."""
    options: Mapping[str, OptionTypes] = field(default_factory=dict)
    """The `CompileOptions.extra` keys the stage reads -> the types each accepts."""


PathOption = (str, os.PathLike, type(None))
SpecsOption = (str, list, tuple, type(None))


def pass_option_names(pass_class: type[ModulePass]) -> list[str]:
    """The options a pass takes by name (its store is data, given by the pipeline)."""
    from esact_cc.passes.weight_store_pass import STORE_FIELD

    return [f.name for f in dataclasses.fields(pass_class) if f.init and f.name != STORE_FIELD]


def make_pass(name: str, store: WeightStore | None = None, **options: Any) -> ModulePass:
    """Instantiate a registered pass (with `store`, if it reads weights); an option it has no
    field for is an error."""
    from esact_cc.passes.weight_store_pass import with_store

    from esact_cc.passes.registry import get_all_passes

    passes = get_all_passes()
    if name not in passes:
        raise CompileError(f"unknown pass '{name}' (passes: {', '.join(passes)})")
    pass_class = passes[name]()
    valid = pass_option_names(pass_class)
    for key in options:
        if key not in valid:
            raise CompileError(f"{name}: {unknown_name('option', key, valid)}")
    module_pass = pass_class(**options)
    return module_pass if store is None else with_store(module_pass, store)


def _no_passes(options: CompileOptions) -> list[ModulePass]:
    return []


def _lift_passes(options: CompileOptions) -> list[ModulePass]:
    from esact_cc.lift_summary import StrictLiftCheck

    lift = make_pass("lift-transformer", debug=options.debug_lift)
    return [lift, StrictLiftCheck()] if options.strict_lift else [lift]


def _quantize_passes(options: CompileOptions) -> list[ModulePass]:
    # calibrate is the analysis quantize reads (esact_cc/tuning/calibrate_pass.py)
    # esact-dead-rows after quantize: the calibrated ranges still cover every row
    # calibrate records the attention probability peaks only for quantize's tensor scales
    dead_rows = [] if options.extra.get("dead_rows") is False else [make_pass("esact-dead-rows")]
    quantize = make_pass("quantize", **_given(options.extra, "activation_scales",
                                              "bias_correction", "probability_scales"))
    return [make_pass("calibrate", calibration_data=options.extra.get("calibration_data"),
                      synthetic_samples=options.extra.get("synthetic_samples"),
                      probability_peaks=quantize.probability_scales == "tensor"),
            quantize, *dead_rows]


def _given(extra: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """The options among `names` the caller set (the pass's own defaults for the rest)."""
    return {name: extra[name] for name in names if extra.get(name) is not None}


def _sparsity_passes(options: CompileOptions) -> list[ModulePass]:
    from esact_cc.sparsity.selection import select_scheme

    from esact_cc.lift_summary import SchemeTookLayersCheck

    scheme, settings = select_scheme(options.extra)
    return [*scheme.passes(settings), SchemeTookLayersCheck(scheme.name)]


def _lower_passes(options: CompileOptions) -> list[ModulePass]:
    # The lowering's named steps (passes/lower_to_esact.py), so each one's IR can be printed.
    hw = options.extra.get("hw")
    return [make_pass("esact-select-instructions", hw=hw,
                      spls_chunk_rows=options.extra.get("spls_chunk_rows"),
                      keep_on_chip=options.extra.get("keep_on_chip") is not False),
            make_pass("esact-allocate-buffers", hw=hw), make_pass("esact-order", hw=hw),
            make_pass("schedule")]


def _write_esb(module: ModuleOp, store: WeightStore, path: Path) -> None:
    from esact_cc.backend.emit_esb import emit_esb

    emit_esb(module, path, store)


STAGES: list[Stage] = [
    Stage("onnx", "ONNX graph imported 1:1 into the onnx dialect", _no_passes),
    Stage("transformer", "Transformer blocks lifted into the transformer dialect", _lift_passes),
    Stage("quantized", "calibrated ranges recorded on the GEMM ops, then their INT8 forms; "
          "rows no output reads removed (esact-dead-rows, off with dead_rows=False)",
          _quantize_passes,
          options={"calibration_data": PathOption,
                   "synthetic_samples": (int, type(None)),
                   "dead_rows": (bool, type(None)),
                   "activation_scales": (str, type(None)),
                   "bias_correction": (str, type(None)),
                   "probability_scales": (str, type(None))}),
    Stage("sparsity", "the --sparsity scheme's prediction and masked ops (unchanged IR when "
          "dense)", _sparsity_passes,
          options={"sparsity": (str, type(None)), "sparsity_option": SpecsOption,
                   "spls_option": SpecsOption, "spls_config": PathOption}),
    Stage("esact", "ESACT instructions, buffers and dependency tokens (esact dialect)",
          _lower_passes, options={"hw": PathOption, "spls_chunk_rows": (int, type(None)),
                                  "keep_on_chip": (bool, type(None))}),
    Stage("esb", "the .esb binary (-o FILE.esb)", _no_passes, _write_esb),
]
"""The stages in order. Append to add one."""

STAGE_ALIASES: dict[str, str] = {"spls": "sparsity"}
"""Former stage names, still accepted."""


def stage_names(with_aliases: bool = False) -> list[str]:
    return [stage.name for stage in STAGES] + (list(STAGE_ALIASES) if with_aliases else [])


def stage_named(name: str) -> Stage:
    name = STAGE_ALIASES.get(name, name)
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise CompileError(f"unknown stage '{name}' (stages: {', '.join(stage_names())})")


def option_types() -> dict[str, OptionTypes]:
    """Every compile option a stage reads -> the types it accepts."""
    return {name: types for stage in STAGES for name, types in stage.options.items()}


def check_compile_options(extra: Mapping[str, Any], stage: str) -> None:
    """Unknown names, wrong types and options of stages after `stage` (which would not run)
    are one-line errors: an ignored option is a wrong result."""
    types = option_types()
    last = stage_names().index(stage_named(stage).name)
    for name, value in extra.items():
        if name not in types:
            raise CompileError(unknown_name("compile option", name, types))
        if (isinstance(value, bool) and bool not in types[name]) or not isinstance(value, types[name]):
            wanted = " or ".join("None" if t is type(None) else t.__name__ for t in types[name])
            raise CompileError(f"compile option {name}: expected {wanted}, got {value!r}")
    for later in STAGES[last + 1:]:
        given = [name for name in later.options if extra.get(name) not in (None, [], ())]
        if given:
            raise CompileError(f"compile option {given[0]} is used by stage '{later.name}', "
                               f"after the last stage run ('{STAGES[last].name}')")


StageCallback = Callable[[str, "ModuleOp", "WeightStore"], None]
PassCallback = Callable[["ModulePass", "ModuleOp"], None]


@collector_paused()  # esact_cc/collector_pause.py: the IR is all reference cycles
def compile_model(
    model: str | os.PathLike[str] | ModelProto,
    stage: str,
    options: CompileOptions = CompileOptions(),
    on_stage: StageCallback | None = None,
    on_pass: PassCallback | None = None,
    before_pass: PassCallback | None = None,
) -> tuple[ModuleOp, WeightStore]:
    """Import `model` and run the pipeline up to `stage`; callbacks see each stage and pass."""
    from esact_cc.frontend.onnx_frontend import import_onnx

    check_compile_options(options.extra, stage)
    module, store = import_onnx(model, options.input_shapes)
    release_after = "quantized" if stage_names().index(stage_named(stage).name) > \
        stage_names().index("quantized") else None

    def after_stage(name: str, module: ModuleOp, store: WeightStore) -> None:
        if on_stage is not None:
            on_stage(name, module, store)
        if name == release_after:  # this store is ours alone: free the FP32 weights
            from esact_cc.weight_release import release_unreferenced_weights

            release_unreferenced_weights(module, store)

    continue_pipeline(module, store, None, stage, options, after_stage, on_pass, before_pass)
    return module, store


@collector_paused()
def continue_pipeline(module: ModuleOp, store: WeightStore, done: str | None, stage: str,
                      options: CompileOptions = CompileOptions(),
                      on_stage: StageCallback | None = None, on_pass: PassCallback | None = None,
                      before_pass: PassCallback | None = None) -> None:
    """Run the stages after `done` (None: from the first) up to `stage` on `module` in place."""
    from esact_cc.dialect_registry import make_context
    from esact_cc.passes.weight_store_pass import with_store_all

    first = 0 if done is None else stage_names().index(stage_named(done).name) + 1
    target = stage_names().index(stage_named(stage).name)
    ctx = make_context()
    for current in STAGES[first: target + 1]:
        stage_passes = with_store_all(current.passes(options), store)
        for module_pass in stage_passes:
            if before_pass is not None:
                before_pass(module_pass, module)
            module_pass.apply(ctx, module)
            if options.verify_each:
                module.verify()
            if on_pass is not None:
                on_pass(module_pass, module)
        if stage_passes and not options.verify_each:
            module.verify()
        if on_stage is not None:
            on_stage(current.name, module, store)
