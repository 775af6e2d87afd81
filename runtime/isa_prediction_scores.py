"""The SPLS prediction unit's score path: PAM_SCORES, one instruction from the BPU's integer
PAM rows in ACC to what SIMILARITY reads, and BPU_SCORES, the BPU's products of a head's Q^ and
K^ codes streamed through the same score path without the ACC round trip (what the lowering
emits; docs/hardware.md "the PAM products go from the BPU into the score path"). PAM_SCORES:
what SIMILARITY reads (docs/hardware.md "SPLS prediction unit: the score path";
docs/design.md section 6), registered with `isa_table.register_instruction` when runtime/isa.py
is imported.

Before it the chain ran four instructions per head and chunk, each a full pass over FP32 rows
in VBUF: DEQUANT (ACC -> VBUF), ADD of the per-query mask rows (VBUF -> VBUF), TOPK (VBUF ->
MBUF) and, for cosprob, SOFTMAX in place (VBUF -> VBUF), the SFU ones on the in-order SFU
queue between the BPU and TOPK on the predict queue. PAM_SCORES streams each row once through
the score stage: the ACC scores are read once, scaled and masked in the lanes, ranked by the
top-k unit as they pass and, for cosprob, normalized in the lanes; only the SPA rows (MBUF)
and the prob rows (VBUF) are written. Numerics: `spls_kernels.prediction_scores`, the four
instructions' float32 values in their order, so the decisions and outputs are unchanged.

Cost (our model, like HLOG's and SANGER_PREDICT's element work): the element passes run on
the BPU's lanes (`bpu.lanes`), DEQUANT's one pass, the mask's ADD pass and SOFTMAX's four
(`isa_costs.score_passes`), each charged as an SFU element for energy; the top-k unit ranks
the masked scores as they leave the mask pass (`compare_ops` as TOPK counts them, on
`topk.lanes`), overlapping the softmax passes (`isa_costs.score_path_cost`):
    cycles = max(ceil(E / bpu_lanes), ceil(R / bpu_lanes) + ceil(C / topk_lanes)) + 1
with E the element passes of every score, R those before the ranking (DEQUANT and the mask)
and C the compares. SRAM: the operands below, each read or written once.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import spls_kernels
from .errors import EsactError
from .isa_costs import bpu_score_path_cost, score_passes, score_path_cost, topk_compares
from .isa_extension import (
    additive_mask_fields,
    additive_mask_operand,
    addr,
    dim,
    field_value,
    flag,
    register_once,
    stride,
    vector,
)
from .isa_fields import Buffer, FieldKind, FieldSpec, Queue, Unit
from .isa_spec import Operand
from .isa_table import define_instruction

SCORES_OPCODE = 0x38
BPU_SCORES_OPCODE = 0x39
_INT32 = (np.iinfo(np.int32).min, np.iinfo(np.int32).max)


def _run(machine, f: Mapping[str, int]) -> None:
    _score(machine, f, machine.view("src_addr"), "src_addr")


def _score(machine, f: Mapping[str, int], products: np.ndarray, operand: str) -> None:
    """The score path over rows x cols int32 PAM `products` (PAM_SCORES' ACC rows, or the
    products BPU_SCORES computed in the lanes): SPA rows, prob rows, the work record."""
    rows, cols = f["rows"], f["cols"]
    mask = machine.view("add_mask_addr") if f["has_add_mask"] else None
    scalars = machine.vector("scalar_addr") if f["scalar_count"] else np.zeros(0, np.float32)
    valid = None
    if f["causal"]:
        valid = (np.arange(cols)[None, :] <= np.arange(rows)[:, None] + f["causal_offset"])
    if f.get("integer_rank"):  # TOPK of the exact integer products (no scale, mask or probs)
        keep = machine.kernel(operand, spls_kernels.topk_mask, products[None], f["k"],
                              None if valid is None else valid[None])
        spa, prob = np.asarray(keep)[0], None
    else:
        spa, prob = machine.kernel(
            operand, spls_kernels.prediction_scores, products, machine.vector("scale_addr"),
            scalars, mask, valid, f["k"], bool(f["has_prob"]))
    machine.view("spa_addr")[...] = spa.astype(np.uint8)
    if prob is not None:
        machine.view("prob_addr")[...] = prob
    w = machine.work
    w.sfu_elements = 0 if f.get("integer_rank") else rows * cols * score_passes(f)
    w.compare_ops = topk_compares(rows, cols, f["k"])
    w.mask_total = rows * cols if valid is None else int(valid.sum())
    w.mask_kept = int(spa.sum())


_SCORE_FIELDS = (
    addr("scale_addr", "VBUF: per-column scale vector of cols"),
    FieldSpec("scalar_count", 2, doc="number of VBUF scalars multiplied in (0-3)"),
    addr("scalar_addr", "VBUF: scalar_count consecutive scalars (s_Q, s_K)"),
    *additive_mask_fields("rows", "cols"),
    FieldSpec("causal_offset", 16, FieldKind.SINT,
              doc="causal: column c is invalid when c > r + causal_offset"),
    dim("k", "keys kept per row"),
    flag("has_prob", "write softmax(PAM) rows (cosprob's probs)"),
    addr("prob_addr", "VBUF fp32: rows x cols softmax(PAM) out, packed"),
)

_SCORE_OUTPUTS = (
    Operand("spa_addr", Buffer.MBUF, field_value("rows"), field_value("cols"), "w"),
    Operand("prob_addr", Buffer.VBUF, field_value("rows"), field_value("cols"), "w",
            enabled_by="has_prob"),
)

PAM_SCORES = define_instruction(
    "pam_scores", SCORES_OPCODE, Queue.PREDICT, Unit.TOPK, (
        addr("spa_addr", "MBUF: rows x cols SPA mask out, packed"),
        addr("src_addr", "ACC int32: rows x cols PAM products (BPU output)"),
        dim("rows"), dim("cols"), stride("src_stride"),
        *_SCORE_FIELDS,
    ), (
        Operand("src_addr", Buffer.ACC, field_value("rows"), field_value("cols"), "r",
                "src_stride"),
        vector("scale_addr", Buffer.VBUF, field_value("cols"), "r"),
        vector("scalar_addr", Buffer.VBUF, field_value("scalar_count"), "r"),
        additive_mask_operand("rows", "cols"),
        *_SCORE_OUTPUTS,
    ), score_path_cost,
    """spa, prob = spls_kernels.prediction_scores(src, scale, scalars, add_mask, valid, k,
    has_prob): pam = float32(src * scale[c] * prod(scalars)) in float64 (DEQUANT), with the
    mask float32(pam + add_mask) (ADD; one row, or rows x cols with add_mask_rows); spa = the
    top k valid keys of pam per row as bytes 0/1 (TOPK: ties to the lower key, the causal rule
    excludes c > r + causal_offset); with has_prob, prob = softmax(pam) over the valid keys
    (SOFTMAX with scale 1). The FP32 pam itself is not written.""")


def _run_bpu(machine, f: Mapping[str, int]) -> None:
    if f["integer_rank"] and (f["has_add_mask"] or f["has_prob"] or f["scalar_count"]):
        raise machine.fail("integer_rank ranks the bare products: no has_add_mask, has_prob "
                           "or scalar_count")
    q, k = machine.view("a_addr"), machine.view("b_addr")
    try:
        products, shift_adds = spls_kernels.hlog_matmul(q.astype(np.int64), k.T.astype(np.int64))
    except EsactError as exc:  # the kernel names the operand ("operand a" / "operand b")
        operand = "b_addr" if "operand b" in str(exc) else "a_addr"
        raise machine.fail(f"field '{operand}': {exc}") from None
    _score(machine, f, np.clip(products, *_INT32).astype(np.int32), "a_addr")
    machine.work.shift_adds = int(shift_adds)
    machine.work.macs_dense = f["rows"] * f["cols"] * f["depth"]


BPU_SCORES = define_instruction(
    "bpu_scores", BPU_SCORES_OPCODE, Queue.PREDICT, Unit.BPU, (
        addr("spa_addr", "MBUF: rows x cols SPA mask out, packed"),
        addr("a_addr", "ABUF: rows x depth Q^ levels of one head"),
        addr("b_addr", "ABUF: cols x depth K^ levels of one head (key rows)"),
        dim("rows"), dim("cols"), dim("depth"), stride("a_stride"), stride("b_stride"),
        flag("integer_rank", "rank the integer products as they are (TOPK's ranking)"),
        *_SCORE_FIELDS,
    ), (
        Operand("a_addr", Buffer.ABUF, field_value("rows"), field_value("depth"), "r",
                "a_stride"),
        Operand("b_addr", Buffer.ABUF, field_value("cols"), field_value("depth"), "r",
                "b_stride"),
        vector("scale_addr", Buffer.VBUF, lambda f: 0 if f["integer_rank"] else f["cols"], "r"),
        vector("scalar_addr", Buffer.VBUF, field_value("scalar_count"), "r"),
        additive_mask_operand("rows", "cols"),
        *_SCORE_OUTPUTS,
    ), bpu_score_path_cost,
    """spa, prob = the score path (PAM_SCORES' semantics, or with integer_rank TOPK's
    ranking of the bare products) over pam = spls_kernels.hlog_matmul(A, B^T) saturated to
    int32 (BPU's semantics): the products go from the BPU's lanes into the score stage, never
    through ACC.""")


def register() -> None:
    """Add PAM_SCORES and BPU_SCORES to the ISA table (runtime/isa.py calls it once)."""
    register_once(((PAM_SCORES, _run), (BPU_SCORES, _run_bpu)))
