"""Golden digests: the .esb of every committed model fixture, dense and SPLS, is byte-identical
to the recorded one. Refactors of the compiler must keep these; a change of instruction order
or encoding on purpose updates the table with `python test/e2e/test_golden_binaries.py --update`
and says why in the commit (outputs bit-identical, cycles no worse).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from esact_cc import api

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "test" / "fixtures" / "models"
DIGESTS = ROOT / "test" / "fixtures" / "golden_esb_digests.json"
BUNDLED = ROOT / "esact_cc" / "models"

# DESIGN's digits reference setting reuses rows on the bundled model, so the masked lowering
# is exercised, not only the prediction.
DIGITS_CALIBRATION = "<bundled digits calibration split>"
REUSING_SPLS = ["hlog-bits=4", "window=4", "threshold=0.9"]


def cases() -> dict[str, dict]:
    """name -> api.compile keyword arguments."""
    table: dict[str, dict] = {}
    for model in sorted(FIXTURES.glob("*.onnx")):
        for sparsity in ("dense", "spls"):
            table[f"{model.stem}-{sparsity}"] = {"model": str(model), "sparsity": sparsity}
    digits = {"model": str(BUNDLED / "digits_vit.onnx"), "calibration_data": DIGITS_CALIBRATION}
    table["digits_vit-dense"] = {**digits, "sparsity": "dense"}
    table["digits_vit-spls"] = {**digits, "sparsity": "spls"}
    table["digits_vit-spls-reuse"] = {**digits, "sparsity": "spls", "spls_option": REUSING_SPLS}
    return table


def compile_case(tmp_path: Path, options: dict) -> api.CompiledModel:
    """A case's binary (the bundled digits calibration split written to `tmp_path`)."""
    options = dict(options)
    model = options.pop("model")
    if options.get("calibration_data") == DIGITS_CALIBRATION:
        # The bundled file names its array `images`; the model's input is `pixel_values`.
        from esact_cc.bundled_model import load_bundled_model

        bundled = load_bundled_model()
        options["calibration_data"] = str(tmp_path / "calib.npz")
        np.savez(options["calibration_data"], **{bundled.input_name: bundled.calibration_images})
    return api.compile(model, stage="esb", **options)


def digest(tmp_path: Path, options: dict) -> str:
    out = tmp_path / "m.esb"
    compile_case(tmp_path, options).save_esb(out)
    return hashlib.sha256(out.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(cases()))
def test_binary_matches_golden_digest(tmp_path: Path, name: str) -> None:
    expected = json.loads(DIGESTS.read_text())
    assert name in expected, f"no golden digest for {name}: run this file with --update"
    assert digest(tmp_path, cases()[name]) == expected[name]


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        table = {name: digest(Path(tmp), options) for name, options in sorted(cases().items())}
    DIGESTS.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(table)} digests to {DIGESTS}")
