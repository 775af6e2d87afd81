"""esact-as: assemble ESACT assembly text (the output of `esact-objdump -d`) into an .esb.

`esact-as FILE.s -o FILE.esb [--hw CONFIG]`: the config hash comes from the text's
`.config` line, else from `--hw` (default config). The output is written atomically; any
error gives one `error:` line, exit status 1 and no output file.
"""

from __future__ import annotations

import argparse
import sys

from ..assembly import assemble
from ..errors import EsactError
from ..esb import write_esb
from ..hw_config import resolve_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="esact-as", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="assembly text ('-' for stdin)")
    parser.add_argument("-o", "--output", required=True, help="the .esb file to write")
    parser.add_argument("--hw", default=None,
                        help="hardware config (path or name) for text without .config")
    args = parser.parse_args(argv)
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read '{args.file}': {getattr(exc, 'strerror', None) or exc}",
              file=sys.stderr)
        return 1
    try:
        config_hash = resolve_config(args.hw).hash
        write_esb(assemble(text, config_hash), args.output)
    except EsactError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write '{args.output}': {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
