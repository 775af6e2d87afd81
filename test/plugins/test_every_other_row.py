"""The test-defined sparsity scheme `every_other_row` (every_other_row.py beside this file),
registered from the test: selected by name, options typed and checked, masks in the IR as the
scheme means them, and the masked ops computing what the masks say."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.ir import SSAValue

import every_other_row as scheme_module
from esact_cc import api
from esact_cc.bundled_model import load_bundled_model
from esact_cc.dialect_registry import make_context
from esact_cc.dialects import transformer
from esact_cc.ir_queries import main_function
from esact_cc.interpreter.reference_interpreter import Interpreter
from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.registry import (BUILTIN_SCHEMES, register_scheme, scheme_named,
                                        scheme_names, unregister_scheme)

BUNDLED = load_bundled_model()
HEADS = 4


@pytest.fixture
def registered():
    register_scheme(scheme_module.SCHEME)
    yield scheme_module.SCHEME
    unregister_scheme(scheme_module.NAME)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, **{BUNDLED.input_name: BUNDLED.calibration_images[:16]})
    return str(path)


def test_a_scheme_registers_without_touching_the_package(registered):
    assert {"dense", "spls"} <= set(BUILTIN_SCHEMES) and "every_other_row" not in BUILTIN_SCHEMES
    assert scheme_names() == [*BUILTIN_SCHEMES, "every_other_row"]
    assert scheme_named("every_other_row") is registered
    with pytest.raises(CompileError, match="'every_other_row' is already registered"):
        register_scheme(registered)


def test_without_registration_the_name_is_unknown():
    with pytest.raises(CompileError, match="unknown sparsity scheme 'every_other_row'"):
        api.compile(BUNDLED.onnx_path, stage="sparsity", sparsity="every_other_row")


def _weight(store, value: SSAValue) -> np.ndarray:
    return np.asarray(store[value.owner.weight_name.data])


def test_the_masks_in_the_ir_are_the_schemes(registered, calibration):
    # dead_rows=False: all 4 layers keep every row (else layer 3 computes 1 and is skipped)
    compiled = api.compile(BUNDLED.onnx_path, stage="sparsity", calibration_data=calibration,
                           sparsity="every_other_row", dead_rows=False,
                           sparsity_option=["seed=3", "1:key-keep=0.25"])
    ops = list(compiled.module.walk())
    attentions = [op for op in ops if isinstance(op, transformer.AttentionOp)]
    assert len(attentions) == 4
    for index, attention in enumerate(attentions):
        length = attention.q.type.get_shape()[1]
        np.testing.assert_array_equal(_weight(compiled.store, attention.rows),
                                      scheme_module.reuse_map(length))
        keep = 0.25 if index == 1 else 0.5
        np.testing.assert_array_equal(_weight(compiled.store, attention.spa),
                                      scheme_module.key_mask(HEADS, length, keep, 3 + index))
        row_masked = [op for op in ops if isinstance(op, transformer.LinearOp)
                      and op.rows is attention.rows]
        assert len(row_masked) == 4  # Q, output projection, FFN up and down; K, V dense
    assert scheme_module.reuse_map(5).tolist() == [-1, 0, -1, 2, -1]


@pytest.mark.parametrize("option, message", [
    ("key-keep=0", "key-keep must be in (0, 1], got '0'"),
    ("seeed=1", "unknown option 'seeed' (did you mean 'seed'?"),
    ("²:seed=1", "bad layer index '²'"),
    ("7:seed=1", "every_other_row: options for layer 7, but the model has 4"),
])
def test_its_options_are_checked_like_any_schemes(registered, option, message):
    with pytest.raises(CompileError) as error:
        api.compile(BUNDLED.onnx_path, stage="sparsity", sparsity="every_other_row",
                    sparsity_option=[option], dead_rows=False)
    assert message in str(error.value)


class _Recorder(Interpreter):
    def __init__(self, store):
        super().__init__(store)
        self.seen: list[tuple[object, list[np.ndarray], np.ndarray]] = []

    def run_op(self, op, args):
        outputs = super().run_op(op, args)
        if isinstance(op, (transformer.LinearOp, transformer.AttentionOp)):
            self.seen.append((op, args, outputs[0]))
        return outputs


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def test_masked_ops_compute_what_the_masks_say():
    """FP32: a reused row is its representative's; a computed attention row attends only to
    the keys its mask keeps, worked out here by hand from the op's own Q, K, V."""
    compiled = api.compile(BUNDLED.onnx_path, stage="transformer")
    scheme_module.EveryOtherRowPass(seed=1, store=compiled.store).apply(make_context(), compiled.module)
    compiled.module.verify()
    recorder = _Recorder(compiled.store)
    recorder.run_function(main_function(compiled.module),
                          {BUNDLED.input_name: BUNDLED.test_images[:1]})
    checked_attention = 0
    for op, args, out in recorder.seen:
        if op.rows is None:
            continue
        rows = _weight(compiled.store, op.rows)
        reused = np.flatnonzero(rows >= 0)
        np.testing.assert_array_equal(out[0, reused], out[0, rows[reused]])
        if isinstance(op, transformer.AttentionOp):
            q, k, v = args[:3]
            spa = _weight(compiled.store, op.spa).astype(bool)
            d = q.shape[-1] // HEADS
            scale = op.scale.value.data
            for h in range(HEADS):
                cols = slice(h * d, (h + 1) * d)
                for i in np.flatnonzero(rows < 0):
                    keys = np.flatnonzero(spa[h, i])
                    p = _softmax(q[0, i, cols] @ k[0, keys, cols].T * scale)
                    np.testing.assert_allclose(out[0, i, cols], p @ v[0, keys, cols],
                                               rtol=1e-4, atol=1e-5)
            checked_attention += 1
    assert checked_attention == 4


