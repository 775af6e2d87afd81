"""The `spls` section of a run report: what SPLS skipped, what the prediction cost.

Built from the same per-instruction columns as the rest of the report (report.py) when the
program holds prediction instructions (queue `predict`):

  spls.macs_dense / macs_executed      MAC-array work of the components q k v qk pv o ffn1 ffn2
  spls.skipped_macs.<component>        dense - executed, per component (and per layer)
  spls.predict.{instructions, hlog_products, shift_adds, compare_ops, busy_cycles,
                energy_on_chip_pj, energy_system_pj}
                                       the prediction: HLOG/BPU/TOPK/SIMILARITY plus its SFU
                                       DEQUANT/SOFTMAX (component `predict`); hlog_products =
                                       BPU products (m n k), shift_adds = the BPU's actual terms
  spls.computation_reduction           1 - (executed + 0.1 * hlog_products) / dense
                                       (docs/design.md section 6: 0.1 MAC per HLog product)
  spls.computation_reduction_shift_adds  the same counting 0.1 MAC per shift-add
  spls.reused_row_fraction             reused rows / rows over all SIMILARITY instructions
  spls.layers.<layer>.{rows, reused_rows, reused_row_fraction, spa_kept_fraction,
                       skipped_macs, computation_reduction}
  spls.masks.{spa_elements, spa_kept, attention_elements, attention_kept, gemm_rows,
              gemm_rows_kept}             TOPK, ATTN_QK and masked GEMM statistics
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .work_table import WorkTable

SPLS_COMPONENTS = ("q", "k", "v", "qk", "pv", "o", "ffn1", "ffn2")
PREDICTION_MAC_PER_PRODUCT = 0.1
"""docs/design.md section 6: one HLog product (a few shift-adds) counts as 0.1 INT8 MAC."""


def _reduction(dense: int, executed: int, prediction: float) -> float:
    return 1.0 - (executed + prediction) / dense if dense else 0.0


SPA_OPCODES = ("topk", "pam_scores", "bpu_scores")
"""The instructions writing SPA rows (their mask_total / mask_kept count its elements)."""


def spls_summary(opcodes: list[str], queues: list[int], units: list[str], components: list[str],
                 layers: list[int | None], work: WorkTable, cycles: np.ndarray,
                 energy_on_chip_pj: np.ndarray, energy_system_pj: np.ndarray,
                 predict_queue: int) -> dict[str, Any] | None:
    """The report's `spls` section (module docstring), or None without prediction; the
    energies are per instruction, at the two boundaries (energy.boundary_energies)."""
    q = np.asarray(queues, dtype=np.int64)
    if not bool((q == predict_queue).any()):
        return None
    ops = np.asarray(opcodes, dtype=object)
    comp = np.asarray(components, dtype=object)
    unit = np.asarray(units, dtype=object)
    layer = np.asarray([-1 if x is None else x for x in layers], dtype=np.int64)
    mac = unit == "mac"
    predict = comp == "predict"
    bpu = np.isin(ops, ("bpu", "bpu_scores"))  # the HLog products
    sim = ops == "similarity"

    def section(sel: np.ndarray) -> dict[str, Any]:
        dense = int(work["macs_dense"][mac & sel].sum())
        executed = int(work["macs_executed"][mac & sel].sum())
        products = int(work["macs_dense"][bpu & sel].sum())
        shift_adds = int(work["shift_adds"][sel].sum())
        rows = int(work["rows_total"][sim & sel].sum())
        computed = int(work["rows_executed"][sim & sel].sum())
        topk = np.isin(ops, SPA_OPCODES)
        spa_total = int(work["mask_total"][topk & sel].sum())
        spa_kept = int(work["mask_kept"][topk & sel].sum())
        return {
            "macs_dense": dense,
            "macs_executed": executed,
            "skipped_macs": {
                c: int((work["macs_dense"] - work["macs_executed"])[mac & sel & (comp == c)].sum())
                for c in SPLS_COMPONENTS},
            "hlog_products": products,
            "shift_adds": shift_adds,
            "computation_reduction": _reduction(dense, executed,
                                                PREDICTION_MAC_PER_PRODUCT * products),
            "computation_reduction_shift_adds": _reduction(dense, executed,
                                                           PREDICTION_MAC_PER_PRODUCT * shift_adds),
            "rows": rows,
            "reused_rows": rows - computed,
            "reused_row_fraction": (rows - computed) / rows if rows else 0.0,
            "spa_kept_fraction": spa_kept / spa_total if spa_total else 1.0,
        }

    everything = np.ones(len(ops), dtype=bool)
    result = section(everything)
    qk = ops == "attn_qk"
    masked_gemm = (ops == "gemm") & (work["rows_total"] > 0)
    result["predict"] = {
        "instructions": int(predict.sum()),
        "hlog_products": result["hlog_products"],
        "shift_adds": result["shift_adds"],
        "compare_ops": int(work["compare_ops"][predict].sum()),
        "busy_cycles": int(cycles[predict].sum()),
        "energy_on_chip_pj": float(energy_on_chip_pj[predict].sum()),
        "energy_system_pj": float(energy_system_pj[predict].sum()),
    }
    result["masks"] = {
        "spa_elements": int(work["mask_total"][np.isin(ops, SPA_OPCODES)].sum()),
        "spa_kept": int(work["mask_kept"][np.isin(ops, SPA_OPCODES)].sum()),
        "attention_elements": int(work["mask_total"][qk].sum()),
        "attention_kept": int(work["mask_kept"][qk].sum()),
        "gemm_rows": int(work["rows_total"][masked_gemm].sum()),
        "gemm_rows_kept": int(work["rows_executed"][masked_gemm].sum()),
    }
    result["layers"] = {str(k): section(layer == k) for k in sorted(set(layer[sim].tolist()))}
    return result


def format_spls(spls: dict[str, Any]) -> list[str]:
    """Readable lines of the `spls` section's totals (appended to the report summary)."""
    p = spls["predict"]
    skipped = "  ".join(f"{c} {v:,}" for c, v in spls["skipped_macs"].items())
    lines = [
        "",
        (f"SPLS        reused rows {spls['reused_row_fraction'] * 100:.1f}%   computation "
         f"reduction {spls['computation_reduction'] * 100:.1f}% (prediction at "
         f"{PREDICTION_MAC_PER_PRODUCT} MAC per HLog product; per shift-add "
         f"{spls['computation_reduction_shift_adds'] * 100:.1f}%)"),
        f"skipped     {skipped}",
        (f"prediction  {p['hlog_products']:,} HLog products, {p['shift_adds']:,} shift-adds, "
         f"{p['busy_cycles']:,} busy cycles, {p['energy_on_chip_pj'] * 1e-6:.3g} uJ on chip, "
         f"{p['energy_system_pj'] * 1e-6:.3g} uJ system"),
    ]
    return lines  # per layer: summary_tables.spls_layers_table
