"""Host models that passed `check_host_model` before, remembered by content.

The check imports onnx (with ml_dtypes, 0.6 s CPU and up to 2 s on a loaded machine) and
parses the model twice (onnx.checker and the Python protobuf: twice the 92 MB embedding table
of BERT-base), every time a binary is loaded. Its verdict is a function of the model's bytes,
the checking code and the onnx version, so a model that passed is remembered under the
SHA-256 of all three: a marker file in `checked-host-models/` of esact-cc's cache
directory (`$XDG_CACHE_HOME/esact-cc`, else `~/.cache/esact-cc`, as the compile cache), written
by esact-cc when it emits a binary and by esact-run after a check. A model seen for the first
time, or after the checking code (CHECKER_MODULES) or onnx changed, is checked in full; a model that failed is
never remembered. The marker holds the graph's input and output names (JSON), so a
segment's bindings are still checked against the graph on every load. Whoever can write the cache directory can already replace cached binaries,
so a marker trusts no one the compile cache does not. A marker that cannot be written costs
only the next load's check (the verdict, and so every output, is the same either way).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from .bounded_read import MiB, read_bounded_text
from .errors import UsageError

MEMO_SUBDIRECTORY = "checked-host-models"
MARKER_CAP = 1 * MiB
"""A marker holds a graph's input and output names: anything larger is not one of ours."""


def memo_directory(environment: Mapping[str, str] = os.environ) -> Path:
    from esact_cc.compile_cache import default_cache_dir

    return default_cache_dir(environment) / MEMO_SUBDIRECTORY


CHECKER_MODULES = ("host_model_check", "host_model_memo", "onnx_attribute_domains", "display",
                   "errors", "bounded_read")
"""The runtime modules whose code decides the verdict: host_model_check and every module it
imports from the runtime (test_host_model_memo.py checks the list against the imports)."""


@lru_cache(maxsize=1)
def _checker_identity() -> bytes:
    """The checking code's sources and onnx's version: what the verdict depends on besides the
    model. Only the check's own modules, not the whole toolchain: hashing every source of
    esact-cc cost each load 0.1 s, and an edit anywhere else forgot every marker."""
    digest = hashlib.sha256(f"onnx {_onnx_version()}".encode())
    here = Path(__file__).parent
    for name in CHECKER_MODULES:
        digest.update(name.encode() + b"\0" + (here / f"{name}.py").read_bytes())
    return digest.digest()


def _onnx_version() -> str:
    """onnx's installed version, from the name of its dist-info directory beside the package
    (importlib.metadata imports email: 20 ms of every esact-run), else importlib.metadata's."""
    from importlib.util import find_spec

    spec = find_spec("onnx")
    for location in (spec and spec.submodule_search_locations) or ():
        found = sorted(Path(location).parent.glob("onnx-*.dist-info"))
        if len(found) == 1:
            return found[0].name[len("onnx-"):-len(".dist-info")]
    from importlib.metadata import version

    return version("onnx")


def _marker(model: bytes, environment: Mapping[str, str],
            model_digest: bytes | None) -> Path:
    digest = hashlib.sha256(_checker_identity())
    digest.update(model_digest or hashlib.sha256(model).digest())
    return memo_directory(environment) / digest.hexdigest()


def remembered_graph_io(model: bytes, environment: Mapping[str, str] = os.environ,
                        *, model_digest: bytes | None = None
                        ) -> tuple[set[str], set[str]] | None:
    """(graph inputs, graph outputs) of a model that passed the check before; None if it was
    not remembered (or the marker is unreadable: checked again). `model_digest`, the model's
    SHA-256 when the caller has it (esb.HostSegment.digest), saves hashing the model again."""
    marker = _marker(model, environment, model_digest)
    if not marker.is_file():  # absent, or a FIFO / device planted there: check in full
        return None
    try:
        names = json.loads(read_bounded_text(marker, MARKER_CAP, "host-model marker"))
        inputs, outputs = names["inputs"], names["outputs"]
    except (UsageError, OSError, ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(n, str) for n in (*inputs, *outputs)):
        return None
    return set(inputs), set(outputs)


def remember_graph_io(model: bytes, inputs: set[str], outputs: set[str],
                      environment: Mapping[str, str] = os.environ, *,
                      model_digest: bytes | None = None) -> None:
    """Remember that `model` passed the check, with its graph's input and output names."""
    marker = _marker(model, environment, model_digest)
    temporary = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps({"inputs": sorted(inputs), "outputs": sorted(outputs)}))
        os.replace(temporary, marker)  # concurrent loads see a whole marker or none
    except OSError:
        pass  # the next load checks the model again: same verdict, more time
