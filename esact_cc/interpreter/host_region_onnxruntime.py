"""A host region of a quantized function, run as the binary's HOST instruction runs it.

The binary hands each `transformer.host` region to onnxruntime as one exported model
(esact_cc/frontend/host_region_export.py); its reductions (ReduceMean, ReduceL2, ...), exponentials
and graph fusions round differently from the numpy kernels, by a few ulps (all-MiniLM-L6-v2's
mean pooling and L2 normalisation: 1.5e-8). So in a quantized function, the binary's golden
model, the interpreter runs the same model in the same kind of session
(runtime/host_segments.py: CPU, one thread, the same time limit). FP32 functions keep the numpy
kernels (calibration and the FP32 reference are unchanged).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from esact_cc.dialects import transformer
from esact_cc.frontend.host_region_export import (host_input_names, host_output_names,
                                                  host_region_model)
from esact_cc.frontend.onnx_export import DEFAULT_OPSET, module_opset
from esact_cc.runtime.errors import CompileError, ProgramError
from esact_cc.runtime.host_segments import HOST_TIME_LIMIT_S, host_session, run_with_time_limit
from esact_cc.weight_store import WeightStore

_SESSIONS: weakref.WeakKeyDictionary[transformer.HostOp, tuple[Any, Any]] = \
    weakref.WeakKeyDictionary()
"""Per region op: (a weak reference to the store it was exported with, its session)."""
_BY_TEXT: dict[tuple[int, str], tuple[Any, Any]] = {}
"""Per (store id, the region's printed IR): the same. A tuning run interprets clones of one
module many times; exporting a region again for each clone would copy its weights (MiniLM's
47 MB embedding table: seconds) although its text (weights by name, immutable in a store)
says it is the same model."""
_MAX_BY_TEXT = 64


def _session(op: transformer.HostOp, store: WeightStore) -> Any:
    cached = _SESSIONS.get(op)
    if cached is not None and cached[0]() is store:
        return cached[1]
    key = (id(store), str(op))
    cached = _BY_TEXT.get(key)
    if cached is None or cached[0]() is not store:
        module = op.get_toplevel_object()
        opset = module_opset(module) if isinstance(module, ModuleOp) else DEFAULT_OPSET
        data = host_region_model(op, store, opset, "host").SerializeToString(
            deterministic=True)
        try:
            session = host_session(data)
        except ProgramError as exc:
            raise CompileError(f"host region on onnxruntime: {exc}") from None
        if len(_BY_TEXT) >= _MAX_BY_TEXT:
            _BY_TEXT.pop(next(iter(_BY_TEXT)))
        cached = _BY_TEXT[key] = (weakref.ref(store), session)
    _SESSIONS[op] = cached
    return cached[1]


def run_host_region(op: transformer.HostOp, store: WeightStore,
                    args: list[np.ndarray]) -> list[np.ndarray]:
    """The region's outputs from `args`, computed by onnxruntime on its exported model."""
    session = _session(op, store)
    feeds = dict(zip(host_input_names(op), args, strict=True))
    try:
        results = run_with_time_limit(session, host_output_names(op), feeds, HOST_TIME_LIMIT_S)
    except ProgramError as exc:
        raise CompileError(f"host region on onnxruntime: {exc}") from None
    return [np.asarray(r) for r in results]
