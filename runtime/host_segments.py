"""Host segments: ONNX subgraphs the HOST instruction runs on the CPU with onnxruntime.

A host segment's graph inputs are read from, and its graph outputs written to, the DRAM
tensors its bindings describe (name = ONNX graph input/output name). Sessions are cached by
the SHA-256 of the model bytes. A segment's session is made from its model with the large
initializers fed as inputs (host_model_tables.py: no copies of BERT's embedding table).
Every failure (model rejected, binding mismatch, runtime error) is a ProgramError.

A segment's graph may loop forever (a Loop whose condition stays true), and a thread blocked in
onnxruntime never sees Ctrl-C. So the session runs in a worker thread while the main thread
waits, interruptibly, for at most `time_limit` seconds (default HOST_TIME_LIMIT_S, esact-run
--host-time-limit); on the limit, Ctrl-C or SIGTERM it sets onnxruntime's RunOptions.terminate,
which stops the run at the next node, and waits for the worker to return.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import ProgramError
from .esb import HostSegment, TensorDesc

_SESSIONS: dict[bytes, Any] = {}
_TABLES: dict[bytes, dict[str, np.ndarray]] = {}  # the tables a segment session is fed
_MAX_CACHED_SESSIONS = 64
HOST_TIME_LIMIT_S = 60.0
"""Default wall-clock limit of one HOST instruction (ms in every model this project compiles)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def host_session(onnx_bytes: bytes, digest: bytes | None = None) -> Any:
    """An onnxruntime InferenceSession for the model (cached by its SHA-256 `digest`, computed
    here unless the caller knows it)."""
    key = digest or hashlib.sha256(onnx_bytes).digest()
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
            _TABLES.pop(next(iter(_SESSIONS)), None)
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[key] = session
    return session


def segment_key(segment: HostSegment, name: bytes | None = None) -> bytes:
    """The session cache key of a segment's session (its tables lifted: not the key of the
    model's own session, which other callers of `host_session` get): by its model's digest,
    or by the `name` a caller gives it (then released by that name, release_session)."""
    return _lifted_key(segment.digest if name is None else name)


def _lifted_key(digest: bytes) -> bytes:
    return digest + b"/tables"


def segment_session(segment: HostSegment, name: bytes | None = None
                    ) -> tuple[Any, dict[str, np.ndarray]]:
    """(session, tables to feed) of a host segment: its model's large initializers lifted
    to graph inputs (host_model_tables.py), so onnxruntime reads them in place. Cached under
    segment_key(segment, name)."""
    key = segment_key(segment, name)
    tables = _TABLES.get(key)
    if tables is not None and key in _SESSIONS:
        return host_session(segment.onnx, key), tables  # cached
    from .host_model_tables import lift_large_initializers

    model, tables = lift_large_initializers(segment.onnx)
    session = host_session(model, key)
    _TABLES[key] = tables
    return session, tables


def release_session(digest: bytes) -> None:
    """Forget the cached sessions of the model with this SHA-256 digest (or of the segment
    session cached under this name): a session may hold a copy of the model's tensors
    (BERT-base's embedding table: 105 MiB) until released."""
    _SESSIONS.pop(digest, None)
    _SESSIONS.pop(_lifted_key(digest), None)
    _TABLES.pop(_lifted_key(digest), None)


def positive_seconds(text: str) -> float:
    """argparse type of a time limit: a finite number of seconds > 0."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"{text}: expected a number of seconds > 0")
    return seconds


def _read(dram: np.ndarray, t: TensorDesc) -> np.ndarray:
    dt = np.dtype(t.dtype).newbyteorder("<")
    nbytes = math.prod(t.shape) * dt.itemsize
    if t.address + nbytes > dram.shape[0]:
        raise ProgramError(f"tensor '{t.name}' lies outside DRAM")
    return dram[t.address:t.address + nbytes].copy().view(dt).reshape(t.shape)


def run_with_time_limit(session: Any, names: Sequence[str], feeds: Mapping[str, np.ndarray],
                        time_limit: float) -> list[Any]:
    """`session.run(names, feeds)`, stopped after `time_limit` seconds (a ProgramError) or by
    Ctrl-C / SIGTERM in the main thread (re-raised once onnxruntime has stopped)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4  # the terminate flag's error comes back as an exception
    outcome: dict[str, Any] = {}
    # An Event, not Thread.join: a join interrupted by Ctrl-C marks the thread stopped while
    # it still runs (CPython bpo-45274), and exiting with onnxruntime mid-run aborts.
    finished = threading.Event()

    def run() -> None:
        try:
            outcome["results"] = session.run(list(names), dict(feeds), options)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=run, name="host-segment", daemon=True).start()
    try:
        finished.wait(time_limit)  # interruptible: signal handlers run in this thread
    finally:
        if not finished.is_set():  # time limit, or a KeyboardInterrupt/SIGTERM on its way up
            options.terminate = True
            finished.wait()
            outcome.setdefault("timeout", True)
    if "timeout" in outcome:
        raise ProgramError(f"host segment still running after the {time_limit:g} s time limit "
                           f"(esact-run --host-time-limit)")
    if "error" in outcome:
        raise ProgramError(f"onnxruntime failed: {_first_line(outcome['error'])}")
    return outcome["results"]


def run_host_segment(segment: HostSegment, dram: np.ndarray,
                     time_limit: float = HOST_TIME_LIMIT_S, name: bytes | None = None
                     ) -> tuple[int, int]:
    """Run the segment on `dram` in place within `time_limit` seconds; returns (bytes read,
    bytes written). `name`: see segment_session."""
    session, tables = segment_session(segment, name)
    graph_inputs = {i.name for i in session.get_inputs()} - set(tables)
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
    results = run_with_time_limit(session, names, feeds | tables, time_limit)
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
