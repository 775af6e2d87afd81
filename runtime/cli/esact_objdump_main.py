"""esact-objdump: print the contents of an .esb binary.

`esact-objdump FILE.esb` prints a summary (config hash, sections, I/O); `-d` prints the full
disassembly, the assembly text `esact-as` turns back into a byte-identical binary (each
instruction annotated with its ONNX node, layer and component when the debug map has them);
`--no-data` elides the data and host-segment bytes. The text goes to stdout, or to
`-o/--output FILE` (written atomically). A corrupt file gives one `esact-objdump: error:` line
and exit status 1 (2 for a bad command line; user_errors.py).
"""

from __future__ import annotations

import sys

from ..assembly import disassemble
from ..esb import Program, read_esb
from .conventions import STDOUT, is_stdout, tool_parser, write_text_output
from .output_paths import check_output_file, refuse_overwriting_inputs
from .user_errors import exit_code_of

PROG = "esact-objdump"


def summary(program: Program) -> str:
    lines = [f"config hash: {program.config_hash}",
             f"instructions: {len(program.instructions)}"]
    counts: dict[str, int] = {}
    for instr in program.instructions:
        counts[instr.opcode_name] = counts.get(instr.opcode_name, 0) + 1
    lines.append("  " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())))
    for d in program.io:
        lines.append(f"{d.kind}: {d.name} {d.dtype}{list(d.shape)} @ {d.address}")
    for seg in program.data_segments:
        lines.append(f"data: {seg.name} {len(seg.data)} bytes @ {seg.address}")
    for k, hs in enumerate(program.host_segments):
        lines.append(f"host segment {k}: {len(hs.onnx)} bytes ONNX, "
                     f"{len(hs.inputs)} inputs, {len(hs.outputs)} outputs")
    lines.append(f"debug entries: {len(program.debug)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(PROG, __doc__.splitlines()[0])
    parser.add_argument("file", help="an .esb binary")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the text to FILE "
                        "('-' or none: stdout)")
    parser.add_argument("-d", "--disassemble", action="store_true",
                        help="print the full disassembly (input of esact-as)")
    parser.add_argument("--no-data", action="store_true",
                        help="with -d: leave out data and host-segment bytes")

    def dump() -> None:
        args = parser.parse_args(argv)
        output = args.output or STDOUT
        check_output_file("-o", None if is_stdout(output) else output)
        refuse_overwriting_inputs({"-o": None if is_stdout(output) else output},
                                  {"FILE": args.file})
        program = read_esb(args.file)
        write_text_output(output, disassemble(program, with_data=not args.no_data)
                          if args.disassemble else summary(program))

    return exit_code_of(PROG, dump)


if __name__ == "__main__":
    sys.exit(main())
