"""esact-as: assemble ESACT assembly text (the output of `esact-objdump -d`) into an .esb.

`esact-as FILE.s -o FILE.esb [--hw CONFIG]`: the config hash comes from the text's
`.config` line, else from `--hw` (default config). The output is written atomically (`-o -`:
stdout, unless it is a terminal); any error gives one `esact-as: error:` line (user_errors.py),
exit status 1 (2 for a bad command line) and no output file.
"""

from __future__ import annotations

import argparse
import sys

from ..assembly import assemble
from ..bounded_read import GiB, read_bounded_text
from ..errors import CommandLineError
from ..esb import serialize_esb, write_esb
from ..hw_config import resolve_config
from .conventions import is_stdout, tool_parser
from .output_paths import check_output_file, refuse_overwriting_inputs
from .user_errors import exit_code_of

PROG = "esact-as"
MAX_ASSEMBLY_BYTES = 2 * GiB
"""Cap on the assembly text: a disassembly spells data in hex, two characters a byte (measured:
a 71 KB binary disassembles to 144 KB), so this holds binaries of about 1 GB."""


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(PROG, __doc__.splitlines()[0])
    parser.add_argument("file", help="assembly text ('-' for stdin)")
    parser.add_argument("-o", "--output", required=True,
                        help="the .esb file to write ('-': stdout)")
    parser.add_argument("--hw", default=None,
                        help="hardware config (path or name) for text without .config")
    return exit_code_of(PROG, lambda: assemble_file(parser.parse_args(argv)))


def assemble_file(args: argparse.Namespace) -> None:
    if is_stdout(args.output) and sys.stdout.isatty():
        raise CommandLineError("refusing to write the .esb binary to a terminal: give -o FILE.esb")
    check_output_file("-o", None if is_stdout(args.output) else args.output)
    refuse_overwriting_inputs({"-o": args.output},
                              {"FILE": None if args.file == "-" else args.file, "--hw": args.hw})
    source = "/dev/stdin" if args.file == "-" else args.file
    text = read_bounded_text(source, MAX_ASSEMBLY_BYTES, "assembly")
    config_hash = resolve_config(args.hw).hash
    program = assemble(text, config_hash)
    if is_stdout(args.output):
        sys.stdout.buffer.write(serialize_esb(program))
        sys.stdout.flush()
    else:
        write_esb(program, args.output)


if __name__ == "__main__":
    sys.exit(main())
