"""`esact-cc`: compile an ONNX model to a pipeline stage, write/dump its IR, optionally run it.

    esact-cc MODEL.onnx [-o OUT] --compile-to STAGE [--input-shape NAME=1x128 ...]
        [--dump-ir-dir DIR] [--print-ir-after-all] [--debug-lift]
        [--run --input NAME=FILE.npy ... --output-dir DIR] [--hw CONFIG] [--calibration-data FILE.npz]
        [--sparsity SCHEME] [--sparsity-option [LAYER:]NAME=VALUE ...] [--spls-config FILE.json]

Stages come from `esact_cc.pipeline.STAGES`. Arguments are declared by the functions in
`ARGUMENT_GROUPS` (append one to add options); every parsed argument a stage declares
(`Stage.options`) reaches the pipeline as `CompileOptions.extra[<dest>]`, so a later stage
reads its own options without changes here.
Errors: `esact-cc: error: <one line>` on stderr, exit 1, no traceback (cli/user_errors.py);
output paths are checked first (none may be an input), and outputs are written only after
everything succeeded, each atomically (runtime/atomic_write.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from esact_cc.runtime.cli.npy_arguments import load_input_files
from esact_cc.runtime.cli.output_paths import (check_output_dir, check_output_file,
                                               input_array_paths, output_array_paths,
                                               refuse_overwriting_inputs)
from esact_cc.runtime.cli.user_errors import exit_code_of

PROG = "esact-cc"


def _add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    from esact_cc.pipeline import stage_names

    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("-o", "--output", help="output file (default: IR on stdout)")
    parser.add_argument(
        "--compile-to", default=stage_names()[-1], choices=stage_names(with_aliases=True),
        metavar="STAGE", help=f"last stage to run: {', '.join(stage_names())} (default: "
        "%(default)s; spls: the former name of sparsity)",
    )
    parser.add_argument(
        "--input-shape", action="append", default=[], metavar="NAME=DIMS",
        help="static shape of a model input, e.g. input_ids=1x128 (repeatable)",
    )


def _add_debug_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dump-ir-dir", metavar="DIR", help="write the IR after every stage to DIR")
    parser.add_argument(
        "--print-ir-after-all", action="store_true", help="print the IR after every pass to stderr"
    )
    parser.add_argument(
        "--debug-lift", action="store_true",
        help="report which check failed for every pattern lift-transformer did not lift",
    )
    parser.add_argument(
        "--strict-lift", action="store_true",
        help="make any attention or linear left on the host (not lifted) an error",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", action="store_true", help="run the compiled IR on the reference interpreter"
    )
    parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=FILE.npy", help="input value (repeatable)"
    )
    parser.add_argument("--output-dir", metavar="DIR", help="where --run writes <output>.npy")


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hw", metavar="CONFIG", help="hardware config: a TOML file or a bundled config name (default: default)"
    )
    parser.add_argument(
        "--calibration-data", metavar="FILE.npz",
        help="INT8 calibration inputs: one array per model input, samples along axis 0",
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


ARGUMENT_GROUPS: list[Callable[[argparse.ArgumentParser], None]] = [
    _add_compile_arguments,
    _add_debug_arguments,
    _add_run_arguments,
    _add_backend_arguments,
    _add_sparsity_arguments,
]
"""Functions declaring the CLI's arguments; append one to add options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Compile ONNX Transformer models for ESACT.")
    for add_arguments in ARGUMENT_GROUPS:
        add_arguments(parser)
    return parser


