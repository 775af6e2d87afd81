"""Host segments: ONNX subgraphs the HOST instruction runs on the CPU with onnxruntime.

A host segment's graph inputs are read from, and its graph outputs written to, the DRAM
tensors its bindings describe (name = ONNX graph input/output name). Sessions are cached by
the SHA-256 of the model bytes. Every failure (model rejected, binding mismatch, runtime
error) is a ProgramError.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
from typing import Any

import numpy as np

from .errors import ProgramError
from .esb import HostSegment, TensorDesc

_SESSIONS: dict[str, Any] = {}
_MAX_CACHED_SESSIONS = 64


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def host_session(onnx_bytes: bytes) -> Any:
    """An onnxruntime InferenceSession for the model (cached)."""
    key = hashlib.sha256(onnx_bytes).hexdigest()
    session = _SESSIONS.get(key)
    if session is None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4  # fatal only: errors come back as exceptions
        options.intra_op_num_threads = 1  # deterministic reductions
        options.inter_op_num_threads = 1
        try:
            # onnxruntime's Python wrapper prints provider fallbacks: keep stdout clean.
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                session = ort.InferenceSession(onnx_bytes, sess_options=options,
                                               providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ProgramError(f"ONNX model rejected by onnxruntime: {_first_line(exc)}") \
                from None
        if len(_SESSIONS) >= _MAX_CACHED_SESSIONS:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[key] = session
    return session


def _read(dram: np.ndarray, t: TensorDesc) -> np.ndarray:
    dt = np.dtype(t.dtype).newbyteorder("<")
    nbytes = math.prod(t.shape) * dt.itemsize
    if t.address + nbytes > dram.shape[0]:
        raise ProgramError(f"tensor '{t.name}' lies outside DRAM")
    return dram[t.address:t.address + nbytes].copy().view(dt).reshape(t.shape)


def run_host_segment(segment: HostSegment, dram: np.ndarray) -> tuple[int, int]:
    """Run the segment on `dram` in place; returns (bytes read, bytes written)."""
    session = host_session(segment.onnx)
    graph_inputs = {i.name for i in session.get_inputs()}
    graph_outputs = [o.name for o in session.get_outputs()]
    bound_inputs = {t.name for t in segment.inputs}
    if bound_inputs != graph_inputs:
        raise ProgramError(f"bindings name inputs {sorted(bound_inputs)}, the ONNX graph has "
                           f"{sorted(graph_inputs)}")
    unknown = {t.name for t in segment.outputs} - set(graph_outputs)
    if unknown:
        raise ProgramError(f"bound outputs {sorted(unknown)} are not ONNX graph outputs")
    feeds = {t.name: _read(dram, t) for t in segment.inputs}
    names = [t.name for t in segment.outputs]
    try:
        results = session.run(names, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
        raise ProgramError(f"onnxruntime failed: {_first_line(exc)}") from None
    written = 0
    for t, value in zip(segment.outputs, results):
        array = np.asarray(value)
        if array.shape != t.shape or array.dtype != np.dtype(t.dtype):
            raise ProgramError(f"output '{t.name}' is {array.dtype}{list(array.shape)}, binding "
                               f"says {t.dtype}{list(t.shape)}")
        raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).view(np.uint8)
        raw = raw.reshape(-1)
        if t.address + raw.size > dram.shape[0]:
            raise ProgramError(f"tensor '{t.name}' lies outside DRAM")
        dram[t.address:t.address + raw.size] = raw
        written += raw.size
    read = sum(t.nbytes for t in segment.inputs)
    return read, written
