"""read_model's initializer views are aligned (numpy's matmul takes BLAS only then) and hold
exactly the tensors' values, whatever byte offset protobuf framing gave their raw data."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from esact_cc.frontend.onnx_file_reader import read_model


def test_views_are_aligned_read_only_and_exact(tmp_path):
    rng = np.random.default_rng(0)
    # Names of 1..12 characters shift every following tensor's raw data by one byte more.
    dtypes = (np.float32, np.float64, np.int64, np.int32, np.float16)
    tensors = [numpy_helper.from_array(rng.standard_normal((7, 5)).astype(dtypes[i % 5]),
                                       name="w" * (i + 1)) for i in range(12)]
    graph = helper.make_graph(
        [helper.make_node("Identity", [t.name], [f"out{i}"]) for i, t in enumerate(tensors)],
        "g", [], [helper.make_tensor_value_info(f"out{i}", t.data_type, [7, 5])
                  for i, t in enumerate(tensors)], initializer=tensors)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), path)
    raw = path.read_bytes()
    offsets = {raw.find(numpy_helper.to_array(t).tobytes()) % 8 for t in tensors}
    assert len(offsets) > 1  # the file really holds unaligned tensors

    _proto, arrays = read_model(path)

    assert sorted(arrays) == sorted(t.name for t in tensors)
    for t in tensors:
        array = arrays[t.name]
        assert array.flags.aligned and not array.flags.writeable
        expected = numpy_helper.to_array(t)
        assert array.dtype == expected.dtype and np.array_equal(array, expected)
