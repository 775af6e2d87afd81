"""The two facts about the onnx package that esact-cc writes out instead of importing it (the
import costs 0.7 s of CPU, more than the rest of an `esact-opt` run on an IR file): the
host-only op types of the pinned onnx and the ONNX element-type numbers. Each must equal what
the installed package says, and loading the API, every dialect and every pass
must not import onnx (so esact-opt and esact-cc on an IR file never do; a compile of an ONNX
file does not either: test_onnx_builders.py)."""

from __future__ import annotations

import subprocess
import sys

from onnx import TensorProto

from esact_cc.dialects.onnx import HOST_ONLY_OP_TYPES, ONNX_OP_TYPES
from esact_cc.dialects.onnx_host_op_types import derived_host_only_op_types
from esact_cc.tensor_types import ELEMENT_TYPES, OnnxDataType


def test_the_written_host_only_op_types_are_the_installed_packages():
    assert HOST_ONLY_OP_TYPES == derived_host_only_op_types(ONNX_OP_TYPES)


def test_the_element_type_numbers_are_onnxs():
    assert {t.name: int(t) for t in OnnxDataType} == {
        t.name: int(getattr(TensorProto, t.name)) for t in OnnxDataType}
    assert {e.onnx for e in ELEMENT_TYPES} == set(OnnxDataType)


def test_dialects_passes_and_the_api_load_without_the_onnx_package():
    # lift-transformer too: the frontend's attribute converter uses onnx_core, not the package.
    code = ("import sys\n"
            "import esact_cc.api\n"
            "from esact_cc.dialect_registry import get_all_dialects\n"
            "from esact_cc.passes.registry import get_all_passes\n"
            "for load in get_all_dialects().values(): load()\n"
            "for load in get_all_passes().values(): load()\n"
            "print(sorted(m for m in ('onnx', 'ml_dtypes') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
