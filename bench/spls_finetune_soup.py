"""A uniform weight average ("model soup", Wortsman et al. 2022) of fine-tuned ONNX models.

The models must be the same graph with different initializer values (esact-finetune's outputs
from one model, e.g. the same recipe at several seeds); every initializer is averaged
elementwise, float ones in float64 then cast back, and written into the first model's graph.
Fine-tuning runs that start from the same weights and stay close to them average into one
model that often generalizes better than each (bench/spls_finetune_folds.py measures it like any
fine-tuned model; docs/spls_results.md, "Fine-tuning").

    python bench/spls_finetune_soup.py A.onnx B.onnx [C.onnx ...] -o SOUP.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def average_models(paths: list[Path]) -> onnx.ModelProto:
    models = [onnx.load(str(p)) for p in paths]
    first = models[0]
    for path, model in zip(paths[1:], models[1:]):
        if model.graph.node != first.graph.node:
            raise SystemExit(f"{path}: not the same graph as {paths[0]}")
    tables = [{t.name: numpy_helper.to_array(t) for t in m.graph.initializer} for m in models]
    for index, tensor in enumerate(first.graph.initializer):
        values = [table[tensor.name] for table in tables]
        if not np.issubdtype(values[0].dtype, np.floating) or all(
                np.array_equal(values[0], v) for v in values[1:]):
            continue
        mean = np.mean(np.stack(values).astype(np.float64), axis=0).astype(values[0].dtype)
        first.graph.initializer[index].CopyFrom(numpy_helper.from_array(mean, tensor.name))
    return first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    if len(args.models) < 2:
        ap.error("give at least two models")
    onnx.save(average_models(args.models), str(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
