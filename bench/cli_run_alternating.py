"""esact-run as whole processes from two source trees, alternated run by run (before / after).

The pair loop is alternating_trees.py's; here, one run of bench_cli_processes.py's binary
bert_base_{seq}_1.esb on its inputs bert_base_{seq}.npz (its --workdir), and the outputs and
the report (less the binary's path) of every pair must be identical byte for byte.

    python bench/cli_run_alternating.py --base /tmp/base --new . --workdir DIR
        [--base-workdir DIR] [--seq 128 512] [--pairs 3] [--threads 1] [--json FILE]

(--base-workdir: the base tree's binaries, compiled by that tree, when the .esb format
changed between the two.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from alternating_trees import Tool, main


def outputs_and_report(out: Path) -> tuple[dict[str, bytes], dict]:
    report = json.loads((out / "report.json").read_text())
    report["meta"].pop("binary", None)
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.npy"))}, report


RUN = Tool(
    name="esact-run",
    entry=("import sys; from esact_cc.runtime.cli.esact_run_main import main; "
           "sys.argv[0] = 'esact-run'; sys.exit(main())"),
    command=lambda seq, workdir, out: [str(workdir / f"bert_base_{seq}_1.esb"), "--input",
                                       str(workdir / f"bert_base_{seq}.npz"), "--quiet",
                                       "--output-dir", str(out), "--report",
                                       str(out / "report.json")],
    outcome=outputs_and_report,
    default_threads=("1",))

if __name__ == "__main__":
    sys.exit(main(RUN, __doc__.split("\n\n")[0]))
