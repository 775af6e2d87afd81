"""Hostile inputs to the runtime tools: crafted binaries, arrays, devices, endless host segments.

Each test crafts its input in tmp_path (binaries through the project's own writer,
esb.serialize_esb, with the loader's validation switched off while writing so that the
checksum is right and the loader has to find the problem itself), runs esact-run /
esact-objdump / esact-as / esact-cc as a whole process (test/helpers/hostile_run.py: memory
cap, wall-clock bound) and checks: one `prog: error:` line, the exit code, no traceback, no
file touched in the working directory (`tree_state`), no output half-written.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from esact_cc.runtime import esb
from esact_cc.runtime.esb import (
    DataSegment,
    DebugEntry,
    HostSegment,
    IODescriptor,
    Program,
    TensorDesc,
)
from esact_cc.runtime.hw_config import resolve_config
from esact_cc.runtime.isa import Instruction
from hostile_run import MEMORY_CAP_BYTES, ToolResult, assert_user_error, run_tool, tree_state
from onnx import TensorProto, helper

SECRET = b"top secret: the external-data reference must never reach this\n"
OPSET = [helper.make_opsetid("", 17)]


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """The tools' working directory: holds a secret file a crafted reference points at."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "secret.bin").write_bytes(SECRET)
    return work


def config_hash() -> str:
    return resolve_config(None).hash


def write_unchecked(program: Program, path: Path) -> Path:
    """The .esb bytes of `program` as the writer makes them (checksum included), without the
    writer's own validation: the loader must catch what is wrong."""
    with mock.patch.object(esb, "validate_program", lambda _program: None):
        path.write_bytes(esb.serialize_esb(program))
    return path


def host_program(model_bytes: bytes) -> Program:
    """[host, halt]: the ONNX model maps input `x` float32[4] (DRAM 0) to `y` (DRAM 64)."""
    x, y = TensorDesc("x", (4,), "float32", 0), TensorDesc("y", (4,), "float32", 64)
    return Program([Instruction.make("host", segment=0), Instruction.make("halt")],
                   config_hash(),
                   io=[IODescriptor(x.name, x.shape, x.dtype, x.address, "input"),
                       IODescriptor(y.name, y.shape, y.dtype, y.address, "output")],
                   host_segments=[HostSegment(model_bytes, (x,), (y,))])


def onnx_model(nodes: list, initializers: list = (), functions: list = ()) -> bytes:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                              list(initializers))
    opsets = OPSET + ([helper.make_opsetid("local", 1)] if functions else [])
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    model.ir_version = 8
    return model.SerializeToString()


def input_file(directory: Path) -> Path:
    path = directory / "x.npy"
    np.save(path, np.arange(4, dtype=np.float32))
    return path


def run_fails(tool: str, *args: str | os.PathLike[str], cwd: Path, needles: tuple[str, ...],
              code: int = 1, **options: object) -> ToolResult:
    """Run `tool` in `cwd`; it must fail with one line holding every needle and leave every
    file under `cwd` as it was (outputs named inside `cwd` must not appear)."""
    before = tree_state(cwd)
    result = run_tool(tool, *args, cwd=cwd, **options)
    assert_user_error(result, *needles, code=code)
    assert tree_state(cwd) == before
    return result


# ----------------------------------------------------------------------------- external data


def external_tensor(name: str) -> TensorProto:
    """A float[4] tensor whose data the file `secret.bin` in the current directory holds."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4],
                         data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "secret.bin"), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def in_initializer() -> bytes:
    return onnx_model([helper.make_node("Add", ["x", "w"], ["y"])], [external_tensor("w")])


def in_constant_attribute() -> bytes:
    return onnx_model([helper.make_node("Constant", [], ["w"], value=external_tensor("w")),
                       helper.make_node("Add", ["x", "w"], ["y"])])


def in_subgraph() -> bytes:
    """An If whose branches each add an external Constant."""
    def branch(name: str) -> object:
        return helper.make_graph(
            [helper.make_node("Constant", [], [f"{name}_w"], value=external_tensor(f"{name}_w")),
             helper.make_node("Add", ["x", f"{name}_w"], [f"{name}_y"])],
            name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [4])])

    return onnx_model([helper.make_node("Constant", [], ["c"], value=helper.make_tensor(
                           "c", TensorProto.BOOL, [], [True])),
                       helper.make_node("If", ["c"], ["y"], then_branch=branch("then"),
                                        else_branch=branch("else"))])


def in_function() -> bytes:
    function = helper.make_function(
        "local", "add_secret", ["a"], ["b"],
        [helper.make_node("Constant", [], ["w"], value=external_tensor("w")),
         helper.make_node("Add", ["a", "w"], ["b"])], OPSET)
    return onnx_model([helper.make_node("add_secret", ["x"], ["y"], domain="local")],
                      functions=[function])


@pytest.mark.parametrize("model", [in_initializer, in_constant_attribute, in_subgraph,
                                   in_function])
@pytest.mark.parametrize("tool", ["esact-run", "esact-objdump"])
def test_external_data_in_a_host_segment_is_refused(cwd: Path, tmp_path: Path, tool: str,
                                                    model) -> None:
    binary = write_unchecked(host_program(model()), tmp_path / "external.esb")
    args = [binary] if tool == "esact-objdump" else [
        binary, "--input", f"x={input_file(tmp_path)}", "--output-dir", cwd / "out"]
    result = run_fails(tool, *args, cwd=cwd, needles=("host segment 0", "external data"))
    assert SECRET.decode().strip() not in result.stdout + result.stderr
    assert not (cwd / "out").exists()


# ----------------------------------------------------------------------------- endless host loop


def endless_loop() -> bytes:
    """y = x + 1 + 1 + ...: a Loop with no trip count whose condition stays true."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [4])],
        [helper.make_tensor("one", TensorProto.FLOAT, [4], [1.0] * 4)])
    return onnx_model([helper.make_node("Loop", ["", "cond", "x"], ["y"], body=body)],
                      [helper.make_tensor("cond", TensorProto.BOOL, [], [True])])


