"""esact_cc/ir_files.py: the inline weights section and the stage of a parsed module."""

import numpy as np
import pytest

from esact_cc.ir_files import split_weights_section, weights_section
from esact_cc.runtime.errors import CompileError, UsageError
from esact_cc.weight_store import WeightStore

MODULE = "builtin.module {\n}\n"


def test_weights_round_trip_through_the_section_with_any_name() -> None:
    store = WeightStore({"plain": np.arange(6, dtype=np.float32).reshape(2, 3),
                         'odd "name"\\x/é': np.array([True, False]),
                         "i8": np.array([[-128, 127]], np.int8)})
    text = MODULE + weights_section(store)
    assert "{-#\n  dialect_resources: {\n    builtin: {\n" in text
    assert '"0x40000000' in text  # 64-byte alignment, little-endian
    ir, again = split_weights_section(text, "t")
    assert ir == MODULE and again is not None and sorted(again) == sorted(store)
    for name in store:
        assert again[name].dtype == store[name].dtype
        np.testing.assert_array_equal(again[name], store[name])


def test_text_without_a_section_has_no_inline_weights() -> None:
    assert split_weights_section(MODULE, "t") == (MODULE, None)


@pytest.mark.parametrize("section, error, message", [
    ('{-# external_resources: {} #-}', CompileError, "is not 'dialect_resources"),
    ('{-# dialect_resources: { other: { a: "0x40000000" } } #-}', CompileError,
     "is not 'dialect_resources"),
    ('{-# dialect_resources: { builtin: { a: 12 } } #-}', CompileError, "is not KEY: \"0x<hex>\""),
    ('{-# dialect_resources: { builtin: { a: "0x4000" } } #-}', CompileError,
     "resource 'a' is not an alignment and data"),
    ('{-# dialect_resources: { builtin: { a: "0x40000000", a: "0x40000000" } } #-}',
     UsageError, "resource 'a'"),
    ('{-# dialect_resources: { builtin: { a: "0x4000000000" } } #-}', UsageError,
     "resource 'a': not a .npy array"),
])
def test_bad_sections_are_one_line_errors(section: str, error: type, message: str) -> None:
    with pytest.raises(error) as raised:
        split_weights_section(MODULE + section + "\n", "IR file 'x.mlir'")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_pickled_blob_is_refused() -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    blob = "40000000" + buffer.getvalue().hex()
    text = MODULE + '{-# dialect_resources: { builtin: { p: "0x' + blob + '" } } #-}\n'
    with pytest.raises(UsageError, match="pickles are refused"):
        split_weights_section(text, "t")
