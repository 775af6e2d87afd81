"""`esact-cc --no-cache` as whole processes from two source trees, alternated compile by compile.

On a shared machine CPU time drifts with the load (caches, SMT), so the trees are run in pairs,
one right after the other, and compared pair by pair. Each tree is a checkout of this
repository (`git worktree add /tmp/base COMMIT`); it runs through a package directory made here
(links to its esact_cc/, dialects/, passes/ and runtime/) put first on PYTHONPATH, so the
installed package does not shadow it. The models are bench_cli_processes.py's (`--workdir` of
that script: bert_base_{seq}.onnx); the two binaries of every pair must be identical.

    python bench/cli_compile_alternating.py --base /tmp/base --new . --workdir DIR
        [--seq 128 512] [--pairs 3] [--threads 1 default] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_cli_processes import run_process, thread_environment
from source_tree_package import package_dir

COMPILE = ("import sys; from esact_cc.cli.esact_cc_main import main; "
           "sys.argv[0] = 'esact-cc'; sys.exit(main())")


def compile_once(path: Path, model: Path, output: Path, env: dict[str, str]) -> dict:
    measured = run_process([sys.executable, "-c", COMPILE, str(model), "-o", str(output),
                            "--no-cache"], env | {"PYTHONPATH": str(path)})
    if measured["exit"]:
        raise SystemExit(f"compile failed ({path}): {measured['error']}")
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    return {k: measured[k] for k in ("cpu_s", "wall_s", "peak_rss_mib")} | {"sha256": digest}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--seq", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--threads", nargs="+", default=["1", "default"])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="esact_compile_alt_"))
    trees = {"base": package_dir(args.base.resolve(), scratch / "base"),
             "new": package_dir(args.new.resolve(), scratch / "new")}
    results = []
    for seq in args.seq:
        model = args.workdir / f"bert_base_{seq}.onnx"
        for threads in args.threads:
            env = {k: v for k, v in thread_environment(threads).items()
                   if k != "PYTHONDONTWRITEBYTECODE"}
            pairs = [{name: compile_once(path, model, scratch / f"{name}.esb", env)
                      for name, path in trees.items()} for _ in range(args.pairs)]
            if any(p["base"]["sha256"] != p["new"]["sha256"] for p in pairs):
                raise SystemExit(f"seq {seq} threads {threads}: the binaries differ")
            cpu = {name: [p[name]["cpu_s"] for p in pairs] for name in trees}
            results.append({"seq": seq, "threads": threads, "pairs": pairs,
                            "load_average": os.getloadavg()})
            print(f"seq {seq} threads {threads}: CPU s base {cpu['base']} -> new {cpu['new']}; "
                  f"median {statistics.median(cpu['base']):.2f} -> "
                  f"{statistics.median(cpu['new']):.2f}, every pair faster: "
                  f"{all(p['new']['cpu_s'] < p['base']['cpu_s'] for p in pairs)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"base": str(args.base), "new": str(args.new),
                                         "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