def test_endless_host_loop_stops_at_the_time_limit(cwd: Path, tmp_path: Path) -> None:
    binary = write_unchecked(host_program(endless_loop()), tmp_path / "loop.esb")
    start = time.monotonic()
    run_fails("esact-run", binary, "--input", f"x={input_file(tmp_path)}", "--host-time-limit",
              "1.5", "--output-dir", cwd / "out", cwd=cwd,
              needles=("instruction 0 (host)", "1.5 s time limit"), time_limit=60)
    assert time.monotonic() - start < 30


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.parametrize("signum, needle", [(signal.SIGINT, "interrupted"),
                                             (signal.SIGTERM, "terminated by SIGTERM")])
def test_ctrl_c_stops_an_endless_host_loop(cwd: Path, tmp_path: Path, signum: int,
                                           needle: str) -> None:
    binary = write_unchecked(host_program(endless_loop()), tmp_path / "loop.esb")
    argv = [shutil.which("esact-run"), str(binary), "--input", f"x={input_file(tmp_path)}",
            "--host-time-limit", "600", "--output-dir", str(cwd / "out")]
    before = tree_state(cwd)
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: resource.setrlimit(
                                resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES)))
    try:
        # Starting esact-run takes well under 1.5 s of CPU; the loop burns CPU nonstop.
        deadline = time.monotonic() + 60
        while cpu_seconds(proc.pid) < 3.0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "esact-run never got busy"
            time.sleep(0.1)
        proc.send_signal(signum)
        stopped = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - stopped < 10
    result = ToolResult(argv, proc.returncode, stdout.decode(), stderr.decode())
    assert_user_error(result, needle, code=128 + signum)
    assert tree_state(cwd) == before


# ----------------------------------------------------------------------------- devices, sizes


@pytest.mark.parametrize("tool", ["esact-run", "esact-objdump"])
def test_dev_zero_as_a_binary_is_read_no_further_than_its_header(cwd: Path, tool: str) -> None:
    run_fails(tool, "/dev/zero", cwd=cwd, needles=("/dev/zero", "bad magic"),
              memory_cap_bytes=1 << 30)


def test_dev_zero_as_assembly_is_bounded(cwd: Path) -> None:
    run_fails("esact-as", "/dev/zero", "-o", cwd / "out.esb", cwd=cwd,
              needles=("/dev/zero",), time_limit=60)


def test_a_header_declaring_a_huge_binary_is_refused_before_reading(cwd: Path,
                                                                    tmp_path: Path) -> None:
    data = bytearray(esb.serialize_esb(Program([Instruction.make("halt")], config_hash())))
    esb.HEADER.pack_into(data, 0, esb.MAGIC, esb.FORMAT_VERSION, 4, bytes(32), 1 << 40, 0)
    (tmp_path / "huge.esb").write_bytes(data)
    run_fails("esact-objdump", tmp_path / "huge.esb", cwd=cwd, needles=("declares", "GiB limit"))


def test_a_two_gib_dram_image_under_a_memory_cap_is_one_line(cwd: Path, tmp_path: Path) -> None:
    capacity = resolve_config(None).dram_capacity_bytes
    assert capacity >= 1 << 31
    program = Program([Instruction.make("halt")], config_hash(),
                      io=[IODescriptor("y", (1,), "float32", (1 << 31) - 4, "output")])
    esb.write_esb(program, tmp_path / "big.esb")
    run_fails("esact-run", tmp_path / "big.esb", "--output-dir", cwd / "out", cwd=cwd,
              needles=("DRAM image", "2147483648 bytes"), memory_cap_bytes=3 << 29)


# ----------------------------------------------------------------------------- names


def names_program(io_name: str = "y", data_name: str = "w", node: str = "n") -> Program:
    return Program([Instruction.make("halt")], config_hash(),
                   io=[IODescriptor(io_name, (4,), "float32", 64, "output")],
                   data_segments=[DataSegment(data_name, 0, bytes(4))],
                   debug={0: DebugEntry(node, -1, "load")})


