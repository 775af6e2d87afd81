"""What an executed instruction did (`Work`, filled by the functional model) and the cycle
cost functions the ISA table attaches to each instruction (`CostFn`: fields, config, work ->
cycles). Hardware numbers come from the config; the per-instruction constants here (SFU passes
per element) are properties of the algorithm each instruction runs, documented as assumptions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .hw_config import HardwareConfig


@dataclass
class Work:
    """What one executed instruction actually did (filled by the functional model).

    The timing model turns it into cycles through `InstructionSpec.cost`; the energy model
    into joules. Dense counts are what the instruction would do with no masks.
    """

    macs_dense: int = 0
    macs_executed: int = 0
    shift_adds: int = 0
    sfu_elements: int = 0
    compare_ops: int = 0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    sram_read_bytes: dict[str, int] = field(default_factory=dict)  # by Buffer name
    sram_write_bytes: dict[str, int] = field(default_factory=dict)
    rows_total: int = 0  # GEMM/ATTN_PV rows, SIMILARITY rows
    rows_executed: int = 0  # rows a row mask keeps; SIMILARITY: computed rows
    cols_total: int = 0
    cols_executed: int = 0
    mask_total: int = 0  # element-mask positions considered (attention, TOPK)
    mask_kept: int = 0  # positions selected
    host_flops: int = 0  # HOST: rough operation count of the segment (elements touched)


CostFn = Callable[[Mapping[str, int], "HardwareConfig", Work], int]


SFU_PASSES = MappingProxyType({
    "softmax": 4,  # max, exp, sum; normalize: exp(z - max) x 1 / sum fused in one pass
    "layernorm": 4,  # mean, variance, normalize, affine
    "gelu": 2,  # polynomial/erf evaluation is two lane passes
    "quant_rows": 2,  # running max |x| over the row, then QUANT's multiply-round-clip
})


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _columnwise(cost: CostFn) -> CostFn:
    """Marks a cost written only in operations numpy broadcasts (no branch on a value): the
    timing model calls it once per opcode with a Work whose counts are int64 columns."""
    cost.columnwise = True  # type: ignore[attr-defined]
    return cost


@_columnwise
def dma_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    moved = work.dram_read_bytes + work.dram_write_bytes
    return config.dram_latency_cycles + _ceil_div(moved, max(1, int(config.dram_bytes_per_cycle)))


def _gemm_shape(work: Work) -> tuple:
    """Executed rows (M), columns (N) and depth (K) of a GEMM-like instruction."""
    rows, cols = work.rows_executed, work.cols_executed
    depth = np.maximum(1, work.macs_executed // np.maximum(1, rows * cols))
    return rows, cols, depth


def output_stationary_cost(config: HardwareConfig, work: Work) -> int:
    """Each PE accumulates one output: an R x C tile of kept outputs takes a K-deep pass. Kept
    rows are packed into full tiles, so a mask saves a whole pass only per R rows removed."""
    rows, cols, depth = _gemm_shape(work)
    tiles = _ceil_div(rows, config.mac_rows) * _ceil_div(cols, config.mac_cols)
    return tiles * depth + config.mac_rows + config.mac_cols


def weight_stationary_cost(config: HardwareConfig, work: Work) -> int:
    """Each PE holds one weight: an R (depth) x C (columns) weight tile stays while the kept
    rows stream through, one per cycle. Loading the next tile (R cycles, one array row per
    cycle) overlaps the stream, so a tile takes max(kept rows, R): every skipped row saves a
    cycle per weight tile once at least R rows are kept."""
    rows, cols, depth = _gemm_shape(work)
    tiles = _ceil_div(depth, config.mac_rows) * _ceil_div(cols, config.mac_cols)
    return tiles * np.maximum(rows, config.mac_rows) + config.mac_rows + config.mac_cols


MAC_DATAFLOWS: Mapping[str, Callable[[HardwareConfig, Work], int]] = MappingProxyType({
    "output_stationary": output_stationary_cost,
    "weight_stationary": weight_stationary_cost,
})
"""`mac_array.dataflow` values -> the GEMM cycle cost of that dataflow (docs/hardware.md)."""


@_columnwise
def mac_tile_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    """A GEMM on the R x C array under the config's dataflow (`mac_array.dataflow`)."""
    cycles = MAC_DATAFLOWS[config.mac_dataflow](config, work)
    return np.where((work.rows_executed == 0) | (work.cols_executed == 0), 1, cycles)


