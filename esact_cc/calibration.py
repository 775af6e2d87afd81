"""Calibration inputs and activation ranges for INT8 post-training quantization.

`load_calibration_samples` reads `--calibration-data FILE.npz` (keys = model input names, the
leading axis indexes samples), `synthetic_calibration_input` builds the stated default when no
file is given, and `collect_peaks` runs the reference interpreter on the transformer-level IR
over the samples and returns max |value| of each requested SSA value.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue

from esact_cc import tensor_types
from esact_cc.reference_interpreter import Interpreter, io_names, main_function
from esact_cc.runtime.errors import CompileError
from esact_cc.weight_store import WeightStore

SYNTHETIC_SEED = 0


def input_names(function: func.FuncOp) -> list[str]:
    return io_names(function, results=False)


def _arg_spec(arg: SSAValue) -> tuple[tuple[int, ...], np.dtype]:
    typ = arg.type
    if not isinstance(typ, TensorType):
        raise CompileError(f"function argument of type {typ} is not a tensor")
    return tuple(typ.get_shape()), tensor_types.numpy_dtype_of(typ)


def synthetic_calibration_input(module: ModuleOp) -> dict[str, np.ndarray]:
    """The default calibration sample: integer inputs all 1 (a valid token id, attention mask
    and segment id for every text model), float inputs standard normal with seed 0."""
    function = main_function(module)
    rng = np.random.default_rng(SYNTHETIC_SEED)
    sample = {}
    for name, arg in zip(input_names(function), function.args):
        shape, dtype = _arg_spec(arg)
        if np.issubdtype(dtype, np.floating):
            sample[name] = rng.standard_normal(shape).astype(dtype)
        else:
            sample[name] = np.ones(shape, dtype)
    return sample


def load_calibration_samples(module: ModuleOp, path: str | Path) -> list[dict[str, np.ndarray]]:
    """Samples from an `.npz`: each key a model input; axis 0 indexes samples. A sample's shape
    must equal the input's shape, or the input's shape without its leading batch dim of 1."""
    function = main_function(module)
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise CompileError(f"calibration data '{path}' not found") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise CompileError(f"cannot read calibration data '{path}': {' '.join(str(e).split())}") from None
    names = input_names(function)
    missing = [n for n in names if n not in arrays]
    if missing:
        raise CompileError(f"calibration data '{path}' lacks input(s) {', '.join(missing)}")
    count = None
    per_input: dict[str, np.ndarray] = {}
    for name, arg in zip(names, function.args):
        shape, dtype = _arg_spec(arg)
        data = arrays[name]
        if data.shape[1:] == shape:
            samples = data
        elif len(shape) >= 1 and shape[0] == 1 and data.shape[1:] == shape[1:]:
            samples = data[:, None]
        else:
            raise CompileError(
                f"calibration data '{path}': input '{name}' has shape {list(data.shape)}, "
                f"expected [samples, {', '.join(map(str, shape))}]"
            )
        if count is not None and samples.shape[0] != count:
            raise CompileError(f"calibration data '{path}': inputs have different sample counts")
        count = samples.shape[0]
        per_input[name] = samples.astype(dtype, copy=False)
    if not count:
        raise CompileError(f"calibration data '{path}' holds no samples")
    return [{n: per_input[n][i] for n in names} for i in range(count)]


class _PeakRecorder(Interpreter):
    """Runs the IR and keeps max |value| of the watched SSA values."""

    def __init__(self, store: WeightStore, watched: Sequence[SSAValue]):
        super().__init__(store)
        self.peaks = {v: 0.0 for v in watched}

    def run_op(self, op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
        for value, arg in zip(op.operands, args):
            if value in self.peaks:
                self._record(value, arg)
        return super().run_op(op, args)

    def _record(self, value: SSAValue, arr: np.ndarray) -> None:
        arr = np.asarray(arr, np.float32)
        finite = arr[np.isfinite(arr)]
        if finite.size:
            self.peaks[value] = max(self.peaks[value], float(np.max(np.abs(finite))))


def collect_peaks(
    module: ModuleOp,
    store: WeightStore,
    samples: Sequence[dict[str, np.ndarray]],
    values: Sequence[SSAValue],
) -> dict[SSAValue, float]:
    """max |v| over all samples for each SSA value in `values` (each must be an operand of
    some op of @main), computed by the reference interpreter on the module as it is."""
    recorder = _PeakRecorder(store, list(dict.fromkeys(values)))
    function = main_function(module)
    for sample in samples:
        recorder.env.clear()
        recorder.run_function(function, sample)
    return recorder.peaks
