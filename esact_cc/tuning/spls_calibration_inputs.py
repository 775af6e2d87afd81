"""Calibration inputs for SPLS tuning: read the user's .npz into per-sample model inputs.

Owns matching the file's arrays to the ONNX model's graph inputs (by name, by `--input
NAME=ARRAY`, or the only candidate of a one-input model), the optional integer labels, and the
sample limit. Every mismatch is a one-line `CompileError` naming the file and the array.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esact_cc.tuning.calibration import read_calibration_arrays
from esact_cc.runtime.errors import CompileError


@dataclass
class CalibrationData:
    """Samples (model input name -> array with the batch dim), optional integer labels."""

    samples: list[dict[str, np.ndarray]]
    labels: np.ndarray | None
    source: str
    sha256: str = ""


def model_inputs(model: str | os.PathLike[str]) -> dict[str, int]:
    """Graph inputs (not initializers) of an ONNX file -> rank."""
    from esact_cc.frontend.onnx_frontend import load_model

    proto = load_model(model)[0]
    initializers = {t.name for t in proto.graph.initializer}
    return {i.name: len(i.type.tensor_type.shape.dim) for i in proto.graph.input
            if i.name not in initializers}


def load_calibration_data(path: str | os.PathLike[str], inputs: Mapping[str, int],
                          labels_key: str | None, input_keys: Mapping[str, str] | None = None,
                          limit: int = 0) -> CalibrationData:
    """Read `path` (.npz, samples along axis 0): one array per model input, found by input name,
    by `input_keys` (input -> array name), or, for a one-input model, the only array that is not
    the labels; arrays may omit the model's leading batch dim of 1."""
    path = Path(path)
    arrays, digest = read_calibration_arrays(path)
    where = f"calibration data '{path}'"
    keys = dict(input_keys or {})
    unknown = sorted(set(keys) - set(inputs))
    if unknown:
        raise CompileError(f"--input names {', '.join(unknown)}, which the model does not have "
                           f"(inputs: {', '.join(inputs)})")
    if labels_key is not None and labels_key not in arrays:
        raise CompileError(f"{where} has no labels array '{labels_key}' "
                           f"(arrays: {', '.join(sorted(arrays))})")
    absent = sorted(f"{name}={array}" for name, array in keys.items() if array not in arrays)
    if absent:  # a mapping the user gave is never replaced by a guess
        raise CompileError(f"--input {', '.join(absent)}: {where} has no such array "
                           f"(arrays: {', '.join(sorted(arrays))})")
    for name in inputs:
        keys.setdefault(name, name)
    missing = [n for n in inputs if keys[n] not in arrays]
    if missing:
        candidates = sorted(set(arrays) - {labels_key} - set(keys.values()))
        if len(inputs) == 1 and len(candidates) == 1:
            keys[missing[0]] = candidates[0]
        else:
            raise CompileError(f"{where} lacks model input(s) {', '.join(missing)} (arrays: "
                               f"{', '.join(sorted(arrays))}); map one with --input NAME=ARRAY")
    count = None
    per_input: dict[str, np.ndarray] = {}
    for name, rank in inputs.items():
        data = arrays[keys[name]]
        if data.ndim == rank:  # samples without the model's batch dim (of 1)
            data = data[:, None]
        elif data.ndim != rank + 1:
            raise CompileError(f"{where}: array '{keys[name]}' for input '{name}' has rank "
                               f"{data.ndim}, expected {rank + 1} ([samples, ...input shape])")
        if count is not None and data.shape[0] != count:
            raise CompileError(f"{where}: arrays have different sample counts")
        count = data.shape[0]
        per_input[name] = data
    if not count:
        raise CompileError(f"{where} holds no samples")
    labels = None
    if labels_key is not None:
        labels = arrays[labels_key]
        if labels.ndim != 1 or labels.shape[0] != count or not np.issubdtype(labels.dtype,
                                                                             np.integer):
            raise CompileError(f"{where}: labels '{labels_key}' must be [{count}] integers, got "
                               f"{labels.dtype} {list(labels.shape)}")
    n = count if limit <= 0 else min(limit, count)
    samples = [{name: np.ascontiguousarray(per_input[name][i]) for name in inputs}
               for i in range(n)]
    for sample in samples:
        for name, value in sample.items():
            if value.ndim != inputs[name]:
                raise CompileError(f"{where}: input '{name}' sample has rank {value.ndim}, "
                                   f"the model expects {inputs[name]}")
    return CalibrationData(samples, None if labels is None else labels[:n].astype(np.int64),
                           str(path), digest)

