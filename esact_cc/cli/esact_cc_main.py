"""`esact-cc`: compile an ONNX model, or IR of any stage, to a later stage; write, dump, run it.

    esact-cc MODEL.onnx|IR.mlir|- [-o OUT.esb|OUT.mlir|-] [--compile-to STAGE]
        [--input-shape NAME=1x128 ...] [--dim SYMBOL=SIZE ...]
        [--dump-ir-dir DIR] [--mlir-print-ir-after-all] [--mlir-print-ir-before/after=PASS]
        [--mlir-print-ir-tree-dir DIR] [--debug-lift]
        [--run --input FILE.npz|NAME=FILE.npy|NAME=FILE.npz[:ARRAY] ... --output-dir DIR]
        [--hw CONFIG] [--calibration-data FILE.npz|NAME=FILE.npz[:ARRAY]]
        [--sparsity SCHEME] [--sparsity-option [LAYER:]NAME=VALUE ...] [--spls-config FILE.json]

As iree-compile: an `.mlir` input (or `-`, IR on stdin) continues from the stage its dialects
show (ir_files.detect_stage); the output kind follows `--compile-to`, else `-o`'s extension
(`.esb` a binary, `.mlir` IR of the last IR stage), and a conflict between them is an error.
Without `-o` (or with `-o -`) the output goes to stdout: IR with its weights inline, a binary
only when stdout is not a terminal. Stages come from `esact_cc.pipeline.STAGES`. Arguments are
declared by the functions in `ARGUMENT_GROUPS`; every parsed argument a stage declares
(`Stage.options`) reaches the pipeline as `CompileOptions.extra[<dest>]`.
Errors: `esact-cc: error: <one line>` on stderr, exit 2 for a bad command line, 1 otherwise
(runtime/cli/user_errors.py); output paths are checked first (none may be an input), and
outputs are written only after everything succeeded, each atomically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from esact_cc.runtime.cli.conventions import STDOUT, is_stdout, tool_parser
from esact_cc.runtime.cli.output_paths import (
    check_output_dir,
    check_output_file,
    output_array_paths,
    refuse_overwriting_inputs,
)
from esact_cc.runtime.cli.user_errors import exit_code_of
from esact_cc.runtime.errors import CommandLineError
from esact_cc.runtime.thread_policy import limit_blas_threads

PROG = "esact-cc"
BINARY_SUFFIX, IR_SUFFIX = ".esb", ".mlir"
BINARY_STAGE = "esb"
LAST_IR_STAGE = "esact"


def _add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    from esact_cc.cli.shape_arguments import add_shape_arguments
    from esact_cc.pipeline import stage_names

    parser.add_argument("model", metavar="INPUT",
                        help="ONNX model, or IR (.mlir, or '-' for IR on stdin) of any stage")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="output: FILE.esb (binary) or FILE.mlir (IR); '-' or none: stdout")
    parser.add_argument(
        "--compile-to", default=None, choices=stage_names(with_aliases=True), metavar="STAGE",
        help=f"last stage to run: {', '.join(stage_names())} (default: from -o's extension, "
        f"else {BINARY_STAGE}; spls: the former name of sparsity)",
    )
    add_shape_arguments(parser)


def _add_debug_arguments(parser: argparse.ArgumentParser) -> None:
    from esact_cc.cli.ir_printing import add_ir_printing_arguments
    from esact_cc.cli.pass_timing import add_timing_argument

    parser.add_argument("--dump-ir-dir", metavar="DIR", help="write the IR after every stage to DIR")
    add_ir_printing_arguments(parser, "--print-ir-after-all")
    add_timing_argument(parser)
    parser.add_argument(
        "--debug-lift", action="store_true",
        help="report which check failed for every pattern lift-transformer did not lift",
    )
    parser.add_argument(
        "--strict-lift", action="store_true",
        help="make any attention or linear left on the host (not lifted) an error",
    )
    parser.add_argument(
        "--verify-each", action="store_true",
        help="verify the IR after every pass (default: once per stage)",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", action="store_true", help="run the compiled IR on the reference interpreter"
    )
    parser.add_argument(
        "--input", action="append", default=[], metavar="BINDING",
        help="input values: FILE.npz (arrays by input name), NAME=FILE.npy, NAME=FILE.npz "
        "or NAME=FILE.npz:ARRAY (repeatable)",
    )
    parser.add_argument("--output-dir", metavar="DIR", help="where --run writes <output>.npy")


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hw", metavar="CONFIG", help="hardware config: a TOML file or a bundled config name (default: default)"
    )
    parser.add_argument(
        "--keep-on-chip", action=argparse.BooleanOptionalAction, default=None,
        help="keep an op's FP32 result in VBUF for the ops reading it, where it fits, instead "
        "of a STORE and LOADs through DRAM (the default; docs/design.md section 4.1); "
        "--no-keep-on-chip sends every result through DRAM",
    )
    parser.add_argument(
        "--calibration-data", metavar="BINDING",
        help="INT8 calibration inputs, samples along axis 0: FILE.npz (arrays by input name, "
        "or its one array for a one-input model), NAME=FILE.npz[:ARRAY] or NAME=FILE.npy",
    )
    parser.add_argument(
        "--synthetic-samples", metavar="N", type=int, default=None,
        help="without --calibration-data: how many synthetic samples from the model's input "
        "domain set the INT8 ranges (default: as many as cover a budget of activation rows, at "
        "most 8: 8 at 128 tokens, 2 at 512; esact_cc/tuning/synthetic_calibration.py)",
    )
    parser.add_argument(
        "--activation-scales", choices=("tensor", "token"), default=None,
        help="INT8 scales of linear inputs: tensor (calibrated, one per tensor or channel "
        "group) or token (one per row, computed by the SFU at run time; the default)",
    )
    parser.add_argument(
        "--probability-scales", choices=("row", "tensor"), default=None,
        help="INT8 scales of attention probabilities: row (one per query row, from its largest "
        "probability, computed by the SFU at run time; the default) or tensor (one calibrated "
        "scale per attention; what attention blocked over keys needs)",
    )
    parser.add_argument(
        "--bias-correction", choices=("auto", "on", "off"), default=None,
        help="fold the INT8 weights' mean rounding error into each linear's bias from the "
        "calibrated input means: on, off or auto (with --calibration-data; the default)",
    )
    parser.add_argument(
        "--dead-rows", action=argparse.BooleanOptionalAction, default=None,
        help="remove the token rows no output reads after quantize (esact-dead-rows; the "
        "default), e.g. all but token 0 in a classifier's last layer; --no-dead-rows keeps them",
    )


def _add_sparsity_arguments(parser: argparse.ArgumentParser) -> None:
    from esact_cc.sparsity.registry import scheme_names

    parser.add_argument(
        "--sparsity", metavar="SCHEME", default=None,
        help=f"sparsity scheme: {', '.join(scheme_names())} (default: dense, or spls when "
        "--sparsity-option/--spls-config is given)",
    )
    parser.add_argument(
        "--sparsity-option", "--spls-option", dest="sparsity_option", action="append",
        default=[], metavar="[LAYER:]NAME=VALUE",
        help="an option of the scheme for all layers (threshold=0.95) or one layer "
        "(3:threshold=0.9); repeatable (--spls-option is its older name)",
    )
    parser.add_argument(
        "--spls-config", metavar="FILE.json", help="SPLS options written by esact-tune",
    )


def _add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    from esact_cc.cli.cached_compile import add_cache_arguments

    add_cache_arguments(parser)


ARGUMENT_GROUPS: list[Callable[[argparse.ArgumentParser], None]] = [
    _add_compile_arguments,
    _add_cache_arguments,
    _add_debug_arguments,
    _add_run_arguments,
    _add_backend_arguments,
    _add_sparsity_arguments,
]
"""Functions declaring the CLI's arguments; append one to add options."""


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(PROG, "Compile ONNX Transformer models (or their IR) for ESACT.")
    for add_arguments in ARGUMENT_GROUPS:
        add_arguments(parser)
    return parser