def _install_entry_point(site, value: str) -> None:
    """A minimal installed distribution in `site` declaring one sparsity-scheme entry point."""
    dist = site / "eor_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: eor-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[esact_cc.sparsity_schemes]\n{value}\n")


def test_an_installed_plugin_is_found_through_its_entry_point(tmp_path, monkeypatch):
    _install_entry_point(tmp_path, "every_other_row = every_other_row:SCHEME")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert scheme_names() == [*BUILTIN_SCHEMES, "every_other_row"]
    assert scheme_named("every_other_row") is scheme_module.SCHEME


def test_an_entry_point_must_name_a_scheme(tmp_path, monkeypatch):
    _install_entry_point(tmp_path, "every_other_row = every_other_row:reuse_map")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CompileError, match="entry point 'every_other_row' = "
                                           "'every_other_row:reuse_map'.* is not a SparsityScheme"):
        scheme_named("every_other_row")


def test_an_entry_point_that_cannot_load_is_one_error_naming_it(tmp_path, monkeypatch):
    _install_entry_point(tmp_path, "every_other_row = no_such_plugin_module:SCHEME")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CompileError, match="entry point 'every_other_row' = "
                                           "'no_such_plugin_module:SCHEME'.* cannot be loaded: "
                                           "ModuleNotFoundError"):
        scheme_named("every_other_row")


def test_esact_cc_compiles_with_an_installed_plugin(tmp_path):
    """The whole tool, in its own process, picks the plugin by name: no package file edited."""
    import os
    import subprocess
    from pathlib import Path

    _install_entry_point(tmp_path / "site", "every_other_row = every_other_row:SCHEME")
    path = os.pathsep.join([str(tmp_path / "site"), str(Path(scheme_module.__file__).parent)])
    out = tmp_path / "out.mlir"
    result = subprocess.run(
        ["esact-cc", str(BUNDLED.onnx_path), "--compile-to", "sparsity", "--sparsity",
         "every_other_row", "--sparsity-option", "1:key-keep=0.25", "--no-dead-rows",
         "-o", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}, check=False)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.count(" spa(") == 4 and "every_other_row.1.spa" in text
