"""The input fuzz's own machinery (bench/fuzz_*.py): a mutated binary is resealed so it gets
past the checksum, cases are reproducible from their seed, outcomes are classified by how the
tool ended, and a run that copies the sentinel's bytes into its outputs is caught."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

from fuzz_case import Case, classify, leaked, run_in_process  # noqa: E402
from fuzz_mutate_esb import assemble, mutate_binary, split  # noqa: E402
from fuzz_mutate_onnx import mutate_model, secret_bytes  # noqa: E402

from esact_cc.runtime.esb import CHECKSUM_BYTES  # noqa: E402
from esact_cc.runtime.esb_checksum import checksum  # noqa: E402


def _tiny_model() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(8, 8), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _binary(tmp_path: Path) -> bytes:
    from esact_cc import api

    api.compile(_tiny_model(), stage="esb").save_esb(tmp_path / "m.esb")
    return (tmp_path / "m.esb").read_bytes()


def test_mutated_binaries_are_resealed_and_reproducible(tmp_path: Path) -> None:
    data = _binary(tmp_path)
    header, rows, sections = split(data)
    assert assemble(header, rows, sections) == data  # split + assemble is the identity
    for index in range(40):
        mutated, changes = mutate_binary(data, random.Random(f"0:binary:{index}"), tmp_path)
        again, _ = mutate_binary(data, random.Random(f"0:binary:{index}"), tmp_path)
        assert again == mutated and changes
        body, trailer = mutated[:-CHECKSUM_BYTES], mutated[-CHECKSUM_BYTES:]
        assert checksum([body]) == trailer
        assert mutated != data, changes


def test_model_mutations_change_the_model_and_say_how(tmp_path: Path) -> None:
    model = _tiny_model()
    for index in range(30):
        mutated, _, changes = mutate_model(model, random.Random(f"0:model:{index}"), tmp_path)
        assert changes and all(isinstance(c, str) and c for c in changes)
        assert mutated.SerializeToString() != model.SerializeToString(), changes


def test_outcomes_are_classified_by_how_the_tool_ended() -> None:
    assert classify(0, "")[0] == "ok"
    assert classify(1, "esact-run: error: bad magic\n") == ("clean_error",
                                                          "esact-run: error: bad magic")
    assert classify(1, "warning: x\n")[0] == "unclean_error"
    assert classify(70, "Traceback (most recent call last):\n  ...\nValueError: x\n")[0] == \
        "traceback"
    assert classify(None, "")[0] == "hang"
    assert classify(-11, "") == ("crash", "signal 11")


def test_a_run_copying_the_sentinel_into_its_outputs_is_caught(tmp_path: Path) -> None:
    # A model whose weight bytes are the sentinel's (inside its own directory, so the
    # compiler legitimately reads them): its IR weights carry the marker, and the check sees it.
    marker = "ESACT-FUZZ-SECRET-test"
    work = tmp_path / "case"
    for folder in ("run/model", "run/out"):
        (work / folder).mkdir(parents=True)
    payload = secret_bytes(marker.encode(), 256)
    (work / "run" / "model" / "weights.bin").write_bytes(payload)
    model = _tiny_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", "256")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    (work / "run" / "model" / "model.onnx").write_bytes(model.SerializeToString())
    case = Case("model", 0, 0, "tiny", "esact-cc",
                ["model/model.onnx", "--compile-to", "onnx", "-o", "out/model.mlir"], [], marker)
    assert not leaked(work, marker)
    returncode, stdout, stderr = run_in_process(case, work)
    assert returncode == 0, stderr
    assert leaked(work, marker, stdout, stderr)
    assert not leaked(work, "ESACT-FUZZ-SECRET-other", stdout, stderr)