def is_ir_input(model: str) -> bool:
    return model == "-" or Path(model).suffix == IR_SUFFIX


def target_stage(args: argparse.Namespace) -> str:
    """The last stage: `--compile-to`, else the one `-o`'s extension names; a binary name
    for IR (or the reverse) is an error, not a file of the other kind under that name."""
    from esact_cc.pipeline import stage_named

    suffix = Path(args.output).suffix if args.output and not is_stdout(args.output) else None
    if args.compile_to is None:
        if suffix in (None, BINARY_SUFFIX):
            return BINARY_STAGE
        if suffix == IR_SUFFIX:
            return LAST_IR_STAGE
        raise CommandLineError(f"-o '{args.output}': the extension says neither {BINARY_SUFFIX} "
                               f"(binary) nor {IR_SUFFIX} (IR); give one, or --compile-to STAGE")
    stage = stage_named(args.compile_to).name
    if suffix == BINARY_SUFFIX and stage != BINARY_STAGE:
        raise CommandLineError(f"-o '{args.output}' names a binary, but --compile-to {stage} "
                               f"writes IR: use {IR_SUFFIX}, or --compile-to {BINARY_STAGE}")
    if suffix == IR_SUFFIX and stage == BINARY_STAGE:
        raise CommandLineError(f"-o '{args.output}' names IR, but --compile-to {BINARY_STAGE} "
                               f"writes the binary: use {BINARY_SUFFIX}")
    return stage