@_columnwise
def mac_sparse_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    """Masked attention: the sequencer packs selected (row, key) dot products onto the array."""
    lanes = config.mac_rows * config.mac_cols
    return _ceil_div(work.macs_executed, lanes) + config.mac_rows + config.mac_cols


def sfu_cost(passes: int) -> CostFn:
    @_columnwise
    def cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
        return _ceil_div(work.sfu_elements * passes, config.sfu_lanes) + 1
    return cost


@_columnwise
def bpu_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    return _ceil_div(work.shift_adds + work.sfu_elements, config.bpu_lanes) + 1


@_columnwise
def topk_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    return _ceil_div(work.compare_ops, config.topk_lanes) + 1


def topk_compares(rows: int, cols: int, k: int) -> int:
    """Comparisons of ranking rows x cols scores for their top k (TOPK, PAM_SCORES): a
    sorting network of depth ceil(log2(k + 1)) per score."""
    return rows * cols * max(1, math.ceil(math.log2(k + 1)))


def score_rank_passes(f: Mapping[str, int]) -> int:
    """PAM_SCORES' element passes per score before the top-k unit ranks it: DEQUANT's scale
    multiply and, with a mask, ADD's pass (runtime/isa_prediction_scores.py)."""
    return 1 + f["has_add_mask"]


def score_passes(f: Mapping[str, int]) -> int:
    """PAM_SCORES' element passes per score: the ranked ones plus SOFTMAX's for the probs."""
    return score_rank_passes(f) + SFU_PASSES["softmax"] * f["has_prob"]


def _score_stage(rank_elements: int, config: HardwareConfig, work: Work) -> int:
    """The score path's cycles: its element passes (`work.sfu_elements`) on the BPU lanes; the
    top-k unit ranks each score as it leaves the passes before the ranking (`rank_elements`),
    overlapping the softmax passes."""
    lanes = config.bpu_lanes
    ranked = _ceil_div(rank_elements, lanes) + _ceil_div(work.compare_ops, config.topk_lanes)
    return np.maximum(_ceil_div(work.sfu_elements, lanes), ranked)


@_columnwise
def score_path_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    """PAM_SCORES: the score path over the products in ACC (`_score_stage`)."""
    return _score_stage(f["rows"] * f["cols"] * score_rank_passes(f), config, work) + 1


def serial_score_cycles(rank_elements: int, config: HardwareConfig, work: Work) -> int:
    """`bpu.score_ranking = "serial"`: every product of the chunk first, then the score path
    over them on the same lanes (`_score_stage`)."""
    return _ceil_div(work.shift_adds, config.bpu_lanes) + _score_stage(rank_elements, config, work)


def pipelined_score_cycles(rows: int, config: HardwareConfig, work: Work) -> int:
    """`bpu.score_ranking = "pipelined"`: a two-stage pipeline over the chunk's rows. Stage 1,
    the BPU lanes: a row's products and its element passes (scale, mask, softmax); stage 2, the
    top-k unit: that row's ranking, while the lanes compute the next row. n rows with stage
    totals A and B take a + b + (n - 1) max(a, b) = max(A, B) + min(A, B) / n cycles."""
    lanes = _ceil_div(work.shift_adds + work.sfu_elements, config.bpu_lanes)
    ranking = _ceil_div(work.compare_ops, config.topk_lanes)
    return np.maximum(lanes, ranking) + _ceil_div(np.minimum(lanes, ranking), np.maximum(1, rows))


@_columnwise
def bpu_score_path_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    """BPU_SCORES: the BPU's shift-adds and the score path over its products on the same
    lanes (`integer_rank`: no element pass, the top-k unit ranks the integer products), in
    series or pipelined row by row into the top-k unit (`bpu.score_ranking`, docs/hardware.md)."""
    if config.bpu_score_ranking == "pipelined":
        return pipelined_score_cycles(f["rows"], config, work) + 1
    rank_elements = f["rows"] * f["cols"] * score_rank_passes(f) * (1 - f["integer_rank"])
    return serial_score_cycles(rank_elements, config, work) + 1


BPU_SCORE_RANKINGS = ("pipelined", "serial")
"""`bpu.score_ranking` values: how BPU_SCORES' products reach the top-k unit (above)."""


@_columnwise
def host_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    # Assumption: a host segment is bound by moving its tensors over the DRAM interface.
    return dma_cost(f, config, work)


@_columnwise
def unit_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    return 1

