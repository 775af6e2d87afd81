"""`esact-run`: run an ESACT binary on the hardware model (functional + timing + energy).

    esact-run model.esb --input FILE.npz|NAME=FILE.npy|NAME=FILE.npz[:ARRAY] ...
        [--output-dir DIR] [--report FILE.json] [--trace FILE.json] [--plots DIR] [--html-report FILE.html] [--hw CONFIG]
        [--force-config] [--quiet]
        [--host-time-limit SECONDS]

Prints the summary tables (report.format_summary) on stdout; a progress bar on stderr when
stderr is a terminal or the run is long (runtime/progress.py). `--plots` and `--html-report`
need matplotlib: without it they are refused before the run. `--hw` takes a TOML path or the
name of a file in runtime/configs/; without it, the shipped config whose hash the binary
records (else the default config). A binary compiled for another config is refused unless
--force-config.
Errors: `esact-run: error: <one line>` on stderr, exit 1 (2: a bad command line), no traceback
(user_errors.py); output paths are checked before the run (none may be an input, no two outputs
may share a file), and every output file is written atomically and only after the run
succeeded.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import numpy as np
from esact_cc.runtime.cli.conventions import tool_parser
from esact_cc.runtime.cli.input_bindings import input_paths as binding_paths
from esact_cc.runtime.cli.input_bindings import read_bindings, resolve_bindings
from esact_cc.runtime.cli.npy_arguments import INPUT_ARRAY_CAP
from esact_cc.runtime.cli.output_paths import (
    check_output_dir,
    check_output_file,
    output_array_paths,
    refuse_overwriting_inputs,
    refuse_shared_outputs,
)
from esact_cc.runtime.cli.user_errors import exit_code_of
from esact_cc.runtime.errors import UsageError
from esact_cc.runtime.host_segments import HOST_TIME_LIMIT_S, positive_seconds
from esact_cc.runtime.progress import ProgressBar
from esact_cc.runtime.thread_policy import limit_blas_threads

PROG = "esact-run"


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(PROG, "Run an ESACT binary on the functional + timing + energy model.")
    parser.add_argument("binary", metavar="model.esb", help="ESACT binary")
    parser.add_argument("--input", action="append", default=[], metavar="BINDING",
                        help="input values: FILE.npz (arrays by input name), NAME=FILE.npy, "
                        "NAME=FILE.npz or NAME=FILE.npz:ARRAY (repeatable)")
    parser.add_argument("--output-dir", metavar="DIR", help="write each output to DIR/<name>.npy")
    parser.add_argument("--report", metavar="FILE.json", help="write the JSON report")
    parser.add_argument("--trace", metavar="FILE.json",
                        help="write a Chrome/Perfetto trace (open in ui.perfetto.dev)")
    parser.add_argument("--plots", metavar="DIR",
                        help="write per-layer cycle and energy plots (needs matplotlib)")
    parser.add_argument("--html-report", metavar="FILE.html",
                        help="write a self-contained HTML report: summary, tables, plots "
                             "(needs matplotlib)")
    parser.add_argument("--hw", metavar="CONFIG",
                        help="hardware config: TOML path or name in runtime/configs (default: "
                             "the shipped config the binary was compiled for)")
    parser.add_argument("--force-config", action="store_true",
                        help="run even if the binary was compiled for another hardware config")
    parser.add_argument("--quiet", action="store_true", help="no summary table, no progress bar")
    parser.add_argument("--host-time-limit", type=positive_seconds, default=HOST_TIME_LIMIT_S,
                        metavar="SECONDS", help="stop a HOST instruction (an ONNX subgraph on "
                        f"onnxruntime) running longer than this (default {HOST_TIME_LIMIT_S:g})")
    return parser


def check_inputs(program: object, inputs: dict[str, np.ndarray]) -> None:
    """One clear line for a missing, unknown, wrong-shape or wrong-dtype input."""
    expected = {d.name: d for d in program.inputs}  # type: ignore[attr-defined]
    for name in inputs:
        if name not in expected:
            known = ", ".join(sorted(expected)) or "none"
            raise UsageError(f"--input {name}: the binary has no input '{name}' (inputs: {known})")
    for name, desc in expected.items():
        if name not in inputs:
            raise UsageError(f"missing --input {name}=FILE.npy (shape {list(desc.shape)}, "
                             f"dtype {desc.dtype})")
        value = inputs[name]
        if tuple(value.shape) != tuple(desc.shape):
            raise UsageError(f"--input {name}: shape {list(value.shape)}, the binary expects "
                             f"{list(desc.shape)}")
        target = np.dtype(desc.dtype)
        lossless = np.can_cast(value.dtype, target, "safe") or (
            value.dtype == np.float64 and target == np.float32)
        if value.dtype != target and not lossless:
            raise UsageError(f"--input {name}: dtype {value.dtype}, the binary expects "
                             f"{desc.dtype}")


def run(args: argparse.Namespace, command: bool = False) -> int:
    """The run `args` ask for; `command`: this process is the esact-run command (main())."""
    from esact_cc.runtime.atomic_write import atomic_save_npy
    from esact_cc.runtime.errors import ConfigError
    from esact_cc.runtime.esb import read_esb
    from esact_cc.runtime.hw_config import resolve_config, shipped_config_with_hash
    from esact_cc.runtime.report import format_summary, write_report
    from esact_cc.runtime.run_program import config_mismatch_message, run_program
    from esact_cc.runtime.trace import write_trace

    check_output_options(args)
    bound = read_bindings("--input", args.input, INPUT_ARRAY_CAP)
    program = read_esb(args.binary)
    files = output_files(args, [d.name for d in program.outputs])
    config = None
    if args.hw is None:  # the binary names its config by hash: find it among the shipped ones
        config = shipped_config_with_hash(program.config_hash)
    if config is None:
        config = resolve_config(args.hw)
    if program.config_hash != config.hash and not args.force_config:
        raise ConfigError(config_mismatch_message(program.config_hash, config))
    inputs = resolve_bindings(bound, [d.name for d in program.inputs], "--input")
    check_inputs(program, inputs)
    if command:
        # The modules and the program live until the process ends: out of the collector's
        # reach, its full collections during the run skip them (BERT-base 512: 0.09-0.14 s
        # of full collections -> 0.03 s).
        gc.freeze()
    progress = None if args.quiet else ProgressBar(sys.stderr)
    try:
        # One run per process: a host model's session is released after its last use.
        result = run_program(program, inputs, config, force_config=args.force_config,
                             progress=progress, meta={"binary": str(args.binary)},
                             host_time_limit=args.host_time_limit, release_host_sessions=True)
    finally:
        if progress is not None:
            progress.finish()
    if args.force_config and program.config_hash != config.hash:
        sys.stderr.write(f"warning: {config_mismatch_message(program.config_hash, config)}\n")
    # Outputs are written only now that everything has succeeded.
    if args.output_dir:
        for name, value in result.outputs.items():
            atomic_save_npy(files[name], value)
    if args.report:
        write_report(args.report, result.report)
    if args.trace:
        write_trace(args.trace, result.trace())
    if args.plots:
        from esact_cc.runtime.plots import write_plots

        write_plots(result.report, args.plots)
    if args.html_report:
        from esact_cc.runtime.html_report import write_html_report

        write_html_report(args.html_report, result.report)
    if not args.quiet:
        sys.stdout.write(format_summary(result.report))
    return 0


def input_paths(args: argparse.Namespace) -> dict[str, str | None]:
    """Every file the run reads, by the option naming it."""
    return {"BINARY": args.binary, "--hw": args.hw, **binding_paths("--input", args.input)}


def check_output_options(args: argparse.Namespace) -> None:
    """Before reading anything: output options are usable and none names an input."""
    check_output_dir("--output-dir", args.output_dir)
    check_output_dir("--plots", args.plots)
    check_output_file("--report", args.report)
    check_output_file("--trace", args.trace)
    check_output_file("--html-report", args.html_report)
    for option, value in (("--plots", args.plots), ("--html-report", args.html_report)):
        if value:
            from esact_cc.runtime.plots import require_matplotlib

            require_matplotlib(option)
    refuse_overwriting_inputs({"--report": args.report, "--trace": args.trace,
                               "--html-report": args.html_report}, input_paths(args))


def output_files(args: argparse.Namespace, names: list[str]) -> dict[str, Path]:
    """The --output-dir file of each output; every output file distinct and not an input."""
    files = output_array_paths("--output-dir", args.output_dir, names) if args.output_dir else {}
    outputs: dict[str, str | Path | None] = {"--report": args.report, "--trace": args.trace,
                                             "--html-report": args.html_report}
    outputs.update({f"--output-dir (output '{name}')": path for name, path in files.items()})
    refuse_overwriting_inputs(outputs, input_paths(args))
    refuse_shared_outputs(outputs)
    return files


def main(argv: list[str] | None = None) -> int:
    # Parsing runs inside too: a bug while building the parser still ends with the report line.
    def parse_and_run() -> None:
        args = build_parser().parse_args(argv)
        limit_blas_threads()  # runtime/thread_policy.py: no oversubscribed busy machine
        run(args, command=argv is None)

    code = exit_code_of(PROG, parse_and_run)
    if argv is None:  # this process is the command (a caller passing argv keeps its heap)
        # The interpreter's exit collects garbage over every object left (the modules' and
        # the run's): 0.06 s CPU of BERT-base's run, for memory the process returns anyway.
        gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
