"""`esact-opt`: xdsl-opt with esact-cc's dialects and passes, reading `.mlir` or `.onnx`.

An `.onnx` input is imported by the ONNX frontend (`--input-shape NAME=1x128`, `--dim seq=128`
fix dynamic dims). Locations are printed by default (`--no-print-debuginfo` turns them off).
With `-o/--output FILE` (`--output-file` is xdsl-opt's spelling), the module's weights are
written beside it and linked by the `esact.weight_store` module attribute; the output file is
written atomically. On stdout (no `-o`, or `-o -`) the weights follow the module inline, as an
MLIR `dialect_resources` section (esact_cc/ir_files.py), so a pipe into another esact-opt or
esact-cc keeps them. A `.mlir` input brings its weights inline or from the `.npz` it names
(inside the input's directory). IR dumps (`--mlir-print-ir-*`, cli/ir_printing.py) and pass
timings (`--mlir-timing`) go to stderr. Only the `mlir` target is offered (`-t`).
Errors: `esact-opt: error: <one line>` on stderr, exit 2 for a bad command line (a bad pass
pipeline too), 1 otherwise, no traceback (runtime/cli/user_errors.py): xDSL's parse and verify
errors on the input and a bad file extension are user errors and become one line here;
`--verify-diagnostics` and `--parsing-diagnostics` keep xdsl-opt's behaviour (print the
diagnostic, exit 0).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, ParseError
from xdsl.xdsl_opt_main import xDSLOptMain

from esact_cc.cli.ir_printing import IRDumper, add_ir_printing_arguments
from esact_cc.cli.pass_timing import PassTimer, add_timing_argument
from esact_cc.runtime.cli.conventions import is_stdout, tool_version
from esact_cc.runtime.cli.output_paths import check_output_file, refuse_overwriting_inputs
from esact_cc.runtime.cli.user_errors import exit_code_of, one_line
from esact_cc.runtime.errors import CommandLineError, CompileError, EsactError, UsageError
from esact_cc.weight_store import WeightStore

PROG = "esact-opt"
TARGETS = ("mlir",)
"""xdsl-opt's other targets (riscv-asm, x86-asm, ...) print dialects esact-cc never produces."""

# Generic xDSL passes worth having next to ours.
XDSL_PASSES: tuple[str, ...] = ("canonicalize", "cse", "dce")


class _CapturedOutput(io.StringIO):
    """Collects the output so the file is only written (atomically) when everything succeeded."""

    def close(self) -> None:  # xDSLOptMain closes its output stream; keep the text.
        self.flush()


