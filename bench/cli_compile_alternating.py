"""`esact-cc --no-cache` as whole processes from two source trees, alternated compile by compile.

The pair loop is alternating_trees.py's; here, one compile of bench_cli_processes.py's
bert_base_{seq}.onnx (its --workdir), and the two binaries of every pair must be identical.

    python bench/cli_compile_alternating.py --base /tmp/base --new . --workdir DIR
        [--seq 128 512] [--pairs 3] [--threads 1 default] [--json FILE]
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from alternating_trees import Tool, main

COMPILE = Tool(
    name="esact-cc",
    # The esact-cc command's entry point (console_main; a tree before it: main).
    entry=("import sys; import esact_cc.cli.esact_cc_main as cli; sys.argv[0] = 'esact-cc'; "
           "sys.exit(getattr(cli, 'console_main', cli.main)())"),
    command=lambda seq, workdir, out: [str(workdir / f"bert_base_{seq}.onnx"), "-o",
                                       str(out / "model.esb"), "--no-cache"],
    outcome=lambda out: hashlib.sha256((out / "model.esb").read_bytes()).hexdigest(),
    default_threads=("1", "default"))

if __name__ == "__main__":
    sys.exit(main(COMPILE, __doc__.split("\n\n")[0]))