def check_arguments(args: argparse.Namespace, stage: str) -> None:
    """Option combinations that cannot work, before any file is read."""
    if args.run and not args.output_dir:
        raise CommandLineError("--run needs --output-dir DIR")
    if args.input and not args.run:
        raise CommandLineError("--input is only used with --run")
    if args.output_dir and not args.run:
        raise CommandLineError("--output-dir is only used with --run")
    if stage == BINARY_STAGE and not args.run and args.output in (None, STDOUT) \
            and sys.stdout.isatty():
        raise CommandLineError("refusing to write the .esb binary to a terminal: give -o "
                               "FILE.esb, or --compile-to STAGE for IR")
    if is_ir_input(args.model) and (args.input_shape or args.dim):
        raise CommandLineError(f"--input-shape/--dim: the IR '{args.model}' has static shapes "
                               "already; they apply to an ONNX input")


def check_done_stages(args: argparse.Namespace, extra: dict, done: str, stage: str) -> None:
    """An IR input has been through the stages up to `done`: their options would be ignored,
    so giving one is an error; so is a `--compile-to` before `done`."""
    from esact_cc.pipeline import STAGES, stage_names

    index = stage_names().index(done)
    if stage_names().index(stage) < index:
        raise CommandLineError(f"input '{args.model}' is IR of stage '{done}', after "
                               f"--compile-to {stage}")
    for earlier in STAGES[:index + 1]:
        given = [name for name in earlier.options if extra.get(name) not in (None, [], ())]
        if given:
            raise CommandLineError(f"--{given[0].replace('_', '-')} is used by stage "
                                   f"'{earlier.name}', which the IR '{args.model}' has been "
                                   f"through already ({done})")
    if args.debug_lift and index >= stage_names().index("transformer"):
        raise CommandLineError(f"--debug-lift: the IR '{args.model}' is lifted already ({done})")


def compile_options(args: argparse.Namespace, stage: str, shapes: dict):  # -> CompileOptions
    from esact_cc.pipeline import CompileOptions, check_compile_options, option_types
    from esact_cc.sparsity.selection import select_scheme

    extra = {name: value for name, value in vars(args).items() if name in option_types()}
    check_compile_options(extra, stage)  # bad options fail before the (slow) compile
    select_scheme(extra)
    return CompileOptions(input_shapes=shapes, debug_lift=args.debug_lift,
                          strict_lift=args.strict_lift, verify_each=args.verify_each,
                          extra=extra)


