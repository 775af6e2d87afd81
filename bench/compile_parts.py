"""CPU seconds of the named parts of one `esact-cc` compile, in-process (issue 16).

Whole processes drown a 0.1-0.3 s part in a loaded machine's noise; here one compile runs in
this process with each part's function wrapped by a process_time timer (no profiler: its
per-call cost would inflate the per-instruction Python many times). The passes' own CPU
comes from `--mlir-timing`'s table; add that option to see it. Run a source tree's parts
through bench/source_tree_package.py (PYTHONPATH + PYTHONSAFEPATH=1):

    OMP_NUM_THREADS=1 python bench/compile_parts.py --json parts.json -- \
        bert_base_512.onnx -o m.esb --no-cache --mlir-timing
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys
import time
from collections import defaultdict

PARTS = [  # (module, function): the parts of a compile outside the passes' table
    ("esact_cc.frontend.stable_file_read", "_read_exactly"),
    ("esact_cc.frontend.onnx_frontend", "import_onnx"),
    ("esact_cc.passes.quantize", "per_channel_weight"),
    ("esact_cc.passes.schedule", "program_accesses"),
    ("esact_cc.backend.token_assignment", "assign_tokens"),
    ("esact_cc.backend.emit_esb", "program_from_module"),
    ("esact_cc.runtime.esb", "esb_parts"),
    ("esact_cc.runtime.esb", "validate_program"),
    ("esact_cc.runtime.esb", "encode_program"),
    ("esact_cc.runtime.esb", "checksum"),
    ("esact_cc.runtime.esb", "write_esb"),
]
IMPORTED_BY_NAME = [  # (module that imported the function by name, name, defining module)
    ("esact_cc.passes.schedule", "assign_tokens", "esact_cc.backend.token_assignment"),
    ("esact_cc.backend.emit_esb", "write_esb", "esact_cc.runtime.esb"),
]


def timed_parts() -> tuple[dict[str, float], dict[str, int]]:
    """Wrap every part (outermost call only); the dicts fill in as they run."""
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for module_name, name in PARTS:
        module = importlib.import_module(module_name)
        setattr(module, name, _timer(getattr(module, name), f"{module_name.rsplit('.', 1)[1]}."
                                     f"{name}", seconds, calls))
    for user, name, source in IMPORTED_BY_NAME:
        setattr(importlib.import_module(user), name,
                getattr(importlib.import_module(source), name))
    return seconds, calls


def _timer(function, key: str, seconds: dict[str, float], calls: dict[str, int]):  # type: ignore[no-untyped-def]
    active = [False]

    @functools.wraps(function)
    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        if active[0]:
            return function(*args, **kwargs)
        active[0], start = True, time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[key] += time.process_time() - start
            calls[key] += 1
            active[0] = False
    return timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the parts here")
    parser.add_argument("esact_cc_args", nargs=argparse.REMAINDER, help="after --: esact-cc's")
    args = parser.parse_args()
    compile_args = [a for a in args.esact_cc_args if a != "--"] or parser.error("no esact-cc arguments")
    start = time.process_time()
    seconds, calls = timed_parts()
    from esact_cc.cli.esact_cc_main import main as esact_cc_main

    imports = time.process_time() - start
    start = time.process_time()
    status = esact_cc_main(compile_args)
    result = {"esact_cc_args": compile_args, "exit": status, "imports_before_main_cpu_s": imports,
              "main_cpu_s": time.process_time() - start,
              "parts_cpu_s": dict(sorted(seconds.items(), key=lambda kv: -kv[1])),
              "calls": dict(calls)}
    for key, value in result["parts_cpu_s"].items():
        print(f"{key:36s} {value:7.3f} s  x{calls[key]}", file=sys.stderr)
    print(f"main {result['main_cpu_s']:.3f} s CPU (imports before it {imports:.3f})", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
