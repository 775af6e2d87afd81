"""The functional model: bit-exact execution of a decoded ESACT program.

`execute(program, inputs, config)` checks the program against the config before allocating
anything (esb.check_program_fits), lays the DRAM image and the inputs out in a flat DRAM
array sized to the program's extent, allocates the on-chip buffers of the config, runs the
instructions in program order (the reference serialization, see isa.py) and returns the
outputs and one `isa.Work` record per instruction (for the timing and energy models).

Integer results are exact: INT8 products come from onnxruntime's integer GEMM where a
self-test finds it exact, else from float32 BLAS in K blocks of at most 1024 whose partial sums
are exactly representable integers (int8_gemm.py, int8_matmul_ort.py). SFU operations compute
in float64 and round once to float32 (ADD as float32 addition: the same bits, see op_add).
Every failure is a ProgramError (or another EsactError) naming the instruction index.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import online_softmax_compiled, spls_kernels
from .dequantize_rows import dequantized_float32
from .dram_image import allocate_dram_image, read_tensor, write_tensor
from .errors import EsactError, ProgramError
from .esb import Program, fitted_extents
from .esb_reader import release_mapped_pages
from .gelu_erf import gelu  # also this module's name for it (the interpreter's)
from .host_segments import HOST_TIME_LIMIT_S
from .int8_codes import round_clip_int8
from .int8_gemm import exact_int8_product, wrap_int32
from .isa import (
    BUFFER_DTYPES,
    INSTRUCTION_KERNELS,
    Buffer,
    Extent,
    GeluMode,
    Instruction,
    Operand,
    SimilarityMode,
    Work,
    bits_float,
    buffer_elements,
    operand_extent,
    similarity_rows,
)
from .isa_costs import topk_compares
from .isa_online_softmax import softmax_logits
from .layer_norm_rows import layer_norm_rows
from .masked_score_work import charge_kept_scores
from .similarity_reads import read_rows

if TYPE_CHECKING:
    from .hw_config import HardwareConfig

_RUN_NUMBERS = itertools.count()  # names of one run's host sessions: never reused

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

_DRAM_ELEMENTS = {int(b): np.dtype(BUFFER_DTYPES[b]).newbyteorder("<") for b in Buffer}
"""A LOAD / STORE's `buf` field -> the little-endian element type of its DRAM rows (looked up
per instruction: the enum call and the byte-order dtype cost 3 us of each)."""


@dataclass
class Execution:
    outputs: dict[str, np.ndarray]
    work: list[Work]  # work[i] belongs to program.instructions[i]
    dram: np.ndarray  # final DRAM image (uint8)
    buffers: dict[Buffer, np.ndarray]


def _allocate(elements: int, dtype: type, what: str) -> np.ndarray:
    """Zeroed memory, or one line naming what did not fit (the binary decides the size)."""
    try:
        return np.zeros(elements, dtype=dtype)
    except MemoryError:
        size = elements * np.dtype(dtype).itemsize
        raise ProgramError(f"out of memory allocating {what}: {size} bytes "
                           f"({size / (1 << 30):.2f} GiB)") from None


class Machine:
    """DRAM + buffers + one method per instruction (`op_<name>`)."""

    def __init__(self, program: Program, config: HardwareConfig, dram_bytes: int,
                 host_time_limit: float = HOST_TIME_LIMIT_S,
                 release_host_sessions: bool = False,
                 extents: list[tuple[Extent | None, ...]] | None = None) -> None:
        self.program = program
        # Each instruction's operand extents (esb.fitted_extents: computed once, by the checks
        # before the run), else each operand's when it is viewed.
        self.extents = extents
        self.config = config
        self.host_time_limit = host_time_limit
        # The index of each host segment's last HOST instruction, when its onnxruntime session
        # is released there (execute's release_host_sessions); the session is then named by
        # this run and the segment, so the model (92 MB in BERT-base) is never hashed.
        self.last_host_use = {instr["segment"]: i for i, instr in enumerate(program.instructions)
                              if release_host_sessions and instr.opcode_name == "host"}
        self.run_name = b"run %d segment " % next(_RUN_NUMBERS)
        self.dram = allocate_dram_image(dram_bytes)
        self.buffers = {b: _allocate(buffer_elements(config, b), BUFFER_DTYPES[b],
                                     f"the {b.name.lower()} buffer") for b in Buffer}
        self.index = 0
        self.instr: Instruction | None = None
        self.work = Work()
        # Per opcode and (address field, access): the spec operands `view` chooses among
        # (with their index in the spec), and the method that runs the opcode (looked up once,
        # not per instruction).
        self._candidates: dict[tuple[str, str, str | None], tuple[tuple[int, Operand], ...]] = {}
        self._kernels: dict[str, Callable[[Machine, Mapping[str, int]], object]] = {}
        # `view`'s plan per (instruction, address field, access): made once per shared
        # Instruction (equal words, esb.decode_program), not per use (issue 16).
        self._views: dict[tuple[int, str, str | None], tuple] = {}

    # -------------------------------------------------------------------- helpers

    def fail(self, message: str) -> ProgramError:
        assert self.instr is not None
        return ProgramError(f"instruction {self.index} ({self.instr.opcode_name}): {message}")

    def _operand_extent(self, addr_field: str, access: str | None
                        ) -> tuple[Operand, tuple[Buffer | None, int, int] | None]:
        """The operand at `addr_field` (the enabled one with that access when several share
        it) and its extent (isa_footprint.operand_extent, computed once)."""
        assert self.instr is not None
        key = (self.instr.opcode_name, addr_field, access)
        found = self._candidates.get(key)
        if found is None:
            found = tuple((i, op) for i, op in enumerate(self.instr.spec.operands)
                          if op.addr == addr_field and access in (None, op.access))
            if not found:
                raise KeyError(addr_field)
            self._candidates[key] = found
        known = None if self.extents is None else self.extents[self.index]
        for i, op in found:
            extent = operand_extent(self.instr, op) if known is None else known[i]
            if extent is not None:
                return op, extent
        return found[0][1], None

    def view(self, addr_field: str, access: str | None = None, *, rows: int | None = None,
             cols: int | None = None) -> np.ndarray:
        """2-D view (rows, cols) of an operand; writes go through to the buffer/DRAM. The work
        record is charged the `rows` x `cols` of it the kernel touches (default all)."""
        instr = self.instr
        known = self._views.get(key := (id(instr), addr_field, access))
        if known is None or known[0] is not instr:  # (or an id a later Instruction reuses)
            plan = self._plan(*self._operand_extent(addr_field, access))
            known = self._views[key] = (instr, plan)
        return self._charged(known[1], rows, cols)

    def view_of(self, op: Operand) -> np.ndarray:
        """`view` of one operand of the instruction's spec."""
        assert self.instr is not None
        return self._charged(self._plan(op, operand_extent(self.instr, op)), None, None)

    def _plan(self, op: Operand, extent: tuple[Buffer | None, int, int] | None) -> tuple:
        """(view at `extent`, rows, cols, item bytes, 0 / 1 / 2: DRAM read / write / SRAM,
        read?, buffer name): what `_charged` returns and charges."""
        assert self.instr is not None
        assert extent is not None, op.addr
        buf, start, end = extent
        f = self.instr.fields
        rows, cols = op.rows(f), op.cols(f)
        stride = (f[op.stride] if op.stride else 0) or cols
        flat = self.dram if buf is None else self.buffers[buf]
        if end > flat.shape[0]:  # check_program_fits rules this out; kept as a guard
            raise self.fail(f"field '{op.addr}': operand exceeds its memory")
        size, read = flat.itemsize, op.access == "r"
        view = np.ndarray((rows, cols), flat.dtype, buffer=flat, offset=start * size,
                          strides=(stride * size, size))
        return (view, rows, cols, size, 2 if buf is not None else 0 if read else 1, read,
                None if buf is None else buf.name.lower())

    def _charged(self, plan: tuple, touched_rows: int | None, touched_cols: int | None
                 ) -> np.ndarray:
        """A planned view, its `touched_rows` x `touched_cols` (default all) charged."""
        view, rows, cols, size, kind, read, name = plan
        nbytes = (rows if touched_rows is None else touched_rows) * (
            cols if touched_cols is None else touched_cols) * size
        work = self.work
        if kind == 2:
            counter = work.sram_read_bytes if read else work.sram_write_bytes
            counter[name] = counter.get(name, 0) + nbytes
        elif kind == 0:
            work.dram_read_bytes += nbytes
        else:
            work.dram_write_bytes += nbytes
        return view

    def mask(self, addr_field: str) -> np.ndarray:
        return self.view(addr_field) != 0

    def vector(self, addr_field: str) -> np.ndarray:
        return self.view(addr_field)[0]

    def float_field(self, name: str) -> float:
        assert self.instr is not None
        return bits_float(self.instr.fields[name])

    def reuse_map(self, addr_field: str, rows: int, access: str | None = None) -> np.ndarray:
        """The int16 reuse map, validated: -1 or an earlier computed row."""
        raw = np.ascontiguousarray(self.view(addr_field, access)[0])
        reuse = raw.view("<i2").astype(np.int64)
        for i, rep in enumerate(reuse.tolist()):
            if rep != -1 and not (0 <= rep < i and reuse[rep] == -1):
                raise self.fail(f"field '{addr_field}': reuse map entry {i} = {rep} is neither "
                                f"-1 nor an earlier computed row")
        return reuse

    def kernel(self, operand: str, fn: Callable[..., object], *args: object) -> object:
        """Call an spls_kernels function; its EsactErrors name this instruction and the
        field of the operand whose data the kernel rejected."""
        try:
            return fn(*args)
        except EsactError as exc:
            raise self.fail(f"field '{operand}': {exc}") from None

    # -------------------------------------------------------------------- DMA

    def op_load(self, f: Mapping[str, int]) -> None:
        src = self.view("dram_addr")  # (rows, bytes) uint8, rows contiguous: viewed as
        dst = self.view("sram_addr")  # elements in place, no staging copy
        dst[...] = src.view(_DRAM_ELEMENTS[f["buf"]])

    def op_store(self, f: Mapping[str, int]) -> None:
        src = self.view("sram_addr")
        dst = self.view("dram_addr")  # rows contiguous: written through as elements
        dst.view(_DRAM_ELEMENTS[f["buf"]])[...] = src

    # -------------------------------------------------------------------- MAC array

    def op_gemm(self, f: Mapping[str, int]) -> None:
        rows = np.flatnonzero(self.vector("row_mask_addr")) if f["has_row_mask"] else None
        cols = np.flatnonzero(self.vector("col_mask_addr")) if f["has_col_mask"] else None
        n_rows = f["m"] if rows is None else len(rows)  # dropped rows/cols move no bytes
        n_cols = f["n"] if cols is None else len(cols)
        a, w = self.view("a_addr", rows=n_rows), self.view("w_addr", cols=n_cols)
        acc = self.view("acc_addr", rows=n_rows, cols=n_cols)
        a_sel = a if rows is None else a[rows]
        w_sel = w if cols is None else w[:, cols]
        result = exact_int8_product(a_sel, w_sel)  # exact integers, stored as they are
        index: tuple[object, ...] = (slice(None) if rows is None else rows,
                                     slice(None) if cols is None else cols)
        if rows is not None and cols is not None:
            index = np.ix_(rows, cols)
        if f["has_bias"] or f["accumulate"]:  # INT32 adds wrap: summed in int64, wrapped
            result = result.astype(np.int64)
            if f["has_bias"]:
                bias = self.view("bias_addr", cols=n_cols)[0]
                result += (bias if cols is None else bias[cols]).astype(np.int64)
            if f["accumulate"]:
                result += acc[index].astype(np.int64)
            result = wrap_int32(result)
        acc[index] = result
        self.work.macs_dense = f["m"] * f["n"] * f["k"]
        self.work.macs_executed = n_rows * n_cols * f["k"]
        self.work.rows_total, self.work.rows_executed = f["m"], n_rows
        self.work.cols_total, self.work.cols_executed = f["n"], n_cols

    def _kept_rows(self, f: Mapping[str, int], total: int) -> tuple[np.ndarray | slice, int]:
        """The rows a row-masked instruction computes (its row mask's, else a slice of all
        `total`: no fancy-indexed copies in the dense case) and their count."""
        if f.get("has_row_mask"):
            rows = np.flatnonzero(self.vector("row_mask_addr"))
            return rows, len(rows)
        return slice(None), total

    def op_attn_qk(self, f: Mapping[str, int]) -> None:
        rows, n_rows = self._kept_rows(f, f["lq"])  # a dropped query row moves no bytes
        q, k = self.view("q_addr", rows=n_rows), self.view("k_addr")
        scores = self.view("scores_addr", rows=n_rows)  # masked_score_work: kept positions
        result = exact_int8_product(q[rows], k.T)
        dense = f["lq"] * f["lk"]
        if f["has_mask"]:
            keep = self.view("mask_addr", rows=n_rows)[rows] != 0
            result = np.where(keep, result, 0)
            kept = int(keep.sum())
        else:
            kept = n_rows * f["lk"]
        scores[rows] = result  # exact integers below 2^31
        self.work.macs_dense = dense * f["d"]
        self.work.macs_executed = kept * f["d"]
        self.work.mask_total, self.work.mask_kept = n_rows * f["lk"], kept
        self.work.rows_total, self.work.rows_executed = f["lq"], n_rows
        self.work.cols_total = self.work.cols_executed = f["lk"]

    def op_attn_pv(self, f: Mapping[str, int]) -> None:
        rows, n_rows = self._kept_rows(f, f["lq"])
        p, v = self.view("p_addr", rows=n_rows), self.view("v_addr")
        out = self.view("out_addr", rows=n_rows)
        if f["has_mask"]:
            keep = self.view("mask_addr", rows=n_rows)[rows] != 0
            p_sel = np.where(keep, p[rows], 0)
            kept = int(keep.sum())
        else:
            p_sel, kept = p[rows], n_rows * p.shape[1]
        result = exact_int8_product(p_sel, v)
        if f["accumulate"]:
            result = wrap_int32(result.astype(np.int64) + out[rows].astype(np.int64))
        out[rows] = result
        self.work.macs_dense = f["lq"] * f["lk"] * f["d"]
        self.work.macs_executed = kept * f["d"]
        self.work.mask_total, self.work.mask_kept = n_rows * f["lk"], kept
        self.work.rows_total, self.work.rows_executed = f["lq"], n_rows
        self.work.cols_total = self.work.cols_executed = f["d"]

    # -------------------------------------------------------------------- SFU

    def _sfu_elements(self, f: Mapping[str, int]) -> None:
        self.work.sfu_elements = f["rows"] * f["cols"]

    def sfu_rows(self, f: Mapping[str, int]) -> tuple[np.ndarray | slice, int]:
        """`_kept_rows` of an SFU step (also instruction modules' kernels: QUANT_ROWS), its
        work charged for them: a dropped row is neither read, evaluated nor written."""
        rows, count = self._kept_rows(f, f["rows"])
        self.work.sfu_elements = count * f["cols"]
        if f.get("has_row_mask"):
            self.work.rows_total, self.work.rows_executed = f["rows"], count
        return rows, count

    def op_dequant(self, f: Mapping[str, int]) -> None:
        rows, n = self.sfu_rows(f)
        self.view("dst_addr", rows=n)[rows] = dequantized_float32(
            self.view("src_addr", rows=n)[rows], self.vector("scale_addr"),
            self.view("row_scale_addr", cols=n)[0][rows] if f["has_row_scale"] else None,
            self.vector("scalar_addr") if f["scalar_count"] else None,
            self.vector("bias_addr") if f["has_bias"] else None)

    def op_requant(self, f: Mapping[str, int]) -> None:
        y = np.multiply(self.view("src_addr"), self.vector("mult_addr"), dtype=np.float64)
        self.view("dst_addr")[...] = round_clip_int8(y)
        self._sfu_elements(f)

    def op_quant(self, f: Mapping[str, int]) -> None:
        rows, n = self.sfu_rows(f)
        y = np.array(self.view("src_addr", rows=n)[rows], np.float64)  # float32: exact
        y *= self.float_field("mult")  # exact: a float32 times a float32
        self.view("dst_addr", rows=n)[rows] = round_clip_int8(y)

    def op_softmax(self, f: Mapping[str, int]) -> None:
        rows, n = self.sfu_rows(f)
        z, valid = softmax_logits(self, f, rows, n)
        self.view("dst_addr", rows=n)[rows] = online_softmax_compiled.softmax(z, valid)

    def op_layernorm(self, f: Mapping[str, int]) -> None:
        self.view("dst_addr")[...] = layer_norm_rows(
            self.view("src_addr"), self.vector("gamma_addr"), self.vector("beta_addr"),
            self.float_field("eps"))
        self._sfu_elements(f)

    def op_gelu(self, f: Mapping[str, int]) -> None:
        rows, n = self.sfu_rows(f)
        x = self.view("src_addr", rows=n)[rows].astype(np.float64)
        self.view("dst_addr", rows=n)[rows] = gelu(x, GeluMode(f["mode"]))

    def op_add(self, f: Mapping[str, int]) -> None:
        rows, n = self.sfu_rows(f)
        a, b, dst = (self.view(name, rows=n) for name in ("a_addr", "b_addr", "dst_addr"))
        # The float64 sum rounded once to float32 is float32 addition, bit for bit: double
        # rounding is innocuous for + when 53 >= 2 * 24 + 2 (Figueroa 1995), so numpy's float32
        # add gives it with no float64 temporary (test_float32_add_is_rounded_float64).
        if isinstance(rows, slice):
            np.add(a, b, out=dst)
        else:
            dst[rows] = np.add(a[rows], b[rows])

    def op_gather_rows(self, f: Mapping[str, int]) -> None:
        reuse = self.reuse_map("map_addr", f["rows"])
        computed = np.flatnonzero(reuse == -1)
        src = self.view("src_addr", rows=len(computed))[computed].copy()  # computed rows only
        self.view("dst_addr", rows=len(computed))[:len(computed)] = src
        self.work.sfu_elements = len(computed) * f["cols"]
        self.work.rows_total, self.work.rows_executed = f["rows"], len(computed)

    def op_scatter_rows(self, f: Mapping[str, int]) -> None:
        reuse = self.reuse_map("map_addr", f["rows"])
        rep = np.where(reuse == -1, np.arange(f["rows"]), reuse)
        if f["compact"]:
            rep = (np.cumsum(reuse == -1) - 1)[rep]  # index among computed rows
        # In place, a computed row is its own source: only the reused rows are read and written
        in_place = not f["compact"] and f["src_addr"] == f["dst_addr"] \
            and f["src_stride"] == f["dst_stride"]
        moved = np.flatnonzero(reuse != -1) if in_place else slice(None)
        n = len(moved) if in_place else f["rows"]
        self.view("dst_addr", rows=n)[moved] = self.view("src_addr", rows=n)[rep[moved]]
        self.work.sfu_elements = n * f["cols"]
        self.work.rows_total, self.work.rows_executed = f["rows"], int((reuse == -1).sum())

    # -------------------------------------------------------------------- SPLS

    def op_hlog(self, f: Mapping[str, int]) -> None:
        x = self.view("src_addr").astype(np.float64)
        if f["dynamic"]:
            scale = float(np.float32(self.kernel("src_addr", spls_kernels.hlog_scale, x,
                                                 f["bits"])))
            if not scale > 0:  # a float32 underflow of a tiny max|x|
                raise self.fail("field 'dynamic': tile scale underflows float32")
            self.view("scale_out_addr")[0, 0] = scale
        elif f["scale_count"]:  # the tensor's scale from its row tiles' scales
            scale = float(np.max(self.view("scale_in_addr")))
            if not scale > 0:
                raise self.fail("field 'scale_in_addr': the tile scales are not positive")
            self.view("scale_out_addr", "w")[0, 0] = scale
        else:
            scale = self.float_field("scale")
        levels = self.kernel("src_addr", spls_kernels.hlog_quantize, x, f["bits"], scale)
        dst = self.view("dst_addr")
        dst[...] = np.asarray(levels).astype(dst.dtype)
        self._sfu_elements(f)

    def op_bpu(self, f: Mapping[str, int]) -> None:
        a = self.view("a_addr")
        b = self.view("b_addr")
        if f["transpose_b"]:
            b = b.T
        try:
            product, shift_adds = spls_kernels.hlog_matmul(a.astype(np.int64),
                                                           b.astype(np.int64))
        except EsactError as exc:  # the kernel names the operand ("operand a" / "operand b")
            operand = "b_addr" if "operand b" in str(exc) else "a_addr"
            raise self.fail(f"field '{operand}': {exc}") from None
        self.view("dst_addr")[...] = np.clip(product, INT32_MIN, INT32_MAX).astype(np.int32)
        self.work.shift_adds = int(shift_adds)
        self.work.macs_dense = f["m"] * f["n"] * f["k"]

    def op_topk(self, f: Mapping[str, int]) -> None:
        scores = self.view("src_addr")
        valid = np.ones(scores.shape, dtype=bool)
        if f["has_key_mask"]:
            valid &= self.mask("key_mask_addr")
        if f["has_add_mask"]:
            add = self.vector("add_mask_addr").astype(np.float32)
            scores = scores.astype(np.float32) + add[None, :]
        if f["causal"]:
            r = np.arange(f["rows"])[:, None]
            c = np.arange(f["cols"])[None, :]
            valid &= c <= r + f["causal_offset"]
        keep = self.kernel("src_addr", spls_kernels.topk_mask, scores[None], f["k"], valid[None])
        keep = np.asarray(keep)[0]
        self.view("dst_addr")[...] = keep.astype(np.uint8)
        self.work.compare_ops = topk_compares(f["rows"], f["cols"], f["k"])
        self.work.mask_total = int(valid.sum())
        self.work.mask_kept = int(keep.sum())

    def op_similarity(self, f: Mapping[str, int]) -> None:
        first, count = f["first_row"], similarity_rows(f)
        shape = (f["heads"], count if f["has_ring"] else f["length"], f["keys"])
        earlier = self.reuse_map("map_addr", first, "r") if first else np.zeros(0, np.int64)
        # Whole-row form: per head the chunk's rows and its references are read, not all L
        read = None if f["has_ring"] else read_rows(f, earlier) * f["keys"]
        spa = (self.view("spa_addr", cols=read) != 0).reshape(shape)
        prob = self.view("prob_addr", cols=read).astype(np.float64).reshape(shape) \
            if f["has_prob"] else None
        mode = "cosprob" if f["mode"] == SimilarityMode.COSPROB else "overlap"
        if f["has_ring"]:
            reuse = self.similarity_ring(f, spa, prob, mode, earlier)
            chunk_spa = spa
        else:
            reuse = np.asarray(self.kernel(
                "spa_addr", spls_kernels.local_similarity_rows, spa, prob, f["window"],
                self.float_field("threshold"), mode, f["k"], f["first_reference"], earlier,
                first + count))
            chunk_spa = spa[:, first:first + count]
        self.view("map_addr", "w")[...] = reuse.astype("<i2").view(np.uint8)[None, :]
        keys = spls_kernels.key_mask_of(chunk_spa, reuse)
        if first:  # later chunks add their computed rows' keys
            keys |= self.view("key_mask_addr", "r") != 0
        self.view("key_mask_addr", "w")[...] = keys.astype(np.uint8)
        if f["has_row_mask"]:
            self.view("row_mask_addr")[0] = (reuse == -1).astype(np.uint8)
        computed = int((reuse == -1).sum())
        self.work.compare_ops = count * min(f["window"], f["length"]) * f["heads"] * f["keys"]
        self.work.rows_total, self.work.rows_executed = count, computed

    def similarity_ring(self, f: Mapping[str, int], spa: np.ndarray, prob: np.ndarray | None,
                        mode: str, earlier: np.ndarray) -> np.ndarray:
        """SIMILARITY with a reference ring (has_ring): decide the chunk, update the ring."""
        assert self.instr is not None
        ring_op = next(op for op in self.instr.spec.operands if op.addr == "ring_addr"
                       and op.access == "w" and operand_extent(self.instr, op) is not None)
        ring_view = self.view_of(ring_op)
        slots = ring_view.shape[0]
        ring = np.array(ring_view).reshape(slots, f["heads"], f["keys"])
        self.work.sram_read_bytes[ring_op.buffer.name.lower()] = (
            self.work.sram_read_bytes.get(ring_op.buffer.name.lower(), 0) + ring.nbytes)
        reuse, updated = self.kernel(
            "ring_addr", spls_kernels.local_similarity_ring, spa, prob, ring, f["window"],
            self.float_field("threshold"), mode, f["k"], f["first_reference"], earlier,
            f["length"])
        ring_view[...] = np.asarray(updated).reshape(slots, -1)
        return np.asarray(reuse)

    # -------------------------------------------------------------------- host, control

    def op_host(self, f: Mapping[str, int]) -> None:
        from .host_segments import release_session, run_host_segment  # onnxruntime if needed

        segment = self.program.host_segments[f["segment"]]
        name = self.run_name + b"%d" % f["segment"] if self.last_host_use else None
        try:
            read, written = run_host_segment(segment, self.dram, self.host_time_limit, name)
        except ProgramError as exc:
            raise self.fail(f"field 'segment' = {f['segment']}: {exc}") from None
        if name is not None and self.last_host_use.get(f["segment"]) == self.index:
            release_session(name)
        self.work.dram_read_bytes, self.work.dram_write_bytes = read, written
        self.work.host_flops = read + written

    def op_halt(self, f: Mapping[str, int]) -> None:
        pass

    # -------------------------------------------------------------------- driver

    def step(self, index: int, instr: Instruction) -> Work:
        with np.errstate(all="ignore"):
            return self.run_instruction(index, instr)

    def run_instruction(self, index: int, instr: Instruction) -> Work:
        """`step` for a caller that has set np.errstate(all="ignore") around all its steps
        (execute: entering it once, not per instruction)."""
        self.index, self.instr, self.work = index, instr, Work()
        kernel = self._kernels.get(instr.opcode_name)
        if kernel is None:  # functions, not bound methods: no cycle keeps the DRAM image alive
            kernel = self._kernels[instr.opcode_name] = getattr(
                type(self), f"op_{instr.opcode_name}", None) or INSTRUCTION_KERNELS[
                    instr.opcode_name]  # else an instruction added with isa.register_instruction
        kernel(self, instr.fields)
        return self.work