def run_cli(args: argparse.Namespace) -> None:
    from esact_cc import api
    from esact_cc.runtime.atomic_write import atomic_save_npy
    from esact_cc.frontend.onnx_frontend import parse_input_shape
    from esact_cc.pipeline import CompileOptions, compile_model, stage_named
    from esact_cc.runtime.errors import CompileError

    if args.run and not args.output_dir:
        raise CompileError("--run needs --output-dir DIR")
    if args.input and not args.run:
        raise CompileError("--input is only used with --run")
    check_outputs(args)
    inputs = load_input_files(args.input) if args.run else {}
    shapes = dict(parse_input_shape(text) for text in args.input_shape)
    for name, value in inputs.items():  # an input's file fixes its shape unless given
        shapes.setdefault(name, tuple(value.shape))
    from esact_cc.pipeline import check_compile_options, option_types
    from esact_cc.sparsity.selection import select_scheme

    extra = {name: value for name, value in vars(args).items() if name in option_types()}
    options = CompileOptions(input_shapes=shapes, debug_lift=args.debug_lift,
                             strict_lift=args.strict_lift, extra=extra)
    check_compile_options(extra, args.compile_to)  # bad options fail before the (slow) compile
    select_scheme(extra)

    on_pass = None
    if args.print_ir_after_all:
        def on_pass(module_pass, module) -> None:  # type: ignore[no-untyped-def]
            sys.stderr.write(f"// ----- IR after {module_pass.name} -----\n{api.ir_text(module)}")

    from esact_cc.lift_summary import CompileSummary, scheme_name

    stage_dumps: list[tuple[str, str]] = []
    summary = CompileSummary(scheme_name(vars(args)))  # written to stderr once compiled

    def on_stage(name, module, store) -> None:  # type: ignore[no-untyped-def]
        summary.observe(name, module)
        if args.dump_ir_dir:
            path = Path(args.dump_ir_dir) / f"{len(stage_dumps) + 1}-{name}.mlir"
            api.write_ir(module, store, path)
            stage_dumps.append((name, str(path)))
        if args.print_ir_after_all:
            sys.stderr.write(f"// ----- IR after stage {name} -----\n{api.ir_text(module)}")

    module, store = compile_model(args.model, args.compile_to, options, on_stage=on_stage, on_pass=on_pass)
    summary.write(sys.stderr, PROG)

    outputs: dict[str, np.ndarray] = {}
    if args.run:  # the reference interpreter; from the esact stage on, the functional model
        outputs = api.CompiledModel(module, store, args.compile_to).run(inputs)

    # Everything computed: now write.
    files = output_array_paths("--output-dir", args.output_dir, outputs) if outputs else {}
    written = {f"--output-dir (output '{name}')": path for name, path in files.items()}
    refuse_overwriting_inputs(written, input_paths(args))
    stage = stage_named(args.compile_to)
    if args.output:
        if stage.write_output is not None:
            stage.write_output(module, store, Path(args.output))
        else:
            api.write_ir(module, store, args.output)
    elif not args.run:
        sys.stdout.write(api.ir_text(module))
    for name, value in outputs.items():
        atomic_save_npy(files[name], value)


def input_paths(args: argparse.Namespace) -> dict[str, str | None]:
    """Every file the compile reads, by the option naming it."""
    return {"MODEL": args.model, "--hw": args.hw, "--calibration-data": args.calibration_data,
            "--spls-config": args.spls_config, **input_array_paths(args.input)}


def check_outputs(args: argparse.Namespace) -> None:
    """Output options checked before the (slow) compile: usable, and none is an input."""
    from esact_cc.pipeline import stage_named
    from esact_cc.weight_store import weight_store_path_for

    check_output_file("-o", args.output)
    check_output_dir("--output-dir", args.output_dir)
    check_output_dir("--dump-ir-dir", args.dump_ir_dir)
    outputs: dict[str, str | Path | None] = {"-o": args.output}
    if args.output and stage_named(args.compile_to).write_output is None:  # IR: weights beside
        outputs["-o (its weight store)"] = weight_store_path_for(args.output)
    refuse_overwriting_inputs(outputs, input_paths(args))


def main(argv: list[str] | None = None) -> int:
    # Parsing runs inside too: a bug while building the parser still ends with the report line.
    return exit_code_of(PROG, lambda: run_cli(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
