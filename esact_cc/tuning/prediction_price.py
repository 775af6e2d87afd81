"""The SPLS prediction's price in MACs per HLog product, as the hardware model charges it.

esact-tune's objective (spls_accounting.WorkSummary.reduction) adds the prediction to the
executed MACs at `mac_per_product` MACs per HLog product. docs/design.md section 6 fixes 0.1
(a product is a few shift-adds); the hardware model charges far more, because the
prediction's energy is SRAM traffic (PAM scores, similarity, dequantization), not the BPU's
adds. `hardware_price` measures it instead of assuming it: the evaluator's INT8 module lowered
dense and with `options` (SPLS in every layer), both run on one calibration input on the
hardware model (runtime: the one source of the per-op and per-byte costs), and

    mac_per_product = (prediction on-chip pJ / HLog products)
                      / (dense program on-chip dynamic pJ / dense MACs)

products and dense MACs being the tuner's own accounting of that input (real tokens only; on
padded inputs both energies include the padding rows and both counts exclude them, so the
ratio keeps). With this price the objective tracks the on-chip dynamic energy: a setting
whose prediction costs more than its reuse saves on the hardware reduces nothing.
Cycles are not priced: the prediction runs beside the MAC array, and what it adds to the
critical path depends on the schedule, not on a per-product rate.

`system` adds the DRAM energy the SPLS program spends beyond the dense one (the report's
`breakdown_pj.dram`, same run) to the prediction's on-chip energy:

    mac_per_product = ((prediction on-chip pJ + SPLS DRAM pJ - dense DRAM pJ) / HLog products)
                      / (dense program on-chip dynamic pJ / dense MACs)

A predicted layer's extra traffic is a fixed cost of predicting it, as its products are (on
all-MiniLM-L6-v2 at 128 real tokens the HLog codes of [W_Q | W_K] and the chain's mask rows:
+0.37 MB, +60 uJ per input, 1.138 MAC per product; +1.15 MB and 2.553 before keep-on-chip
held the predicted layer's input, bench/spls_minilm128_dram.py), so per product it is priced in
the same unit: MACs removed are still credited on-chip energy only (a removed MAC saves no
DRAM traffic), and a setting reduces something only when its reuse pays for the prediction
and the traffic at the system boundary.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.spls_options import SplsConfig
from esact_cc.tuning.spls_accounting import PREDICTION_MAC_PER_PRODUCT

PRICES = ("design", "hardware", "system")
"""design: docs/design.md section 6's 0.1 MAC per product; hardware: `hardware_price`;
system: `hardware_price(..., dram=True)`."""


@dataclass(frozen=True)
class PredictionPrice:
    mac_per_product: float
    source: str
    """"design", or what the hardware measurement ran on."""
    prediction_pj_per_product: float | None = None
    dense_pj_per_mac: float | None = None
    dram_pj_per_product: float | None = None
    """`system`: the SPLS program's DRAM energy beyond dense's, per product (in
    `prediction_pj_per_product` too)."""

    def as_dict(self) -> dict[str, Any]:
        return {"mac_per_product": self.mac_per_product, "source": self.source,
                "prediction_pj_per_product": self.prediction_pj_per_product,
                "dense_pj_per_mac": self.dense_pj_per_mac,
                "dram_pj_per_product": self.dram_pj_per_product}


DESIGN_PRICE = PredictionPrice(PREDICTION_MAC_PER_PRODUCT, "design")


def _on_chip_run(evaluator: Any, config: SplsConfig | None, sample: Mapping[str, Any],
                 hw: str | None) -> dict[str, Any]:
    """The report of the evaluator's INT8 module lowered with `config` (None: dense) and run
    on `sample` by the hardware model."""
    from esact_cc.api import CompiledModel
    from esact_cc.pipeline import CompileOptions, continue_pipeline
    from esact_cc.weight_store import WeightStore

    module = evaluator.base.clone()
    store = WeightStore({name: evaluator.base_store[name] for name in evaluator.base_store})
    shapes = {name: tuple(value.shape) for name, value in sample.items()}
    with tempfile.TemporaryDirectory(prefix="esact-tune-price-") as tmp:
        extra: dict[str, Any] = {"hw": hw}
        if config is not None:
            path = Path(tmp) / "spls.json"
            path.write_text(config.to_json())
            extra.update(sparsity="spls", spls_config=str(path))
        continue_pipeline(module, store, "quantized", "esact",
                          CompileOptions(input_shapes=shapes, extra=extra))
        return CompiledModel(module, store, "esact").simulate(dict(sample), hw).report


def hardware_price(evaluator: Any, config: SplsConfig, hw: str | None = None,
                   sample_index: int = 0, dram: bool = False) -> PredictionPrice:
    """The prediction's price measured on the hardware model (module docstring) with
    `config`, on calibration input `sample_index` of `evaluator` (an SplsEvaluator on the
    INT8 IR); `dram`: the `system` price, the extra DRAM energy included."""
    if evaluator.ir != "quantized":
        raise CompileError(f"the hardware prediction price runs the INT8 program: IR "
                           f"'{evaluator.ir}' given (use the quantized IR)")
    work = evaluator.subset([sample_index]).measure([config])[0].work
    products = sum(w.prediction_products for w in work.layers)
    if products <= 0:
        raise CompileError("hardware prediction price: the setting predicts in no layer")
    sample = evaluator.samples[sample_index]
    spls = _on_chip_run(evaluator, config, sample, hw)
    dense = _on_chip_run(evaluator, None, sample, hw)
    predict_pj = spls["components"].get("predict", {}).get("energy_on_chip_pj", 0.0)
    dram_pj = (spls["energy"]["breakdown_pj"]["dram"]
               - dense["energy"]["breakdown_pj"]["dram"]) if dram else 0.0
    per_product = (predict_pj + dram_pj) / products
    per_mac = dense["energy"]["on_chip"]["dynamic_pj"] / work.dense
    return PredictionPrice(per_product / per_mac,
                           f"hardware model ({hw or 'default config'}), calibration input "
                           f"{sample_index}{', DRAM beyond dense included' if dram else ''}",
                           per_product, per_mac, dram_pj / products if dram else None)