def _coerce_input(name: str, value: object, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != shape:
        raise ProgramError(f"input '{name}': expected shape {list(shape)}, got "
                           f"{list(array.shape)}")
    target = np.dtype(dtype)
    if array.dtype != target:
        # Accept what converts without loss, plus float64 -> float32 (numpy's default float).
        if not (np.can_cast(array.dtype, target, "safe") or
                (array.dtype == np.float64 and target == np.float32)):
            raise ProgramError(f"input '{name}': expected dtype {dtype}, got {array.dtype}")
        array = array.astype(target)
    return array.astype(target.newbyteorder("<"), copy=False)


def execute(program: Program, inputs: Mapping[str, object], config: HardwareConfig,
            check_hash: bool = True,
            progress: Callable[[int, int], None] | None = None,
            host_time_limit: float | None = None,
            release_host_sessions: bool = False) -> Execution:
    """Run `program` on `inputs` (name -> array) under `config`; see the module docstring.
    `progress(done, total)`, if given, is called after every instruction (esact-run's bar);
    `host_time_limit` bounds each HOST instruction (default host_segments.HOST_TIME_LIMIT_S).
    `release_host_sessions` drops each host model's onnxruntime session after its last HOST
    instruction (a process that runs the program once: the session's copy of the model's
    tensors is not kept through the activations' peak), instead of caching it for later runs."""
    dram_bytes, extents = fitted_extents(program, config, check_hash)
    expected = {d.name for d in program.inputs}
    missing = expected - set(inputs)
    unknown = set(inputs) - expected
    if missing or unknown:
        raise ProgramError("inputs do not match the binary: "
                           + "; ".join(filter(None, [
                               f"missing {', '.join(sorted(missing))}" if missing else "",
                               f"unknown {', '.join(sorted(unknown))}" if unknown else ""])))
    arrays = {d.name: _coerce_input(d.name, inputs[d.name], d.shape, d.dtype)
              for d in program.inputs}
    machine = Machine(program, config, dram_bytes,
                      HOST_TIME_LIMIT_S if host_time_limit is None else host_time_limit,
                      release_host_sessions, extents)
    for seg in program.data_segments:
        machine.dram[seg.address:seg.address + len(seg.data)] = np.frombuffer(seg.data,
                                                                              np.uint8)
    # The segments are in DRAM now: the file pages they were read from (a mapped binary's,
    # esb_reader.py) leave the resident memory.
    for region in {id(m.obj): m.obj for seg in program.data_segments
                   if isinstance(m := seg.data, memoryview)}.values():
        release_mapped_pages(region)
    for d in program.inputs:
        write_tensor(machine.dram, d.address, arrays[d.name])
    run = machine.run_instruction
    with np.errstate(all="ignore"):
        if progress is None:
            work = [run(i, instr) for i, instr in enumerate(program.instructions)]
        else:
            total = len(program.instructions)
            work = []
            for i, instr in enumerate(program.instructions):
                work.append(run(i, instr))
                progress(i + 1, total)
    charge_kept_scores(program.instructions, work)  # a sparse attention unit's score path
    outputs = {d.name: read_tensor(machine.dram, d.address, d.shape, d.dtype)
               for d in program.outputs}
    return Execution(outputs, work, machine.dram, machine.buffers)
