"""esact-run's memory (issue 16): the DRAM image is resident only where the program writes
(no transparent huge pages), and a run that asks for it releases each host model's
onnxruntime session after its last HOST instruction."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from esact_cc.runtime import host_segments
from esact_cc.runtime.dram_image import allocate_dram_image
from esact_cc.runtime.esb import HostSegment, IODescriptor, Program, TensorDesc
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Instruction
from esact_cc.runtime.run_program import run_program
from onnx import TensorProto, helper

CFG = load_config()


def _mapping_flags(address: int) -> list[str]:
    """VmFlags of the mapping of this process holding `address` (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                start, end = (int(part, 16) for part in head.split("-"))
                inside = start <= address < end
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError("no mapping holds the address")


def test_dram_image_is_zeroed_writable_and_without_huge_pages() -> None:
    image = allocate_dram_image(8 << 20)
    assert image.dtype == np.uint8 and image.shape == (8 << 20,) and not image.any()
    image[5_000_000] = 7
    assert image[5_000_000] == 7 and int(image.sum()) == 7
    if sys.platform == "linux":  # "nh": MADV_NOHUGEPAGE, so one written byte is one 4 KiB page
        assert "nh" in _mapping_flags(image.ctypes.data)
    assert allocate_dram_image(0).shape == (0,)


def _identity_program() -> Program:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"], name="copy")], "copy",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    host = HostSegment(model.SerializeToString(), (TensorDesc("a", (2, 3), "float32", 0),),
                       (TensorDesc("b", (2, 3), "float32", 64),))
    return Program([Instruction.make("host", segment=0), Instruction.make("host", segment=0),
                    Instruction.make("halt")], CFG.hash,
                   io=[IODescriptor("x", (2, 3), "float32", 0, "input"),
                       IODescriptor("y", (2, 3), "float32", 64, "output")],
                   host_segments=[host])


@pytest.mark.parametrize("release", [False, True])
def test_host_sessions_are_released_after_their_last_use_when_asked(
        release: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    program = _identity_program()
    digest = program.host_segments[0].digest
    host_segments.release_session(digest)
    created = []
    real = host_segments.host_session

    def counting(onnx: bytes, key: bytes | None = None):  # type: ignore[no-untyped-def]
        created.append(key not in host_segments._SESSIONS)
        return real(onnx, key)

    monkeypatch.setattr(host_segments, "host_session", counting)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    result = run_program(program, {"x": x}, CFG, release_host_sessions=release)
    np.testing.assert_array_equal(result.outputs["y"], x)
    assert created == [True, False]  # both HOST instructions share one session
    key = host_segments.segment_key(program.host_segments[0])
    assert (key in host_segments._SESSIONS) is not release
    host_segments.release_session(digest)


def test_a_run_that_releases_its_sessions_never_hashes_the_host_model() -> None:
    """Released sessions are named by the run and the segment (esact-run): the model's
    digest, a SHA-256 over BERT-base's 92 MB embedding segment, is never computed, and no
    session outlives the run."""
    program = _identity_program()
    before = set(host_segments._SESSIONS)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    result = run_program(program, {"x": x}, CFG, release_host_sessions=True)
    np.testing.assert_array_equal(result.outputs["y"], x)
    assert "digest" not in vars(program.host_segments[0])
    assert set(host_segments._SESSIONS) == before
