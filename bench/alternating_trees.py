"""One tool as whole processes from two source trees, alternated pair by pair (before / after).

On a machine shared with other work, CPU time drifts with the load (caches, SMT), so the two
trees are run in pairs, one right after the other, and compared pair by pair. Each tree is a
checkout of this repository (`git worktree add /tmp/base COMMIT`); it runs through a package
directory (source_tree_package.py) put first on PYTHONPATH, so the installed package does not
shadow it. The models are bench_cli_processes.py's (`--workdir` of that script). The tool's
script (cli_compile_alternating.py, cli_run_alternating.py) says how one process runs and what
of it must be the same in both trees; a pair that differs fails the run (exit 1).

The children run with PYTHONSAFEPATH=1: `python -c` otherwise puts the current directory
first on sys.path, and launched from a source tree's root both sides of a pair would run that
tree. Their environment is bench_cli_processes.thread_environment's (bytecode written, as in
a user's installed package).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_cli_processes import run_process, thread_environment
from source_tree_package import package_dir


@dataclass(frozen=True)
class Tool:
    """How one process of a tool runs from a package directory, and what must match.

    `command(seq, workdir, out)` is the child's argument list (after the interpreter) writing
    into the fresh directory `out`; `outcome(out)` reads what it wrote into a value that must
    be equal in both trees of a pair (a digest, outputs and reports)."""

    name: str
    entry: str  # the Python statement that runs the tool's main()
    command: Callable[[int, Path, Path], list[str]]
    outcome: Callable[[Path], object]
    default_threads: tuple[str, ...]


def run_once(tool: Tool, root: Path, seq: int, env: dict[str, str], workdir: Path,
             out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        stale.unlink()
    measured = run_process([sys.executable, "-c", tool.entry, *tool.command(seq, workdir, out)],
                           env | {"PYTHONPATH": str(root), "PYTHONSAFEPATH": "1"})
    if measured["exit"]:
        raise SystemExit(f"{tool.name} failed ({root}): {measured['error']}")
    return {"cpu_s": measured["cpu_s"], "wall_s": measured["wall_s"],
            "peak_rss_mib": measured["peak_rss_mib"], "outcome": tool.outcome(out)}


def alternate(tool: Tool, roots: dict[str, Path], seq: int, threads: str,
              workdirs: dict[str, Path], pairs: int, scratch: Path) -> dict:
    """`pairs` pairs of runs (base then new, each tree on its workdir's files) of one setting:
    CPU seconds and whether every pair's outcomes were equal."""
    env = thread_environment(threads)
    cpu: dict[str, list[float]] = {name: [] for name in roots}
    rss: dict[str, float] = {}
    identical = True
    for _ in range(pairs):
        pair = {name: run_once(tool, root, seq, env, workdirs[name], scratch / name)
                for name, root in roots.items()}
        identical &= pair["base"]["outcome"] == pair["new"]["outcome"]
        for name, measured in pair.items():
            cpu[name].append(measured["cpu_s"])
            rss[name] = measured["peak_rss_mib"]
    faster = all(new < base for base, new in zip(cpu["base"], cpu["new"]))
    print(f"{tool.name} seq {seq} threads {threads}: CPU s base {cpu['base']} -> new "
          f"{cpu['new']}; min {min(cpu['base']):.2f} -> {min(cpu['new']):.2f}, median "
          f"{statistics.median(cpu['base']):.2f} -> {statistics.median(cpu['new']):.2f}; "
          f"every pair faster: {faster}; identical: {identical}", flush=True)
    return {"seq": seq, "threads": threads, "identical": identical,
            "every_pair_faster": faster, "load_average": os.getloadavg()} | {
        name: {"cpu_s": values, "min": min(values), "median": statistics.median(values),
               "peak_rss_mib": rss[name]} for name, values in cpu.items()}


def main(tool: Tool, description: str) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--base", type=Path, required=True, help="source tree before")
    parser.add_argument("--new", type=Path, required=True, help="source tree after")
    parser.add_argument("--workdir", type=Path, required=True,
                        help="bench_cli_processes.py's --workdir (models, inputs, binaries)")
    parser.add_argument("--base-workdir", type=Path,
                        help="the base tree's --workdir when its binaries differ (an .esb "
                             "format change: each tree runs the binary it compiles; default "
                             "--workdir)")
    parser.add_argument("--seq", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--threads", nargs="+", default=list(tool.default_threads))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix=f"esact_alternating_{tool.name}_"))
    roots = {name: package_dir(tree.resolve(), scratch / "trees" / name)
             for name, tree in (("base", args.base), ("new", args.new))}
    workdirs = {"base": args.base_workdir or args.workdir, "new": args.workdir}
    results = [alternate(tool, roots, seq, threads, workdirs, args.pairs, scratch / "out")
               for seq in args.seq for threads in args.threads]
    if args.json:
        args.json.write_text(json.dumps({"tool": tool.name, "base": str(args.base),
                                         "new": str(args.new), "workdirs": {
                                             name: str(path) for name, path in workdirs.items()},
                                         "results": results},
                                        indent=1) + "\n")
    if not all(result["identical"] for result in results):
        print(f"{tool.name}: the two trees' results differ (see identical: False above)",
              file=sys.stderr)
        return 1
    return 0