@pytest.mark.parametrize("field, program", [
    ("META io[0].name", names_program(io_name="y\ud800")),
    ("META data[0].name", names_program(data_name="\udcff")),
    ("META debug[0] node", names_program(node="a\x1b[2Jb")),
    ("META io[0].name", names_program(io_name="line\nbreak")),
])
@pytest.mark.parametrize("tool", ["esact-run", "esact-objdump"])
def test_names_that_are_not_printable_text_are_refused(cwd: Path, tmp_path: Path, tool: str,
                                                       field: str, program: Program) -> None:
    binary = write_unchecked(program, tmp_path / "names.esb")
    run_fails(tool, binary, cwd=cwd, needles=(field, "not printable text"))


def test_a_host_binding_with_a_lone_surrogate_is_refused(cwd: Path, tmp_path: Path) -> None:
    program = host_program(onnx_model([helper.make_node("Identity", ["x"], ["y"])]))
    segment = program.host_segments[0]
    program.host_segments[0] = HostSegment(segment.onnx, segment.inputs,
                                           (TensorDesc("y\udc80", (4,), "float32", 64),))
    binary = write_unchecked(program, tmp_path / "host_names.esb")
    run_fails("esact-objdump", binary, "-d", cwd=cwd,
              needles=("META host[0].outputs[0].name", "not printable text"))


# ----------------------------------------------------------------------------- --input arrays


def npy_with_header(header: dict, payload: bytes = b"") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + payload


def saved(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=allow_pickle)
    return out.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


HOSTILE_ARRAYS = {
    "npz": (lambda: npz_bytes(x=np.zeros(4, np.float32)), "it is an .npz archive"),
    "4 TiB shape": (lambda: npy_with_header({"descr": "<f4", "fortran_order": False,
                                              "shape": (1 << 20, 1 << 20)}, bytes(64)),
                    "4398046511104 bytes"),
    "malformed header": (lambda: np.lib.format.magic(1, 0) + b"\x10\x00{'descr': <f4}   \n",
                         "not a .npy array"),
    "truncated data": (lambda: saved(np.zeros(4, np.float32))[:-3], "holds 13 bytes"),
    "pickled objects": (lambda: saved(np.array([{}, []], dtype=object), allow_pickle=True),
                        "pickles are refused"),
    "strings": (lambda: saved(np.array(["ab", "cd"])), "not a numeric array"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ARRAYS))
def test_hostile_input_arrays_are_one_line(cwd: Path, tmp_path: Path, case: str) -> None:
    make, needle = HOSTILE_ARRAYS[case]
    (tmp_path / "x.npy").write_bytes(make())
    binary = write_unchecked(host_program(onnx_model([helper.make_node("Neg", ["x"], ["y"])])),
                             tmp_path / "neg.esb")
    run_fails("esact-run", binary, "--input", f"x={tmp_path / 'x.npy'}", "--output-dir",
              cwd / "out", cwd=cwd, needles=("--input x", needle), memory_cap_bytes=2 << 30)


def test_dev_zero_as_an_input_array_is_one_line(cwd: Path, tmp_path: Path) -> None:
    binary = write_unchecked(host_program(onnx_model([helper.make_node("Neg", ["x"], ["y"])])),
                             tmp_path / "neg.esb")
    run_fails("esact-run", binary, "--input", "x=/dev/zero", cwd=cwd,
              needles=("--input x '/dev/zero'", "not a .npy array"))


def test_the_crafted_binary_runs_with_a_good_input(cwd: Path, tmp_path: Path) -> None:
    """The control: the same binary and input file layout work when nothing is hostile."""
    binary = write_unchecked(host_program(onnx_model([helper.make_node("Neg", ["x"], ["y"])])),
                             tmp_path / "neg.esb")
    result = run_tool("esact-run", binary, "--input", f"x={input_file(tmp_path)}",
                      "--output-dir", tmp_path / "out", "--quiet", cwd=cwd)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "y.npy"),
                                  -np.arange(4, dtype=np.float32))


# ----------------------------------------------------------------------------- calibration data


MODEL = Path(__file__).parents[1] / "fixtures" / "models" / "vit_tiny_dynamo18.onnx"

HOSTILE_CALIBRATION = {
    "npy": (lambda: saved(np.zeros((2, 4), np.float32)), "not an .npz archive"),
    "strings": (lambda: npz_bytes(x=np.array([["a"] * 4] * 2)), "not a numeric array"),
    "pickled objects": (lambda: npz_bytes(x=np.array([{}, {}], dtype=object)),
                        "pickles are refused"),
}


@pytest.mark.parametrize("tool", ["esact-cc", "esact-tune"])
@pytest.mark.parametrize("case", sorted(HOSTILE_CALIBRATION))
def test_hostile_calibration_data_is_one_line(cwd: Path, tmp_path: Path, case: str,
                                              tool: str) -> None:
    make, needle = HOSTILE_CALIBRATION[case]
    (tmp_path / "calib.npz").write_bytes(make())
    output = cwd / ("out.esb" if tool == "esact-cc" else "spls.json")
    run_fails(tool, MODEL, "-o", output, "--calibration-data", tmp_path / "calib.npz", cwd=cwd,
              needles=("calibration data", needle))
