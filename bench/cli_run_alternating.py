"""esact-run as whole processes from two source trees, alternated run by run (before / after).

On a machine shared with other work, CPU time still drifts with the load (caches, SMT), so
the two trees are run in pairs, one right after the other, and compared pair by pair. Each
tree is a checkout of this repository (`git worktree add /tmp/base COMMIT`); it runs through
a package directory made here (links to its esact_cc/, dialects/, passes/ and runtime/) put
first on PYTHONPATH, so the installed package does not shadow it. The binaries and inputs are
bench_cli_processes.py's (`--workdir` of that script: bert_base_{seq}.onnx compiled to
bert_base_{seq}_1.esb, inputs bert_base_{seq}.npz). Outputs and reports of each pair are
compared byte for byte.

    python bench/cli_run_alternating.py --base /tmp/base --new . --workdir DIR
        [--seq 128 512] [--pairs 3] [--threads 1 default] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_cli_processes import run_process, thread_environment
from source_tree_package import package_dir

RUN = ("import sys; from esact_cc.runtime.cli.esact_run_main import main; "
       "sys.argv[0] = 'esact-run'; sys.exit(main())")


def run(root: Path, seq: int, threads: str, workdir: Path, out: Path) -> dict:
    env = thread_environment(threads) | {"PYTHONPATH": str(root)}
    binary, inputs = workdir / f"bert_base_{seq}_1.esb", workdir / f"bert_base_{seq}.npz"
    measured = run_process([sys.executable, "-c", RUN, str(binary), "--input", str(inputs),
                            "--quiet", "--output-dir", str(out), "--report",
                            str(out / "report.json")], env)
    if measured["exit"]:
        raise SystemExit(f"esact-run failed: {measured['error']}")
    report = json.loads((out / "report.json").read_text())
    report["meta"].pop("binary", None)
    return {"cpu_s": measured["cpu_s"], "peak_rss_mib": measured["peak_rss_mib"],
            "files": {p.name: p.read_bytes() for p in sorted(out.glob("*.npy"))},
            "report": report}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="source tree before")
    parser.add_argument("--new", type=Path, required=True, help="source tree after")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--seq", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--threads", nargs="+", default=["1"])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="esact_alternating_"))
    roots = {name: package_dir(tree.resolve(), scratch / name)
             for name, tree in (("base", args.base), ("new", args.new))}
    results = {}
    for seq in args.seq:
        for threads in args.threads:
            cpu: dict[str, list[float]] = {"base": [], "new": []}
            rss: dict[str, float] = {}
            identical = True
            for _ in range(args.pairs):
                pair = {name: run(root, seq, threads, args.workdir, scratch / f"out_{name}")
                        for name, root in roots.items()}
                identical &= (pair["base"]["files"] == pair["new"]["files"]
                              and pair["base"]["report"] == pair["new"]["report"])
                for name, measured in pair.items():
                    cpu[name].append(measured["cpu_s"])
                    rss[name] = measured["peak_rss_mib"]
            results[f"seq{seq}_threads_{threads}"] = {
                name: {"cpu_s": values, "min": min(values),
                       "median": statistics.median(values), "peak_rss_mib": rss[name]}
                for name, values in cpu.items()} | {"outputs_and_reports_identical": identical}
            print(f"{seq:>4} threads {threads:>7}: base min {min(cpu['base']):.2f} median "
                  f"{statistics.median(cpu['base']):.2f} s CPU, new min {min(cpu['new']):.2f} "
                  f"median {statistics.median(cpu['new']):.2f}; identical: {identical}")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"base": str(args.base), "new": str(args.new),
                                         "load_average": load, "results": results},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
