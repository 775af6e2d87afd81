"""A host model that passed the .esb loader's check is remembered by content: a later load
skips onnx (import and both parses) but still checks the segment's bindings; a model that
failed, a changed model and an unreadable marker are checked in full."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from esact_cc.runtime import host_model_memo
from esact_cc.runtime.errors import ProgramError
from esact_cc.runtime.esb import DataSegment, HostSegment, Program, TensorDesc, read_esb, write_esb
from esact_cc.runtime.host_model_check import check_host_model
from esact_cc.runtime.host_model_memo import (
    CHECKER_MODULES,
    MARKER_CAP,
    memo_directory,
    remembered_graph_io,
)
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Instruction
from onnx import TensorProto, helper

X = TensorDesc("x", (2, 3), "float32", 0)
Y = TensorDesc("y", (2, 3), "float32", 64)


def relu_model(op: str = "Relu") -> bytes:
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], name="n")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return memo_directory()


def test_a_passed_model_is_remembered_and_bindings_are_still_checked(cache: Path) -> None:
    check_host_model(HostSegment(relu_model(), (X,), (Y,)), 0)
    assert len(list(cache.iterdir())) == 1
    check_host_model(HostSegment(relu_model(), (X,), (Y,)), 0)  # from the memo
    wrong = TensorDesc("z", (2, 3), "float32", 0)
    with pytest.raises(ProgramError, match=r"host segment 1: bindings name inputs \['z'\], "
                                           r"the ONNX graph has \['x'\]"):
        check_host_model(HostSegment(relu_model(), (wrong,), (Y,)), 1)
    with pytest.raises(ProgramError, match="host segment 2: bound outputs"):
        check_host_model(HostSegment(relu_model(), (X,), (Y, Y)), 2)


def test_a_failed_model_is_not_remembered(cache: Path) -> None:
    for _ in range(2):  # the second time is checked in full again
        with pytest.raises(ProgramError, match="host segment 0: invalid ONNX model"):
            check_host_model(HostSegment(relu_model("NoSuchOp"), (X,), (Y,)), 0)
    assert not cache.exists() or not list(cache.iterdir())


def test_an_unreadable_marker_means_a_full_check(cache: Path) -> None:
    check_host_model(HostSegment(relu_model(), (X,), (Y,)), 0)
    (marker,) = cache.iterdir()
    marker.write_text("{not json")
    check_host_model(HostSegment(relu_model(), (X,), (Y,)), 0)  # checked, marker rewritten
    assert '"inputs": ["x"]' in marker.read_text()


def test_a_remembered_model_loads_without_importing_onnx(tmp_path: Path) -> None:
    model = tmp_path / "relu.onnx"
    model.write_bytes(relu_model())
    code = ("import sys\n"
            "from esact_cc.runtime.esb import HostSegment, TensorDesc\n"
            "from esact_cc.runtime.host_model_check import check_host_model\n"
            f"x, y = TensorDesc('x', (2, 3), 'float32', 0), TensorDesc('y', (2, 3), 'float32', 64)\n"
            f"check_host_model(HostSegment(open({str(model)!r}, 'rb').read(), (x,), (y,)), 0)\n"
            "print('onnx' in sys.modules)\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    imported = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True, check=True).stdout.strip() for _ in range(2)]
    assert imported == ["True", "False"]


def test_a_planted_fifo_or_oversized_marker_is_not_read(cache: Path) -> None:
    check_host_model(HostSegment(relu_model(), (X,), (Y,)), 0)
    (marker,) = cache.iterdir()
    names = marker.read_text()
    marker.write_text(" " * (MARKER_CAP + 1) + names)  # valid JSON, but no marker is this large
    assert remembered_graph_io(relu_model()) is None
    marker.unlink()
    os.mkfifo(marker)  # opening it would block with no writer: never opened
    assert remembered_graph_io(relu_model()) is None
    marker.unlink()
    check_host_model(HostSegment(relu_model(), (X,), (Y,)), 0)  # a full check writes it again
    assert remembered_graph_io(relu_model()) == ({"x"}, {"y"})


def test_the_marker_key_covers_every_runtime_module_the_check_imports() -> None:
    """CHECKER_MODULES names the code a verdict depends on: every module imported (outside
    TYPE_CHECKING) from the runtime by a module on the list is on the list too."""
    runtime = Path(host_model_memo.__file__).parent
    imported = set()
    for name in CHECKER_MODULES:
        tree = ast.parse((runtime / f"{name}.py").read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and ast.unparse(node.test) == "TYPE_CHECKING" for n in ast.walk(node)}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     and node.level == 1 and id(node) not in typing_only}
    assert imported <= set(CHECKER_MODULES)
    assert "host_model_check" in CHECKER_MODULES


def test_a_binary_loaded_again_finds_its_models_without_hashing_them(
        cache: Path, tmp_path: Path) -> None:
    """The first load finds the model by its digest (as esact-cc remembered it) and remembers
    the segment's file_key; the next load of the binary finds that and never hashes the model
    (HostSegment.digest is a cached_property: computed only if read)."""
    segment = HostSegment(relu_model(), (X,), (Y,))
    program = Program([Instruction.make("host", segment=0), Instruction.make("halt")],
                      load_config().hash, host_segments=[segment])
    path = tmp_path / "relu.esb"
    write_esb(program, path)  # validates: the model checked, remembered by digest
    assert len(list(cache.iterdir())) == 1
    first = read_esb(path).host_segments[0]
    assert "digest" in vars(first) and len(list(cache.iterdir())) == 2  # + its file_key
    second = read_esb(path).host_segments[0]
    assert second.file_key == first.file_key is not None and "digest" not in vars(second)
    other = tmp_path / "other.esb"  # another binary with the same model: its own file_key
    write_esb(Program(program.instructions, program.config_hash, host_segments=[segment],
                      data_segments=[DataSegment("w", 64, b"\1")]), other)
    assert read_esb(other).host_segments[0].file_key != first.file_key


def test_onnx_version_without_importlib_metadata_is_its_answer() -> None:
    """The memo reads onnx's version from its dist-info directory's name (no importlib.metadata
    import on a load): the same version importlib.metadata reports."""
    from importlib.metadata import version

    from esact_cc.runtime.host_model_memo import _onnx_version

    assert _onnx_version() == version("onnx")