def compile_input(args: argparse.Namespace, stage: str, arrays: dict[str, np.ndarray],
                  timer=None):  # type: ignore[no-untyped-def]
    """The module and store at `stage`, from the ONNX model or the IR input."""
    from esact_cc import api
    from esact_cc.cli.ir_printing import IRDumper
    from esact_cc.lift_summary import CompileSummary, scheme_name
    from esact_cc.passes.registry import get_all_passes
    from esact_cc.pipeline import compile_model, continue_pipeline

    dumper = IRDumper(args, get_all_passes())
    dumps = 0
    state: dict = {}  # the store, for dumps to files, known once the input is read
    summary = CompileSummary(scheme_name(vars(args)))  # written to stderr once compiled

    def on_stage(name, module, store) -> None:  # type: ignore[no-untyped-def]
        nonlocal dumps
        state["store"] = store
        summary.observe(name, module)
        if args.dump_ir_dir:
            dumps += 1
            api.write_ir(module, store, Path(args.dump_ir_dir) / f"{dumps}-{name}.mlir")

    def before_pass(module_pass, module) -> None:  # type: ignore[no-untyped-def]
        dumper.before(module_pass, module, state["store"])
        if timer is not None:
            timer.start(module_pass)

    def after_pass(module_pass, module) -> None:  # type: ignore[no-untyped-def]
        if timer is not None:
            timer.stop(module_pass)
        dumper.after(module_pass, module, state["store"])

    hooks: dict = {"on_stage": on_stage, "before_pass": before_pass, "on_pass": after_pass}
    if not is_ir_input(args.model):
        from esact_cc.cli.shape_arguments import input_shapes

        shapes = input_shapes(args.model, args.input_shape, args.dim, arrays)
        options = compile_options(args, stage, shapes)
        with _checked_once(args, stage):
            module, store = compile_model(args.model, stage, options, **hooks)
        summary.write(sys.stderr, PROG)
        return module, store
    from esact_cc.ir_files import detect_stage, read_ir

    module, store = read_ir(args.model)
    done = detect_stage(module)
    options = compile_options(args, stage, {})
    check_done_stages(args, dict(options.extra), done, stage)
    state["store"] = store
    with _checked_once(args, stage):
        continue_pipeline(module, store, done, stage, options, **hooks)
    summary.write(sys.stderr, PROG)
    return module, store


def _checked_once(args: argparse.Namespace, stage: str):  # -> context manager
    """A binary written and not run: its instructions' fields are checked when it is
    serialized, before anything is written, so the esact stage's verification leaves them
    (--verify-each checks them after every pass still)."""
    from contextlib import nullcontext

    from esact_cc.dialects.esact import fields_checked_at_emission

    once = stage == BINARY_STAGE and not args.run and not args.verify_each
    return fields_checked_at_emission() if once else nullcontext()


def run_compiled(module, store, stage: str, bound) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """--run: the reference interpreter; from the esact stage on, the functional model."""
    from esact_cc import api
    from esact_cc.ir_queries import io_names, main_function
    from esact_cc.runtime.cli.input_bindings import resolve_bindings

    compiled = api.CompiledModel(module, store, stage)
    names = ([d.name for d in compiled.program().inputs] if compiled.is_program()
             else io_names(main_function(module), results=False))
    return compiled.run(resolve_bindings(bound, names, "--input"))


def write_output(args: argparse.Namespace, stage: str, module, store) -> None:  # type: ignore[no-untyped-def]
    from esact_cc import api
    from esact_cc.pipeline import stage_named

    if args.run and args.output is None:
        return
    writer = stage_named(stage).write_output
    if args.output is not None and not is_stdout(args.output):
        if writer is not None:
            writer(module, store, Path(args.output))
        else:
            api.write_ir(module, store, args.output)
    elif writer is not None:  # the binary on stdout (not a terminal: checked first)
        from esact_cc.backend.emit_esb import esb_bytes

        sys.stdout.buffer.write(esb_bytes(module, store))
        sys.stdout.flush()
    else:
        from esact_cc.ir_files import ir_text_with_weights

        sys.stdout.write(ir_text_with_weights(module, store))


