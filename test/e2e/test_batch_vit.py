"""A ViT at batch B (the digits ViT's graph, test/helpers/vit_graph.py) compiles dense and with
SPLS, and its binary's logits equal those of B runs of the batch-1 binary, bit for bit: the
images of a batch stay independent on the hardware model, SPLS's reuse included (a row's
representative is in its own image, and the prediction's HLog scales are each image's own)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from vit_graph import vit_model

from esact_cc import api

SPLS = {"sparsity": "spls", "sparsity_option": ["window=4", "threshold=0.6"]}


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (count, 1, 8, 8)).astype(np.float32)


def _compile(tmp_path: Path, batch: int, options: dict) -> tuple[Path, api.CompiledModel]:
    # the same 8 images at every batch: the same INT8 ranges
    return _compile_images(tmp_path, batch, options, _images(8, 1))


def _compile_images(tmp_path: Path, batch: int, options: dict, calibration_images: np.ndarray
                    ) -> tuple[Path, api.CompiledModel]:
    path = tmp_path / f"vit_b{batch}.onnx"
    onnx.save(vit_model(batch), path)
    calibration = tmp_path / f"calib_b{batch}.npz"
    np.savez(calibration, pixel_values=calibration_images.reshape(-1, batch, 1, 8, 8))
    return path, api.compile(path, stage="esb", calibration_data=str(calibration), **options)


def _row_masked_gemms(compiled: api.CompiledModel) -> list:
    return [i for i in compiled.program().instructions
            if i.opcode_name == "gemm" and i.fields.get("has_row_mask")]


@pytest.mark.parametrize("options", [{}, SPLS], ids=["dense", "spls"])
def test_batch_logits_equal_batch_one_runs(tmp_path: Path, options: dict) -> None:
    batch = 4
    images = _images(batch, 2)
    path, many = _compile(tmp_path, batch, options)
    _, one = _compile(tmp_path, 1, options)
    together = many.simulate({"pixel_values": images})
    alone = [one.simulate({"pixel_values": image[None]}) for image in images]
    np.testing.assert_array_equal(together.outputs["logits"],
                                  np.concatenate([run.outputs["logits"] for run in alone]))
    expected = ort.InferenceSession(str(path)).run(None, {"pixel_values": images})[0]
    assert np.abs(together.outputs["logits"] - expected).max() < 0.5  # INT8 and reuse
    if options:  # reuse happened, and each image reused exactly the rows it does alone
        # the row-masked GEMMs take several images' rows at once (kept rows share tiles)
        rows = [g.fields["m"] for g in _row_masked_gemms(many)]
        assert sum(rows) == batch * sum(g.fields["m"] for g in _row_masked_gemms(one))
        assert max(rows) == 3 * 17  # whole sequences within two 32-row array tiles
        fractions = [run.report["spls"]["reused_row_fraction"] for run in alone]
        assert min(fractions) > 0
        assert together.report["spls"]["reused_row_fraction"] == pytest.approx(
            np.mean(fractions))


def test_batch_reuse_stays_in_its_image(tmp_path: Path) -> None:
    """Two copies of one image: every row of the second has an identical row in the first,
    which reuse across images would take; each copy must reuse what the image does alone."""
    image = _images(1, 3)
    _, many = _compile(tmp_path, 2, SPLS)
    _, one = _compile(tmp_path, 1, SPLS)
    together = many.simulate({"pixel_values": np.concatenate([image, image])})
    alone = one.simulate({"pixel_values": image})
    np.testing.assert_array_equal(together.outputs["logits"],
                                  np.concatenate([alone.outputs["logits"]] * 2))
    assert together.report["spls"]["reused_row_fraction"] == alone.report["spls"][
        "reused_row_fraction"]


def test_batch_streamed_projection_equals_batch_one_runs(tmp_path: Path) -> None:
    """ABUF too small for the X and Q^ / K^ codes of ten images at once: the prediction's
    projection streams over row tiles (HLOG with scale_count: each image's scale the max of
    its tiles'), while one image fits the whole form; the logits still equal batch-1 runs."""
    hw = tmp_path / "small_abuf.toml"
    hw.write_text('name = "small-abuf"\n[sram]\nactivation_buffer = 16384\n')
    batch, options = 10, {**SPLS, "hw": str(hw)}
    images = _images(batch, 4)
    _, many = _compile_images(tmp_path, batch, options, _images(2 * batch, 1))
    _, one = _compile_images(tmp_path, 1, options, _images(2 * batch, 1))

    def streamed(compiled: api.CompiledModel) -> int:
        return sum(1 for i in compiled.program().instructions
                   if i.opcode_name == "hlog" and i.fields["scale_count"] > 0)

    assert streamed(many) > 0 and streamed(one) == 0
    together = many.simulate({"pixel_values": images}, hw=str(hw))
    alone = [one.simulate({"pixel_values": image[None]}, hw=str(hw)) for image in images]
    np.testing.assert_array_equal(together.outputs["logits"],
                                  np.concatenate([run.outputs["logits"] for run in alone]))
    assert together.report["spls"]["reused_row_fraction"] > 0
