"""Benchmark: how ONNX import and lift-transformer scale with graph size.

    python bench/bench_lift_scaling.py [--sizes 10000 40000 100000] [--kinds host blocks]
                                       [--repeat 1] [--out bench/results/lift_scaling.json]

Two kinds of chain, built with onnx.helper (no files):
- `host`: Neg, Abs, Relu, Sigmoid, ... on a 1x8 tensor; nothing is lifted, the whole chain is
  one `transformer.host` region;
- `blocks`: repeated MatMul + bias Add (-> transformer.linear), LayerNormalization
  (-> transformer.layer_norm), Softmax (-> transformer.softmax) and a Neg left on the host, so
  the lift rewrites ~3/4 of the nodes and host regions alternate with accelerator ops (every
  Neg is its own region at its own stage).

Each size runs in a fresh subprocess (memory and caches are its own): it times the ONNX import
(`import_onnx`) and the lift (`lift_module`, including host grouping) separately, in CPU
seconds of the process (wall seconds are recorded too, but on a shared machine they measure
the neighbours as much as the code), and reports
both (the best of `--repeat` runs: the machine is shared), per size, plus the largest/smallest
time ratio of each. Linear scaling gives a ratio equal to the size ratio (10 for 100k/10k).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

HIDDEN = 8
HOST_CYCLE = ("Neg", "Abs", "Relu", "Sigmoid")
BLOCK_NODES = 5  # MatMul, Add, LayerNormalization, Softmax, Neg

_CHILD = """
    import json, sys, time
    sys.path.insert(0, {bench_dir!r})
    from bench_lift_scaling import build_chain
    from esact_cc.frontend.onnx_frontend import import_onnx
    from esact_cc.passes.lift_transformer import lift_module
    model = build_chain({kind!r}, {size})
    w0, c0 = time.perf_counter(), time.process_time()
    module, store = import_onnx(model)
    w1, c1 = time.perf_counter(), time.process_time()
    report = lift_module(module, store)
    w2, c2 = time.perf_counter(), time.process_time()
    ops = sum(1 for _ in module.walk())
    print(json.dumps({{"import_s": c1 - c0, "lift_s": c2 - c1, "import_wall_s": w1 - w0,
                      "lift_wall_s": w2 - w1, "ops_after_lift": ops,
                      "lifted": dict(report.lifted)}}))
"""


def build_chain(kind: str, size: int):  # -> onnx.ModelProto
    """A chain of about `size` ONNX nodes of the given kind (see the module docstring)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    initializers = []
    current = "x"

    def node(op_type: str, inputs: list[str], **attrs) -> None:
        nonlocal current
        out = f"v{len(nodes)}"
        nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{len(nodes)}", **attrs))
        current = out

    if kind == "host":
        for i in range(size):
            node(HOST_CYCLE[i % len(HOST_CYCLE)], [current])
    elif kind == "blocks":
        rng = np.random.default_rng(0)
        # One shared weight set keeps the model small; every block still gets its own ops.
        weight = rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32)
        bias = rng.standard_normal(HIDDEN).astype(np.float32)
        for name, array in (("W", weight), ("b", bias), ("gamma", np.ones(HIDDEN, np.float32)),
                            ("beta", np.zeros(HIDDEN, np.float32))):
            initializers.append(numpy_helper.from_array(array, name))
        for _ in range(max(1, size // BLOCK_NODES)):
            node("MatMul", [current, "W"])
            node("Add", [current, "b"])
            node("LayerNormalization", [current, "gamma", "beta"], axis=-1, epsilon=1e-5)
            node("Softmax", [current], axis=-1)
            node("Neg", [current])
    else:
        raise ValueError(f"unknown chain kind {kind!r}")
    graph = helper.make_graph(
        nodes,
        f"{kind}_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, HIDDEN])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, [1, HIDDEN])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def measure(kind: str, size: int, repeat: int) -> dict:
    """The run with the fastest lift among `repeat` fresh processes (import: its own best)."""
    code = textwrap.dedent(_CHILD.format(bench_dir=str(Path(__file__).parent), kind=kind,
                                         size=size))
    runs = []
    for _ in range(repeat):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise SystemExit(f"{kind} chain of {size} failed:\n{result.stderr}")
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda run: run["lift_s"])
    return {**best, "import_s": min(run["import_s"] for run in runs), "runs": len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 40_000, 100_000])
    parser.add_argument("--kinds", nargs="+", default=["host", "blocks"],
                        choices=["host", "blocks"])
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (best is kept)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the results as JSON here (default: print only)")
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    results: dict[str, dict] = {}
    for kind in args.kinds:
        rows = {}
        for size in sizes:
            rows[size] = measure(kind, size, args.repeat)
            row = rows[size]
            print(f"{kind:6s} {size:7d} nodes: import {row['import_s']:7.2f} s, "
                  f"lift {row['lift_s']:7.2f} s (CPU)", flush=True)
        small, large = rows[sizes[0]], rows[sizes[-1]]
        ratios = {
            "size": sizes[-1] / sizes[0],
            "import": large["import_s"] / small["import_s"],
            "lift": large["lift_s"] / small["lift_s"],
        }
        print(f"{kind:6s} {sizes[-1]}/{sizes[0]}: size x{ratios['size']:.1f}, "
              f"import x{ratios['import']:.2f}, lift x{ratios['lift']:.2f}")
        results[kind] = {"per_size": {str(s): r for s, r in rows.items()}, "ratio": ratios}
    if args.out is not None:
        from esact_cc.runtime.atomic_write import atomic_write_bytes

        text = json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2)
        atomic_write_bytes(args.out, (text + "\n").encode())


if __name__ == "__main__":
    main()
