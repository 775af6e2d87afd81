"""The onnx package's protobuf classes and C++ checker, shape inference and inliner, loaded
without running `onnx/__init__.py`.

`import onnx` imports `ml_dtypes` (through `onnx.helper`), whose numpy ufunc-loop registration
costs ~1.0 s of CPU: an eighth of a whole BERT-base compile, for dtypes (bfloat16, float8,
int4) a compile meets only in unusual tensors. A compile needs only the generated protobuf
module (`onnx/onnx_ml_pb2.py`) and the C++ extension (`onnx_cpp2py_export`), so those two are
loaded from the installed package's files under their own names (`onnx.onnx_ml_pb2`,
`onnx.onnx_cpp2py_export`): the classes are the very ones `import onnx` would give, and a later
`import onnx` (an API user, onnxruntime tooling, `onnx_builders`' rare dtypes) reuses these
modules instead of loading them twice. The wrappers below do what `onnx.checker.check_model`,
`onnx.shape_inference.infer_shapes` and `onnx.inliner.inline_local_functions` do (serialize,
call the extension, parse), with the same errors.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

_PROTOS = "onnx.onnx_ml_pb2"
_EXTENSION = "onnx.onnx_cpp2py_export"
MAXIMUM_PROTOBUF = 2147483647
"""onnx.checker's limit on a serialized model (protobuf's 2 GiB)."""


def _package_directory() -> Path:
    spec = importlib.util.find_spec("onnx")  # finds the package; runs none of its code
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the onnx package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name} from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class _AttachToOnnxPackage(importlib.abc.MetaPathFinder):
    """Once the real `onnx` package is imported after these modules, set them as its attributes
    (`onnx.onnx_ml_pb2`, `onnx.onnx_cpp2py_export`), as its own import would have."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "onnx":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            for name in (_PROTOS, _EXTENSION):
                setattr(module, name.rpartition(".")[2], sys.modules[name])
            execute(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _modules() -> tuple[ModuleType, ModuleType]:
    if _PROTOS in sys.modules and _EXTENSION in sys.modules:
        return sys.modules[_PROTOS], sys.modules[_EXTENSION]
    if "onnx" in sys.modules:  # the package is there already: its modules are
        import onnx.onnx_cpp2py_export
        import onnx.onnx_ml_pb2

        return onnx.onnx_ml_pb2, onnx.onnx_cpp2py_export
    directory = _package_directory()
    protos = _load(_PROTOS, directory / "onnx_ml_pb2.py")
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    extension_path = next((p for s in suffixes
                           if (p := directory / f"onnx_cpp2py_export{s}").exists()), None)
    if extension_path is None:
        raise ImportError(f"onnx's C++ extension is missing from {directory}")
    extension = _load(_EXTENSION, extension_path)
    sys.meta_path.insert(0, _AttachToOnnxPackage())
    return protos, extension


_protos, _extension = _modules()

AttributeProto = _protos.AttributeProto
FunctionProto = _protos.FunctionProto
GraphProto = _protos.GraphProto
ModelProto = _protos.ModelProto
NodeProto = _protos.NodeProto
OperatorSetIdProto = _protos.OperatorSetIdProto
SparseTensorProto = _protos.SparseTensorProto
TensorProto = _protos.TensorProto
TypeProto = _protos.TypeProto
ValueInfoProto = _protos.ValueInfoProto
IR_VERSION: int = _protos.IR_VERSION
ValidationError = _extension.checker.ValidationError


def onnx_opset_version() -> int:
    """The newest default-domain opset this onnx knows (`onnx.defs.onnx_opset_version`)."""
    return _extension.defs.schema_version_map()[""][1]


def check_model(model: ModelProto | bytes, full_check: bool = False) -> None:
    """`onnx.checker.check_model(model, full_check)` for a ModelProto or its bytes."""
    serialized = model if isinstance(model, bytes) else model.SerializeToString()
    if len(serialized) > MAXIMUM_PROTOBUF:
        raise ValueError("This protobuf of onnx model is too large (>2GiB). Call check_model "
                         "with model path instead.")
    _extension.checker.check_model(serialized, full_check, False, False)


def infer_shapes(model: ModelProto, check_type: bool = False, strict_mode: bool = False,
                 data_prop: bool = False) -> ModelProto:
    """`onnx.shape_inference.infer_shapes` of a ModelProto."""
    inferred = _extension.shape_inference.infer_shapes(
        model.SerializeToString(), check_type, strict_mode, data_prop)
    return ModelProto.FromString(inferred)


def inline_local_functions(model: ModelProto) -> ModelProto:
    """`onnx.inliner.inline_local_functions` (no version conversion)."""
    return ModelProto.FromString(
        _extension.inliner.inline_local_functions(model.SerializeToString(), False))


def get_schema(op_type: str, max_inclusive_version: int, domain: str = "") -> Any:
    """`onnx.defs.get_schema` (the C++ OpSchema, without the properties onnx.defs adds)."""
    return _extension.defs.get_schema(op_type, max_inclusive_version, domain)