class EsactOptMain(xDSLOptMain):
    version_format = f"{PROG} {tool_version()}"

    def __init__(self, args: list[str] | None = None):
        self._captured: _CapturedOutput | None = None
        self._inline_weights: WeightStore | None = None  # the input's dialect_resources
        self._timer = PassTimer()
        self._output_has_weights = False
        self._pending_saves: list[Callable[[], None]] = []  # weight stores, saved at the end
        self._stores: dict[ModuleOp, WeightStore] = {}  # each parsed module's weights
        super().__init__(description="esact-cc modular optimizer driver", args=args)

    def register_all_dialects(self) -> None:
        from esact_cc.dialect_registry import get_all_dialects

        for name, factory in get_all_dialects().items():
            self.ctx.register_dialect(name, factory)

    def register_all_passes(self) -> None:
        from xdsl.universe import Universe

        from esact_cc.passes.registry import get_all_passes

        xdsl_passes = Universe.get_multiverse().all_passes
        for name in XDSL_PASSES:
            if name in xdsl_passes:
                self.register_pass(name, xdsl_passes[name])
        passes: dict[str, Callable[[], type[ModulePass]]] = get_all_passes()
        for name, factory in passes.items():
            self.register_pass(name, factory)

    def register_all_frontends(self) -> None:
        super().register_all_frontends()
        # Marks `.onnx` as accepted; `parse_chunk` imports it from the path.
        self.available_frontends["onnx"] = lambda stream: ModuleOp([])

    def register_all_targets(self) -> None:
        super().register_all_targets()
        self.available_targets = {name: self.available_targets[name] for name in TARGETS}

    def register_all_arguments(self, arg_parser: argparse.ArgumentParser) -> None:
        from esact_cc.cli.shape_arguments import add_shape_arguments

        super().register_all_arguments(arg_parser)
        arg_parser.prog = PROG  # argparse's `prog: error:` names the tool, also in-process
        # The options below replace xdsl-opt's of the same spellings (argparse keeps the
        # handler per group: the optionals group holds them).
        arg_parser._optionals.conflict_handler = "resolve"
        arg_parser.add_argument("-o", "--output", "--output-file", dest="output_file",
                                metavar="FILE", help="output file ('-' or none: stdout, with "
                                "the weights inline)")
        add_ir_printing_arguments(arg_parser, "--print-between-passes")
        add_timing_argument(arg_parser, "--time-passes")
        add_shape_arguments(arg_parser)
        arg_parser.add_argument(
            "--no-print-debuginfo", dest="print_debuginfo", action="store_false",
            help="do not print op locations",
        )
        arg_parser.set_defaults(print_debuginfo=True)

    def get_input_stream(self) -> tuple[IO[bytes], str]:
        """The input read whole (it is parsed whole anyway), capped and checked to be UTF-8:
        `/dev/zero` or a binary file is one line, not an exhausted memory or a traceback."""
        from esact_cc.runtime.bounded_read import read_bounded_text

        name = self.args.input_file
        extension = Path(name).suffix.lstrip(".") if name is not None else "mlir"
        if (self.args.frontend or extension) == "onnx":
            return io.BytesIO(), extension  # the ONNX frontend reads the file itself
        from esact_cc.ir_files import MAX_IR_TEXT_BYTES, split_weights_section

        text = read_bounded_text("/dev/stdin" if name is None else name, MAX_IR_TEXT_BYTES,
                                 "IR file")
        text, self._inline_weights = split_weights_section(text, self._input_where())
        return io.BytesIO(text.encode()), extension

    def _input_where(self) -> str:
        name = self.args.input_file
        return "IR on stdin" if name in (None, "-") else f"IR file '{name}'"

    def parse_chunk(self, chunk: IO[bytes], file_extension: str, start_offset: int = 0) -> ModuleOp | None:
        from esact_cc.ir_files import weights_of_parsed

        if (self.args.frontend or file_extension) == "onnx":
            from esact_cc.cli.shape_arguments import input_shapes
            from esact_cc.frontend.onnx_frontend import import_onnx

            shapes = input_shapes(self.args.input_file, self.args.input_shape, self.args.dim)
            module, self._stores[module] = import_onnx(self.args.input_file, shapes)
            return module
        try:
            module = super().parse_chunk(chunk, file_extension, start_offset)
            if module is not None and not (self.args.disable_verify or
                                           self.args.verify_diagnostics):
                module.verify()  # the input's fault, unlike a failure after a pass
        except ParseError as e:
            if self.args.parsing_diagnostics:
                raise  # xdsl-opt prints it
            raise CompileError(f"{e.span.get_location()}: {one_line(e.msg)}") from None
        except DiagnosticException as e:
            if self.args.verify_diagnostics:
                raise  # xdsl-opt prints it
            raise CompileError(f"{self.get_input_name()}: invalid IR: {one_line(e)}") from None
        except RecursionError:
            raise CompileError(f"{self.get_input_name()}: IR nested too deeply (Python "
                               "recursion limit reached)") from None
        if module is not None:
            input_dir = Path(self.args.input_file).parent if self.args.input_file else Path(".")
            self._stores[module] = weights_of_parsed(module, self._inline_weights, input_dir,
                                                     self._input_where(), complete=False)
        return module

    def apply_passes(self, prog: ModuleOp) -> None:
        """The pipeline's passes constructed with this module's weight store."""
        from dataclasses import replace

        from esact_cc.passes.weight_store_pass import with_store_all

        passes = with_store_all(self.pipeline.passes, self._stores[prog])
        replace(self.pipeline, passes=tuple(passes)).apply(self.ctx, prog)

    def prepare_output(self) -> IO[str]:
        if self.args.output_file is None:
            return sys.stdout
        self._captured = _CapturedOutput()
        return self._captured

    def output_resulting_program(self, prog: ModuleOp) -> str:
        from esact_cc.ir_files import weights_section
        from esact_cc.weight_store import WEIGHT_STORE_ATTR, plan_binding

        if self.args.output_file is None:  # stdout: the weights inline, not named beside
            store = self._stores[prog]
            reference = prog.attributes.pop(WEIGHT_STORE_ATTR, None)
            try:
                text = super().output_resulting_program(prog).rstrip("\n") + "\n"
            finally:
                if reference is not None:
                    prog.attributes[WEIGHT_STORE_ATTR] = reference
            return text + weights_section(store) if len(store) else text
        if self.args.output_file is not None:
            store = self._stores[prog]
            if len(store) and self._output_has_weights:
                # Every chunk's store would be saved to the one .npz beside -o: the last wins.
                raise UsageError(f"-o '{self.args.output_file}': more than one chunk of the "
                                 "split input has weights, and one .npz goes beside the output")
            self._output_has_weights |= len(store) > 0
            save = plan_binding(prog, store, self.args.output_file)
            if save is not None:
                self._pending_saves.append(save)
        # One trailing newline, as `esact-cc -o` and `api.ir_text` write: files compare equal.
        return super().output_resulting_program(prog).rstrip("\n") + "\n"

    def check_pass_option_names(self) -> None:
        """An unknown pass option names the valid ones and the nearest (xDSL lists them)."""
        from xdsl.utils.arg_spec import parse_pipeline

        from esact_cc.pipeline import pass_option_names
        from esact_cc.typed_options import unknown_name

        for spec in parse_pipeline(self.args.passes):
            if spec.name in self.available_passes:
                valid = pass_option_names(self.available_passes[spec.name]())
                for name in spec.normalize_parameter_names().parameters:
                    if name not in valid:
                        raise CommandLineError(f"-p: {spec.name}: "
                                               f"{unknown_name('option', name, valid)}")

    def setup_pipeline(self) -> None:
        """xdsl-opt's pipeline, with IR dumps and timings on stderr (xdsl-opt prints them on
        stdout, into the output)."""
        from xdsl.passes import PassPipeline

        if is_stdout(self.args.output_file):
            self.args.output_file = None
        if self.args.input_file == "-":  # stdin, as without an input file
            self.args.input_file = None
        dumper = IRDumper(self.args, self.available_passes)

        def between(previous: ModulePass | None, module: ModuleOp,
                    following: ModulePass | None) -> None:
            if previous is not None and self.args.mlir_timing:
                self._timer.stop(previous)
            if not self.args.disable_verify:  # as xdsl-opt: also before the first pass
                module.verify()
            if previous is not None:
                dumper.after(previous, module, self._stores[module])
            if following is not None:
                dumper.before(following, module, self._stores[module])
                if self.args.mlir_timing:
                    self._timer.start(following)

        try:
            self.check_pass_option_names()
            self.pipeline = PassPipeline.parse_spec(self.available_passes, self.args.passes,
                                                    between)
        except CommandLineError:
            raise
        except (ValueError, ArgSpecParseError) as e:
            raise CommandLineError(f"-p '{self.args.passes}': {one_line(e)}") from None
        except EsactError as e:  # a pass option's value, checked as the pass is built
            raise CommandLineError(one_line(e)) from None

    def prepare_input(self) -> tuple[list[tuple[IO[bytes], int]], str]:
        try:
            return super().prepare_input()
        except ValueError as e:  # an extension no frontend reads
            raise UsageError(f"input '{self.get_input_name()}': {one_line(e)}") from None

    def check_output(self) -> None:
        """Before any work: -o is a usable file name and overwrites neither the input nor
        (with the weights it writes beside it) anything the input is."""
        from esact_cc.weight_store import weight_store_path_for

        output = self.args.output_file
        check_output_file("-o", output)
        if output is not None:
            refuse_overwriting_inputs(
                {"-o": output, "-o (its weight store)": weight_store_path_for(output)},
                {"INPUT": self.args.input_file})

    def run(self) -> None:
        self.check_output()
        super().run()
        if self.args.mlir_timing:
            self._timer.report()
        if self._captured is not None:
            from esact_cc.runtime.atomic_write import atomic_write_text

            for save in self._pending_saves:
                save()
            atomic_write_text(self.args.output_file, self._captured.getvalue())


def main(argv: list[str] | None = None) -> int:
    return exit_code_of(PROG, lambda: EsactOptMain(args=argv).run())


if __name__ == "__main__":
    sys.exit(main())