def run_cli(args: argparse.Namespace) -> None:
    from esact_cc.runtime.atomic_write import atomic_save_npy
    from esact_cc.runtime.cli.input_bindings import BoundArrays, bound_names, read_bindings
    from esact_cc.runtime.cli.npy_arguments import INPUT_ARRAY_CAP

    stage = target_stage(args)
    check_arguments(args, stage)
    check_outputs(args, stage)
    bound = read_bindings("--input", args.input, INPUT_ARRAY_CAP) if args.run else BoundArrays()
    from esact_cc.cli.cached_compile import cacheable, compile_through_cache

    if cacheable(args, stage, args.output is not None and not is_stdout(args.output)):
        files = {k: v for k, v in input_paths(args).items() if not k.startswith("--input")}
        compile_through_cache(PROG, args, files, lambda: write_output(
            args, stage, *compile_input(args, stage, bound_names(bound), None)))
        return
    from esact_cc.cli.pass_timing import PassTimer

    timer = PassTimer() if args.mlir_timing else None
    module, store = compile_input(args, stage, bound_names(bound), timer)
    if timer is not None:
        timer.report()
    outputs = run_compiled(module, store, stage, bound) if args.run else {}

    # Everything computed: now write.
    files = output_array_paths("--output-dir", args.output_dir, outputs) if outputs else {}
    written = {f"--output-dir (output '{name}')": path for name, path in files.items()}
    refuse_overwriting_inputs(written, input_paths(args))
    write_output(args, stage, module, store)
    for name, value in outputs.items():
        atomic_save_npy(files[name], value)


def input_paths(args: argparse.Namespace) -> dict[str, str | None]:
    """Every file the compile reads, by the option naming it."""
    from esact_cc.runtime.cli.input_bindings import input_paths as binding_paths

    return {"MODEL": None if args.model == "-" else args.model, "--hw": args.hw,
            "--spls-config": args.spls_config,
            **binding_paths("--calibration-data", [args.calibration_data] if args.calibration_data else []),
            **binding_paths("--input", args.input)}


def check_outputs(args: argparse.Namespace, stage: str) -> None:
    """Output options checked before the (slow) compile: usable, and none is an input."""
    from esact_cc.pipeline import stage_named
    from esact_cc.weight_store import weight_store_path_for

    output = None if is_stdout(args.output) else args.output
    check_output_file("-o", output)
    check_output_dir("--output-dir", args.output_dir)
    check_output_dir("--dump-ir-dir", args.dump_ir_dir)
    check_output_dir("--mlir-print-ir-tree-dir", args.print_ir_tree_dir)
    outputs: dict[str, str | Path | None] = {"-o": output}
    if output and stage_named(stage).write_output is None:  # IR: weights beside
        outputs["-o (its weight store)"] = weight_store_path_for(output)
    refuse_overwriting_inputs(outputs, input_paths(args))


def main(argv: list[str] | None = None) -> int:
    # Parsing runs inside too: a bug while building the parser still ends with the report line.
    def parse_and_run() -> None:
        args = build_parser().parse_args(argv)
        limit_blas_threads()  # runtime/thread_policy.py: no oversubscribed busy machine
        run_cli(args)

    return exit_code_of(PROG, parse_and_run)


def console_main() -> None:
    """The `esact-cc` command: main() with the cyclic collector off throughout, then the
    process ends without Python's teardown of the compile's objects (cli/process_exit.py)."""
    import gc

    from esact_cc.cli.process_exit import exit_without_teardown

    gc.disable()
    exit_without_teardown(PROG, main())


if __name__ == "__main__":
    console_main()
