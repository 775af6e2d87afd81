"""`lower-to-esact`: quantized Transformer IR -> a flat `esact` program (one op per instruction).

Input: `func.func @main` holding `quantized.linear`, `quantized.attention`,
`transformer.layer_norm|gelu|softmax|add`, `transformer.host` regions and `onnx.weight`
handles (what `quantize` leaves). Output: the module body becomes the program: declarations
(`esact.data` weights and constants in the DRAM image, `esact.io` inputs/outputs,
`esact.host_segment` + `esact.host_tensor` for each host region) followed by the instructions
in program order, ending in `halt`. Dependency tokens are left empty: `schedule` adds them.

Memory plan:
- DRAM: every tensor crossing an op boundary gets its own row-major region; weights and
  constants (INT8 weights [in, out], FP32 dequant-scale/bias rows, LN gamma/beta pairs,
  attention scale vectors, host ONNX models) form the DRAM image. An activation whose every
  consumer is a linear is written INT8 (quantized the consumers' way, so they LOAD it straight
  into ABUF); one that some other op reads is written FP32 (too) (`plan_activation_formats`).
- On-chip buffers: WBUF and ACC hold one kind of tile each and are split into two banks used
  in turn (`BankAllocator`); ABUF, VBUF and MBUF are rings (`RingAllocator`). Either way tile
  n+1 lands elsewhere than tile n, so its load overlaps the compute on tile n (double
  buffering); tile sizes keep one op's live tiles within about half of each buffer.
- The first weight tile of a linear is loaded before its activations and hoisted above the
  previous op's SFU/DMA tail (`hoist_last`), so weights stream while that tail runs.

Instruction selection per op (`_LOWERINGS`):
- linear: per row tile of x, LOAD INT8 rows (or LOAD FP32 rows -> QUANT per input group); per
  column tile of W: LOAD W, LOAD scale/bias rows, per input group GEMM + DEQUANT (later groups
  ADD their FP32 partial), fused GELU or residual ADD when that op is the linear's only user,
  STORE (INT8 copy first, then FP32).
- attention: per batch and head group, LOAD + QUANT Q, K, V column blocks; per head ATTN_QK,
  DEQUANT (scale folded), [ADD a per-query mask], SOFTMAX (row mask, causal), QUANT P, ATTN_PV,
  DEQUANT, STORE the head's column block; heads are software-pipelined (QK of head h+1 is
  issued before PV of head h) so the MAC array works while the SFU runs a softmax.
- layer_norm / gelu / softmax / add: row chunks, LOAD -> SFU op in place -> STORE.
- host: the region is exported to ONNX (`onnx_export.export_ops`) and run by one HOST
  instruction; its inputs and outputs are the DRAM tensors bound to it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from esact_cc.dialects import esact, transformer
from esact_cc.dialects.onnx import WeightOp
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.hw_config import HardwareConfig, resolve_config
from esact_cc.runtime.isa import DIM_BITS, Buffer, GeluMode, Queue, buffer_elements, operand_extent
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, NameLoc, StringAttr, TensorType, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from esact_cc import tensor_types
from esact_cc.interpret_quantized_ops import (
    attention_output_scale,
    attention_score_scale,
    input_groups,
    linear_dequant_scale,
)
from esact_cc.quantized_kernels import quant_multiplier
from esact_cc.reference_interpreter import io_names, main_function, op_label
from esact_cc.sram_allocator import BankAllocator, RingAllocator
from esact_cc.weight_store import WeightStore, store_of

CONFIG_HASH_ATTR = "esact.config_hash"
"""Module attribute: hash of the hardware config the program was lowered for."""

DRAM_ALIGN = 64
MAX_DIM = (1 << DIM_BITS) - 1
F32 = 4
GELU_MODES = {"none": GeluMode.ERF, "tanh": GeluMode.TANH}
# Fractions of each buffer one op's live tiles may take (the rest lets the ring double-buffer).
STAGE_FRACTION = 8  # VBUF: an FP32 staging chunk of activations is at most 1/8 of VBUF
OUT_FRACTION = 4  # VBUF: one output tile at most 1/4
HALF = 2  # WBUF / ACC: one tile at most half the buffer (ABUF: a linear's input may take 3/4)
HOIST_WINDOW = 400
BANKED_BUFFERS = (Buffer.WBUF, Buffer.ACC)  # one kind of tile each: two banks, used in turn  # how far back (instructions) a weight prefetch may move

_LAYER_PATTERN = re.compile(r"(?:^|[/._])(?:layers?|h|blocks?)[._/]?(\d+)(?=[/._]|$)")


def layer_of(node_name: str) -> int:
    """Transformer layer index in an ONNX node name (`/encoder/layer.3/...` -> 3), else -1."""
    match = _LAYER_PATTERN.search(node_name)
    return int(match.group(1)) if match else -1


def node_name(op: Operation) -> str:
    loc = op.location
    return loc.desc.data if isinstance(loc, NameLoc) else ""


InputFormat = tuple[tuple[int, int, float], ...]
"""How a linear quantizes its input: (first channel, end channel, QUANT multiplier) per group."""


@dataclass(frozen=True)
class DramTensor:
    """A row-major tensor in DRAM."""

    address: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def rows(self) -> int:
        return math.prod(self.shape[:-1])

    @property
    def cols(self) -> int:
        return self.shape[-1] if self.shape else 1

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _shape(value: SSAValue) -> tuple[int, ...]:
    assert isinstance(value.type, TensorType)
    return tuple(value.type.get_shape())


def _round_tile(limit: int, total: int, quantum: int) -> int:
    """A tile size <= limit covering `total` in equal-ish tiles, a multiple of `quantum` when
    that is possible."""
    limit = max(1, min(limit, total, MAX_DIM))
    if limit >= quantum:
        limit -= limit % quantum
    count = -(-total // limit)
    tile = -(-total // count)
    if tile % quantum and tile > quantum:
        tile = min(limit, tile + quantum - tile % quantum)
    return tile


class _Lowering:
    """State of one lowering: allocators, DRAM map, the declarations and instructions."""

    def __init__(self, module: ModuleOp, store: WeightStore, config: HardwareConfig,
                 spls_chunk_rows: int | None = None):
        self.module = module
        self.store = store
        self.config = config
        self.spls_chunk_rows = spls_chunk_rows  # the pass option; read by lower_spls_to_esact
        self.rings = {
            b: (BankAllocator if b in BANKED_BUFFERS else RingAllocator)(b.name, buffer_elements(config, b))
            for b in Buffer
        }
        self.dram_end = 0
        self.tensors: dict[SSAValue, DramTensor] = {}
        self.placed: dict[str, DramTensor] = {}
        self.constants: dict[tuple, DramTensor] = {}
        self.decls: list[Operation] = []
        self.instrs: list[Operation] = []
        self.host_count = 0
        self.fused: set[Operation] = set()
        self.int8_scale: dict[SSAValue, float | InputFormat] = {}
        """Values whose every linear consumer quantizes them alike: the per-tensor input scale,
        or the InputFormat of grouped input scales (see `format_of`)."""
        self.fp32_needed: set[SSAValue] = set()
        """Values some consumer reads in FP32 (non-linear ops, host segments, outputs)."""
        self.int8_tensors: dict[SSAValue, DramTensor] = {}
        self.hoist_floor = 0
        """Loads are never hoisted above this instruction index (e.g. above a HOST segment)."""
        self.current: Operation | None = None
        self.layer = -1

    # --- DRAM ---------------------------------------------------------------------------------
    def _dram_alloc(self, nbytes: int) -> int:
        address = self.dram_end
        self.dram_end += -(-max(nbytes, 1) // DRAM_ALIGN) * DRAM_ALIGN
        return address

    def place_weight(self, key: str) -> DramTensor:
        """Put a weight-store tensor into the DRAM image (once per key)."""
        if key not in self.placed:
            array = self.store[key]
            t = DramTensor(self._dram_alloc(array.nbytes), tuple(array.shape), array.dtype)
            self.decls.append(esact.DataOp(key, t.address))
            self.placed[key] = t
        return self.placed[key]

    def constant(self, hint: str, array: np.ndarray, cache_key: tuple | None = None) -> DramTensor:
        """A compiler-made constant (scale vectors, packed pairs) in the store and DRAM image."""
        if cache_key is not None and cache_key in self.constants:
            return self.constants[cache_key]
        key = self.store.add(self.store.unique_name(f"esact.{hint}"), np.ascontiguousarray(array))
        t = self.place_weight(key)
        if cache_key is not None:
            self.constants[cache_key] = t
        return t

    def tensor_of(self, value: SSAValue) -> DramTensor:
        """The DRAM tensor holding `value` (weights are placed, activations allocated)."""
        if value not in self.tensors:
            owner = value.owner
            if isinstance(owner, WeightOp):
                t = self.place_weight(owner.weight_name.data)
            else:
                assert isinstance(value.type, TensorType)
                dtype = tensor_types.numpy_dtype_of(value.type)
                shape = _shape(value)
                t = DramTensor(self._dram_alloc(math.prod(shape) * dtype.itemsize), shape, dtype)
            self.tensors[value] = t
        return self.tensors[value]

    def f32_tensor(self, value: SSAValue, what: str) -> DramTensor:
        t = self.tensor_of(value)
        if t.dtype != np.float32:
            raise CompileError(f"{op_label(self.current)}: {what} must be float32, got {t.dtype}")
        return t

    def weight_array(self, value: SSAValue, what: str) -> np.ndarray:
        owner = value.owner
        if not isinstance(owner, WeightOp):
            raise CompileError(f"{op_label(self.current)}: {what} must be a weight-store handle")
        return np.asarray(self.store[owner.weight_name.data])

    # --- emission -------------------------------------------------------------------------------
    def emit(self, name: str, component: str | None, **fields: float) -> None:
        attrs = {} if component is None else {"component": StringAttr(component)}
        if self.layer >= 0:
            attrs["layer"] = IntegerAttr(self.layer, i64)
        op = esact.instruction_op(name, attrs, **fields)
        if self.current is not None:
            op.location = self.current.location
        self.instrs.append(op)

    def load(self, buf: Buffer, sram: int, dram: int, rows: int, cols: int, dram_stride: int = 0,
             sram_stride: int = 0) -> None:
        self.emit("load", "load", buf=buf, sram_addr=sram, dram_addr=dram, rows=rows, cols=cols,
                  sram_stride=sram_stride, dram_stride=dram_stride)

    def store_(self, buf: Buffer, sram: int, dram: int, rows: int, cols: int, dram_stride: int = 0,
               sram_stride: int = 0) -> None:
        self.emit("store", "store", buf=buf, sram_addr=sram, dram_addr=dram, rows=rows, cols=cols,
                  sram_stride=sram_stride, dram_stride=dram_stride)

    def plan_activation_formats(self, block_ops: Sequence[Operation], outputs: Sequence[SSAValue]) -> None:
        """Decide per value whether its producer writes it in FP32, INT8 (already quantized
        the way its linear consumers quantize it, so they LOAD it straight into ABUF), or both."""
        for op in block_ops:
            for value in op.results:
                formats = set()
                for use in value.uses:
                    user = use.operation
                    if _is_dense_int8_linear(user) and use.index == 0:
                        formats.add(self.input_format(user))
                    else:
                        self.fp32_needed.add(value)
                if len(formats) == 1:
                    fmt = formats.pop()
                    if len(fmt) == 1:  # per tensor: record the consumers' input scale itself
                        user = next(u.operation for u in value.uses if _is_dense_int8_linear(u.operation))
                        self.int8_scale[value] = float(user.input_scale.value.data)
                    else:
                        self.int8_scale[value] = fmt
                elif formats:
                    self.fp32_needed.add(value)
        self.fp32_needed.update(outputs)

    def input_format(self, op: transformer.LinearOp) -> InputFormat:
        """(first channel, end channel, QUANT multiplier) of each input group of a linear."""
        k = _shape(op.x)[-1]
        scales = None if op.group_scales is None else np.asarray(self.store[op.group_scales.data])
        size = None if op.group_size is None else op.group_size.value.data
        return tuple(
            (start, end, float(quant_multiplier(scale)))
            for start, end, scale in input_groups(k, size, scales, op.input_scale.value.data)
        )

    def format_of(self, value: SSAValue) -> InputFormat | None:
        """The InputFormat of `value`'s INT8 copy, if it has one."""
        planned = self.int8_scale.get(value)
        if planned is None or isinstance(planned, tuple):
            return planned
        return ((0, _shape(value)[-1], float(quant_multiplier(planned))),)

    def write_tile(self, value: SSAValue, vbuf: int, row0: int, rows: int, col0: int, cols: int) -> None:
        """Store an FP32 tile of `value` (rows x cols at `vbuf`, packed) to its DRAM forms.
        The INT8 copy goes first: the next linear waits for it, the FP32 copy is usually only
        read much later (by a residual add)."""
        if value in self.int8_scale:
            t8 = self.int8_tensor(value)
            a = self.alloc(Buffer.ABUF, rows * cols)
            for start, end, mult in self.format_of(value) or ():
                lo, hi = max(start, col0), min(end, col0 + cols)
                if lo < hi:
                    self.emit("quant", "sfu", dst_addr=a + lo - col0, src_addr=vbuf + lo - col0, rows=rows,
                              cols=hi - lo, src_stride=cols, dst_stride=cols, mult=mult)
            self.store_(Buffer.ABUF, a, t8.address + row0 * t8.cols + col0, rows, cols, dram_stride=t8.cols)
            self.free(Buffer.ABUF, a)
        if value in self.fp32_needed or value not in self.int8_scale:
            t = self.f32_tensor(value, "result")
            self.store_(Buffer.VBUF, vbuf, t.address + (row0 * t.cols + col0) * F32, rows, cols,
                        dram_stride=t.cols * F32)

    def int8_tensor(self, value: SSAValue) -> DramTensor:
        """The INT8 copy of an activation (allocated by its producer)."""
        if value not in self.int8_tensors:
            shape = _shape(value)
            self.int8_tensors[value] = DramTensor(self._dram_alloc(math.prod(shape)), shape, np.dtype(np.int8))
        return self.int8_tensors[value]

    def hoist_last(self, buf: Buffer, start: int, end: int) -> None:
        """Move the just-emitted LOAD of read-only data into `buf`[start, end) back to just
        after the last MAC-array instruction, past the SFU/DMA tail of the previous op (at most
        HOIST_WINDOW instructions), so the load queue fetches it while that tail runs instead
        of after it. Not past anything touching the region: program-order semantics are
        unchanged, since its DRAM source is never written. Not past the last MAC instruction:
        the ring allocator keeps the region clear of that one, so the load never blocks the
        in-order load queue waiting for it."""
        op = self.instrs.pop()
        position = len(self.instrs)
        floor = max(0, position - HOIST_WINDOW, self.hoist_floor)
        while position > floor:
            prev = self.instrs[position - 1]
            assert isinstance(prev, esact.InstructionOp)
            if prev.isa_spec().queue == Queue.COMPUTE or _touches(prev, buf, start, end):
                break
            position -= 1
        self.instrs.insert(position, op)

    def load_weight_tile(self, w: DramTensor, dequant: DramTensor, n0: int, n_tile: int,
                         hoist: bool = False) -> tuple[int, int]:
        """LOAD columns [n0, n0 + n_tile) of an INT8 weight [k, n] into WBUF and the same
        columns of its DEQUANT rows (scales, bias) into VBUF; returns the two addresses.
        `hoist`: move the weight load back past the previous op's tail (`hoist_last`)."""
        (k, n), scale_rows = w.shape, dequant.shape[0]
        nt = min(n_tile, n - n0)
        wt = self.alloc(Buffer.WBUF, k * nt)
        self.load(Buffer.WBUF, wt, w.address + n0, k, nt, dram_stride=n)
        if hoist:
            self.hoist_last(Buffer.WBUF, wt, wt + k * nt)
        sv = self.alloc(Buffer.VBUF, scale_rows * nt)
        self.load(Buffer.VBUF, sv, dequant.address + n0 * F32, scale_rows, nt, dram_stride=n * F32)
        return wt, sv

    def alloc(self, buf: Buffer, size: int) -> int:
        return self.rings[buf].alloc(size)

    def free(self, buf: Buffer, *starts: int) -> None:
        for s in starts:
            self.rings[buf].release(s)

    def capacity(self, buf: Buffer) -> int:
        return self.rings[buf].capacity

    def stage_rows(self, cols: int, limit: int) -> int:
        """Rows of an FP32 staging chunk of `cols` columns."""
        return max(1, min(limit, self.capacity(Buffer.VBUF) // STAGE_FRACTION // cols, MAX_DIM))

    def quantize_rows(self, src: DramTensor, row0: int, rows: int, col0: int, cols: int, abuf: int,
                      groups: InputFormat | float) -> None:
        """LOAD FP32 rows [row0, row0+rows) x cols [col0, col0+cols) of a DRAM matrix in chunks
        and QUANT them into ABUF at `abuf` (packed rows of `cols`), each column group
        (start, end, multiplier), relative to col0, with its own multiplier (a bare number:
        one multiplier for all columns)."""
        if not isinstance(groups, tuple):
            groups = ((0, cols, float(groups)),)
        chunk = self.stage_rows(cols, rows)
        for r in range(0, rows, chunk):
            n = min(chunk, rows - r)
            v = self.alloc(Buffer.VBUF, n * cols)
            self.load(Buffer.VBUF, v, src.address + ((row0 + r) * src.cols + col0) * F32, n, cols,
                      dram_stride=src.cols * F32)
            for start, end, mult in groups:
                self.emit("quant", "sfu", dst_addr=abuf + r * cols + start, src_addr=v + start, rows=n,
                          cols=end - start, src_stride=cols if end - start < cols else 0,
                          dst_stride=cols if end - start < cols else 0, mult=mult)
            self.free(Buffer.VBUF, v)

    # --- ops ------------------------------------------------------------------------------------
    def lower_linear(self, op: transformer.LinearOp) -> None:
        groups = self.input_format(op)
        x8 = self.int8_tensors.get(op.x) if self.format_of(op.x) == groups else None
        if x8 is None and op.x in self.int8_tensors and op.x not in self.fp32_needed:
            raise CompileError(f"{op_label(op)}: its input was only written in another INT8 format")
        x = self.f32_tensor(op.x, "x") if x8 is None else x8
        w = self.tensor_of(op.weight)
        if w.dtype != np.int8:
            raise CompileError(f"{op_label(op)}: weight must be int8 (run quantize first)")
        k, n = w.shape
        m = x.rows
        weight_scale = self.weight_array(op.weight_scale, "weight_scale")
        # One DEQUANT scale row per input group (group scale x weight scale), then the bias.
        rows = [linear_dequant_scale(scale, weight_scale) for scale in self._group_scales(op)]
        has_bias = int(op.bias is not None)
        if has_bias:
            rows.append(self.weight_array(op.bias, "bias").astype(np.float32).reshape(n))
        sb = self.constant(f"{node_name(op) or 'linear'}.dequant", np.stack(rows).astype(np.float32))
        bias_row = len(groups)

        epilogue, out_value = self._linear_epilogue(op)
        component = self.component_of(op)

        a_cap, w_cap = self.capacity(Buffer.ABUF) * 3 // 4, self.capacity(Buffer.WBUF) // HALF
        acc_cap, v_cap = self.capacity(Buffer.ACC) // HALF, self.capacity(Buffer.VBUF) // OUT_FRACTION
        if k > a_cap or k > w_cap:
            raise CompileError(f"{op_label(op)}: input width {k} exceeds the on-chip buffers")
        mt_max = min(m, a_cap // k, MAX_DIM)
        m_tile = _round_tile(mt_max, m, self.config.mac_rows)
        nt_limit = min(w_cap // k, acc_cap // m_tile, v_cap // (2 * m_tile) if len(groups) > 1 else v_cap // m_tile)
        n_tile = _round_tile(nt_limit, n, self.config.mac_cols)

        def load_weights(n0: int, hoist: bool = False) -> tuple[int, int]:
            return self.load_weight_tile(w, sb, n0, n_tile, hoist)

        # The first weight tile is loaded before the activations: it depends on nothing, so the
        # load queue fetches it while the producer of x is still running.
        prefetched = load_weights(0, hoist=True)
        for m0 in range(0, m, m_tile):
            mt = min(m_tile, m - m0)
            a = self.alloc(Buffer.ABUF, mt * k)
            if x8 is not None:  # produced already quantized the way this linear quantizes it
                self.load(Buffer.ABUF, a, x8.address + m0 * k, mt, k)
            else:
                self.quantize_rows(x, m0, mt, 0, k, a, groups)
            for n0 in range(0, n, n_tile):
                nt = min(n_tile, n - n0)
                wt, sv = prefetched if prefetched is not None else load_weights(n0)
                prefetched = None
                o = -1
                for g, (start, end, _) in enumerate(groups):
                    acc = self.alloc(Buffer.ACC, mt * nt)
                    self.emit("gemm", component, acc_addr=acc, a_addr=a + start, w_addr=wt + start * nt, m=mt,
                              k=end - start, n=nt, a_stride=k if end - start < k else 0)
                    if g == 0:
                        o = self.alloc(Buffer.VBUF, mt * nt)
                        self.emit("dequant", "sfu", dst_addr=o, src_addr=acc, rows=mt, cols=nt, scale_addr=sv,
                                  has_bias=has_bias, bias_addr=sv + bias_row * nt * has_bias)
                    else:  # partial of a later input group: dequantize and add (group order)
                        t = self.alloc(Buffer.VBUF, mt * nt)
                        self.emit("dequant", "sfu", dst_addr=t, src_addr=acc, rows=mt, cols=nt,
                                  scale_addr=sv + g * nt)
                        self.emit("add", "sfu", dst_addr=o, a_addr=o, b_addr=t, rows=mt, cols=nt)
                        self.free(Buffer.VBUF, t)
                    self.free(Buffer.ACC, acc)
                self.free(Buffer.WBUF, wt)
                self.free(Buffer.VBUF, sv)
                if epilogue is not None:
                    epilogue(o, m0, mt, n0, nt)
                self.write_tile(out_value, o, m0, mt, n0, nt)
                self.free(Buffer.VBUF, o)
            self.free(Buffer.ABUF, a)

    def _group_scales(self, op: transformer.LinearOp) -> list[float]:
        k = _shape(op.x)[-1]
        scales = None if op.group_scales is None else np.asarray(self.store[op.group_scales.data])
        size = None if op.group_size is None else op.group_size.value.data
        return [scale for _, _, scale in input_groups(k, size, scales, op.input_scale.value.data)]

    def _linear_epilogue(self, op: transformer.LinearOp):
        """A GELU or residual add consuming the linear's result alone is fused into its tiles."""
        uses = list(op.result.uses)
        if len(uses) != 1:
            return None, op.result
        user = uses[0].operation
        if isinstance(user, transformer.GeluOp) and user.parent_block() is op.parent_block():
            mode = GELU_MODES[user.approximate.data]
            self.fused.add(user)

            def gelu(o: int, m0: int, mt: int, n0: int, nt: int) -> None:
                self.emit("gelu", "sfu", dst_addr=o, src_addr=o, rows=mt, cols=nt, mode=mode)

            return gelu, user.result
        if isinstance(user, transformer.AddOp) and user.parent_block() is op.parent_block():
            other = user.rhs if user.lhs is op.result else user.lhs
            if other is op.result or not self._defined_before(other, op):
                return None, op.result
            residual = self.f32_tensor(other, "residual")
            self.fused.add(user)

            def add(o: int, m0: int, mt: int, n0: int, nt: int) -> None:
                r = self.alloc(Buffer.VBUF, mt * nt)
                self.load(Buffer.VBUF, r, residual.address + (m0 * residual.cols + n0) * F32, mt, nt,
                          dram_stride=residual.cols * F32)
                self.emit("add", "sfu", dst_addr=o, a_addr=o, b_addr=r, rows=mt, cols=nt)
                self.free(Buffer.VBUF, r)

            return add, user.result
        return None, op.result

    @staticmethod
    def _defined_before(value: SSAValue, op: Operation) -> bool:
        owner = value.owner
        if not isinstance(owner, Operation):
            return True  # a block argument
        if isinstance(owner, WeightOp):
            return True
        block = op.parent_block()
        return owner.parent_block() is block and block.get_operation_index(owner) < block.get_operation_index(op)

    def lower_attention(self, op: transformer.AttentionOp) -> None:
        q, k, v = (self.f32_tensor(val, name) for val, name in ((op.q, "q"), (op.k, "k"), (op.v, "v")))
        out = DramTensor(0, _shape(op.result), np.dtype(np.float32))  # written through write_tile
        batch, lq, width = q.shape
        lk, width_v = k.shape[1], v.shape[2]
        heads = op.num_heads.value.data
        d, dv = width // heads, width_v // heads
        causal = op.causal is not None
        s_scale = attention_score_scale(op.scale.value.data, op.q_scale.value.data, op.k_scale.value.data)
        o_scale = attention_output_scale(op.p_scale.value.data, op.v_scale.value.data)
        s_vec = self.constant("attention.score_scale", np.full(lk, s_scale, np.float32), ("s", lk, float(s_scale)))
        o_vec = self.constant("attention.output_scale", np.full(dv, o_scale, np.float32), ("o", dv, float(o_scale)))
        mask = None if op.mask is None else self.f32_tensor(op.mask, "mask")
        mask4 = (1, 1, 1, lk)
        if mask is not None:
            mask4 = (1,) * (4 - len(mask.shape)) + mask.shape
            if mask4[-1] != lk or mask4[2] not in (1, lq):
                raise CompileError(f"{op_label(op)}: mask {list(mask.shape)} must be [.., 1 or {lq}, {lk}]")
        row_mask = mask4[2] == 1
        mults = [quant_multiplier(s.value.data) for s in (op.q_scale, op.k_scale, op.v_scale, op.p_scale)]
        q_mult, k_mult, v_mult, p_mult = mults

        per_head = (lq + lk) * d + lk * dv
        group = max(1, min(heads, self.capacity(Buffer.ABUF) // HALF // per_head))
        if per_head + 2 * lq * lk > self.capacity(Buffer.ABUF) or lq * lk > self.capacity(Buffer.VBUF) // OUT_FRACTION:
            raise CompileError(f"{op_label(op)}: attention over {lq}x{lk} does not fit the on-chip buffers")
        s_addr = self.alloc(Buffer.VBUF, lk)
        self.load(Buffer.VBUF, s_addr, s_vec.address, 1, lk)
        o_addr = self.alloc(Buffer.VBUF, dv)
        self.load(Buffer.VBUF, o_addr, o_vec.address, 1, dv)
        mask_rows: dict[tuple[int, int], int] = {}

        def mask_row(b: int, h: int) -> int:
            """VBUF address of the (b, h) row of a row-vector mask (loaded once per op)."""
            assert mask is not None
            key = (b % mask4[0], h % mask4[1])
            if key not in mask_rows:
                addr = self.alloc(Buffer.VBUF, lk)
                self.load(Buffer.VBUF, addr, mask.address + (key[0] * mask4[1] + key[1]) * lk * F32, 1, lk)
                mask_rows[key] = addr
            return mask_rows[key]

        for b in range(batch):
            for h0 in range(0, heads, group):
                g = min(group, heads - h0)
                qa = self.alloc(Buffer.ABUF, lq * g * d)
                ka = self.alloc(Buffer.ABUF, lk * g * d)
                va = self.alloc(Buffer.ABUF, lk * g * dv)
                self.quantize_rows(q, b * lq, lq, h0 * d, g * d, qa, ((0, g * d, float(q_mult)),))
                self.quantize_rows(k, b * lk, lk, h0 * d, g * d, ka, ((0, g * d, float(k_mult)),))
                self.quantize_rows(v, b * lk, lk, h0 * dv, g * dv, va, ((0, g * dv, float(v_mult)),))
                pending: list[tuple[int, int]] = []  # (head, P address) waiting for P x V
                for hh in range(g):
                    h = h0 + hh
                    scores = self.alloc(Buffer.ACC, lq * lk)
                    self.emit("attn_qk", "qk", scores_addr=scores, q_addr=qa + hh * d, k_addr=ka + hh * d,
                              lq=lq, lk=lk, d=d, q_stride=g * d, k_stride=g * d)
                    f = self.alloc(Buffer.VBUF, lq * lk)
                    self.emit("dequant", "sfu", dst_addr=f, src_addr=scores, rows=lq, cols=lk, scale_addr=s_addr)
                    self.free(Buffer.ACC, scores)
                    extra: dict[str, int] = {}
                    if mask is not None and row_mask:
                        extra = {"has_add_mask": 1, "add_mask_addr": mask_row(b, h)}
                    elif mask is not None:
                        mm = self.alloc(Buffer.VBUF, lq * lk)
                        base = ((b % mask4[0]) * mask4[1] + h % mask4[1]) * lq * lk
                        self.load(Buffer.VBUF, mm, mask.address + base * F32, lq, lk)
                        self.emit("add", "sfu", dst_addr=f, a_addr=f, b_addr=mm, rows=lq, cols=lk)
                        self.free(Buffer.VBUF, mm)
                    self.emit("softmax", "sfu", dst_addr=f, src_addr=f, rows=lq, cols=lk, scale=1.0,
                              causal=int(causal), causal_offset=lk - lq if causal else 0, **extra)
                    p = self.alloc(Buffer.ABUF, lq * lk)
                    self.emit("quant", "sfu", dst_addr=p, src_addr=f, rows=lq, cols=lk, mult=float(p_mult))
                    self.free(Buffer.VBUF, f)
                    pending.append((hh, p))
                    if len(pending) == 2:
                        self._attention_pv(*pending.pop(0), va, g, lq, lk, dv, b * lq * width_v + h0 * dv, width_v,
                                           out, o_addr)
                for hh, p in pending:
                    self._attention_pv(hh, p, va, g, lq, lk, dv, b * lq * width_v + h0 * dv, width_v, out, o_addr)
                self.free(Buffer.ABUF, qa, ka, va)
        self.free(Buffer.VBUF, s_addr, o_addr, *mask_rows.values())

    def _attention_pv(self, hh: int, p: int, va: int, g: int, lq: int, lk: int, dv: int, out_base: int,
                      width_v: int, out: DramTensor, o_addr: int) -> None:
        """P x V of head hh of the current group, dequantized and stored into its column block."""
        acc = self.alloc(Buffer.ACC, lq * dv)
        self.emit("attn_pv", "pv", out_addr=acc, p_addr=p, v_addr=va + hh * dv, lq=lq, lk=lk, d=dv,
                  v_stride=g * dv)
        self.free(Buffer.ABUF, p)
        r = self.alloc(Buffer.VBUF, lq * dv)
        self.emit("dequant", "sfu", dst_addr=r, src_addr=acc, rows=lq, cols=dv, scale_addr=o_addr)
        self.free(Buffer.ACC, acc)
        self.write_tile(self.current.result, r, out_base // width_v, lq, out_base % width_v + hh * dv, dv)
        self.free(Buffer.VBUF, r)

    def rowwise(self, sources: Sequence[DramTensor], dest: SSAValue,
                body: Callable[[list[int], int, int], None]) -> None:
        """LOAD row chunks of each source into VBUF, run `body(addresses, rows, cols)` (which
        leaves the result in the first chunk), write the first chunk as `dest`'s rows."""
        rows, cols = sources[0].rows, sources[0].cols
        chunk = max(1, min(rows, MAX_DIM, (self.capacity(Buffer.VBUF) // STAGE_FRACTION) // (cols * len(sources))))
        for r0 in range(0, rows, chunk):
            n = min(chunk, rows - r0)
            addrs = []
            for src in sources:
                a = self.alloc(Buffer.VBUF, n * cols)
                self.load(Buffer.VBUF, a, src.address + r0 * cols * F32, n, cols)
                addrs.append(a)
            body(addrs, n, cols)
            self.write_tile(dest, addrs[0], r0, n, 0, cols)
            self.free(Buffer.VBUF, *addrs)

    def lower_layer_norm(self, op: transformer.LayerNormOp) -> None:
        x = self.f32_tensor(op.x, "x")
        n = x.cols
        gamma = self.weight_array(op.gamma, "gamma").astype(np.float32).reshape(n)
        beta = (np.zeros(n, np.float32) if op.beta is None
                else self.weight_array(op.beta, "beta").astype(np.float32).reshape(n))
        gb = self.constant(f"{node_name(op) or 'layer_norm'}.gamma_beta", np.stack([gamma, beta]))
        g = self.alloc(Buffer.VBUF, 2 * n)
        self.load(Buffer.VBUF, g, gb.address, 2, n)
        eps = float(op.epsilon.value.data)

        def body(addrs: list[int], rows: int, cols: int) -> None:
            self.emit("layernorm", "sfu", dst_addr=addrs[0], src_addr=addrs[0], rows=rows, cols=cols,
                      gamma_addr=g, beta_addr=g + n, eps=eps)

        self.rowwise([x], op.result, body)
        self.free(Buffer.VBUF, g)

    def lower_gelu(self, op: transformer.GeluOp) -> None:
        mode = GELU_MODES[op.approximate.data]

        def body(addrs: list[int], rows: int, cols: int) -> None:
            self.emit("gelu", "sfu", dst_addr=addrs[0], src_addr=addrs[0], rows=rows, cols=cols, mode=mode)

        self.rowwise([self.f32_tensor(op.x, "x")], op.result, body)

    def lower_softmax(self, op: transformer.SoftmaxOp) -> None:
        def body(addrs: list[int], rows: int, cols: int) -> None:
            self.emit("softmax", "sfu", dst_addr=addrs[0], src_addr=addrs[0], rows=rows, cols=cols, scale=1.0)

        self.rowwise([self.f32_tensor(op.x, "x")], op.result, body)

    def lower_add(self, op: transformer.AddOp) -> None:
        def body(addrs: list[int], rows: int, cols: int) -> None:
            self.emit("add", "sfu", dst_addr=addrs[0], a_addr=addrs[0], b_addr=addrs[1], rows=rows, cols=cols)

        sources = [self.f32_tensor(op.lhs, "lhs"), self.f32_tensor(op.rhs, "rhs")]
        self.rowwise(sources, op.result, body)

    def lower_host(self, op: transformer.HostOp) -> None:
        from esact_cc.onnx_export import export_ops, module_opset

        segment = self.host_count
        self.host_count += 1
        block = op.body.block
        terminator = block.last_op
        assert isinstance(terminator, transformer.YieldOp)
        body = [o for o in block.ops if o is not terminator]
        in_names = [f"in{i}" for i in range(len(block.args))]
        out_names = [f"out{i}" for i in range(len(terminator.values))]
        model = export_ops(body, list(block.args), list(terminator.values), self.store,
                           opset=module_opset(self.module), input_names=in_names,
                           output_names=out_names, graph_name=f"host{segment}")
        data = np.frombuffer(model.SerializeToString(deterministic=True), np.uint8)
        key = self.store.add(self.store.unique_name(f"esact.host{segment}.onnx"), data)
        self.decls.append(esact.HostSegmentOp(segment, key))
        for kind, values, names in (("input", op.inputs, in_names), ("output", op.outputs, out_names)):
            for value, name in zip(values, names):
                t = self.tensor_of(value)
                assert isinstance(value.type, TensorType)
                self.decls.append(esact.HostTensorOp(segment, kind, name, t.address, value.type))
        self.emit("host", "host", segment=segment)

    # --- classification -------------------------------------------------------------------------
    def component_of(self, op: transformer.LinearOp) -> str:
        """q/k/v/o/ffn1/ffn2 of a linear, from where its input comes and its output goes."""
        roles = sorted(
            use.index for use in op.result.uses if isinstance(use.operation, tuple(ATTENTION_OPS)) and use.index < 3
        )
        if roles:
            return ("q", "k", "v")[roles[0]]
        if any(isinstance(use.operation, transformer.GeluOp) for use in op.result.uses):
            return "ffn1"
        producer = op.x.owner
        if isinstance(producer, tuple(ATTENTION_OPS)):
            return "o"
        if isinstance(producer, transformer.GeluOp):
            return "ffn2"
        return _component_from_name(node_name(op))


ATTENTION_OPS: list[type[Operation]] = [transformer.AttentionOp]
"""Attention ops whose q/k/v operands and result classify linears (component_of)."""


def _is_dense_int8_linear(op: Operation) -> bool:
    return isinstance(op, transformer.LinearOp) and op.is_quantized and not op.is_masked

_NAME_COMPONENTS: tuple[tuple[str, str], ...] = (
    ("query", "q"), ("q_proj", "q"), ("key", "k"), ("k_proj", "k"), ("value", "v"), ("v_proj", "v"),
    ("attention/output", "o"), ("out_proj", "o"), ("attn/c_proj", "o"), ("intermediate", "ffn1"),
    ("c_fc", "ffn1"), ("fc1", "ffn1"), ("fc2", "ffn2"), ("mlp/c_proj", "ffn2"), ("output/dense", "ffn2"),
)


def _touches(op: Operation, buf: Buffer, start: int, end: int) -> bool:
    """Does instruction op read or write buf[start, end)? (HOST/HALT count as touching all.)"""
    assert isinstance(op, esact.InstructionOp)
    spec = op.isa_spec()
    if spec.name in ("host", "halt"):
        return True
    instr = op.to_instruction()
    for operand in spec.operands:
        extent = operand_extent(instr, operand)
        if extent is not None and extent[0] is buf and extent[1] < end and start < extent[2]:
            return True
    return False


def _component_from_name(name: str) -> str:
    lowered = name.lower()
    for needle, component in _NAME_COMPONENTS:
        if needle in lowered:
            return component
    return "o"


def _lower_linear(lw: _Lowering, op: transformer.LinearOp) -> None:
    if op.is_masked:
        _SPARSE_LOWERINGS["linear"](lw, op)
    else:
        lw.lower_linear(op)


def _lower_attention(lw: _Lowering, op: transformer.AttentionOp) -> None:
    if op.is_masked:
        _SPARSE_LOWERINGS["attention"](lw, op)
    else:
        lw.lower_attention(op)


_SPARSE_LOWERINGS: dict[str, Callable[[_Lowering, Operation], None]] = {}

_LOWERINGS: dict[type[Operation], Callable[[_Lowering, Operation], None]] = {
    transformer.LinearOp: _lower_linear,
    transformer.AttentionOp: _lower_attention,
    transformer.LayerNormOp: _Lowering.lower_layer_norm,
    transformer.GeluOp: _Lowering.lower_gelu,
    transformer.SoftmaxOp: _Lowering.lower_softmax,
    transformer.AddOp: _Lowering.lower_add,
    transformer.HostOp: _Lowering.lower_host,
}
"""Instruction selection: op class -> the method emitting its instructions."""


def lower_module(module: ModuleOp, store: WeightStore, config: HardwareConfig,
                 spls_chunk_rows: int | None = None) -> None:
    """Replace @main of `module` by the esact program (see the module docstring);
    `spls_chunk_rows` as the pass option of that name."""
    function = main_function(module)
    lowering = _Lowering(module, store, config, spls_chunk_rows)
    block = function.body.block
    for name, arg in zip(io_names(function, results=False), block.args):
        t = lowering.tensor_of(arg)
        assert isinstance(arg.type, TensorType)
        lowering.decls.append(esact.IoOp("input", name, t.address, arg.type))
    returned = block.last_op.operands if isinstance(block.last_op, func.ReturnOp) else ()
    lowering.plan_activation_formats(list(block.ops), list(returned))
    for op in block.ops:
        if isinstance(op, WeightOp) or op in lowering.fused:
            continue
        if isinstance(op, func.ReturnOp):
            for name, value in zip(io_names(function, results=True), op.operands):
                t = lowering.tensor_of(value)
                assert isinstance(value.type, TensorType)
                lowering.decls.append(esact.IoOp("output", name, t.address, value.type))
            continue
        lower = _LOWERINGS.get(type(op))
        fp32_gemm = isinstance(op, (transformer.LinearOp, transformer.AttentionOp)) and not op.is_quantized
        if lower is None or fp32_gemm:
            hint = " (run quantize first)" if fp32_gemm else ""
            raise CompileError(f"lower-to-esact: {op_label(op)} is not supported on the accelerator{hint}")
        lowering.current = op
        lowering.layer = layer_of(node_name(op))
        lower(lowering, op)
    lowering.current = None
    lowering.layer = -1
    lowering.emit("halt", None)
    function.detach()
    function.erase()
    module.body.block.add_ops([*lowering.decls, *lowering.instrs])
    module.attributes[CONFIG_HASH_ATTR] = StringAttr(config.hash)


@dataclass(frozen=True)
class LowerToEsactPass(ModulePass):
    """quantized/transformer ops + host regions -> esact declarations and instructions."""

    name = "lower-to-esact"

    hw: str | None = None
    """Hardware config: a TOML path or the name of a bundled config (default: the default one)."""
    spls_chunk_rows: int | None = None
    """Rows per progressive SPLS prediction chunk (PAM, TOPK, SOFTMAX, SIMILARITY and the
    masked Q GEMM per chunk; passes/lower_spls_to_esact.py). Default: the MAC array's rows,
    so a chunk's Q row tile is one array pass; 0: one chunk of all rows."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.spls_chunk_rows is not None and self.spls_chunk_rows < 0:
            raise CompileError("lower-to-esact: spls-chunk-rows must be >= 0, "
                               f"got {self.spls_chunk_rows}")
        lower_module(op, store_of(op), resolve_config(self.hw), self.spls_chunk_rows)


# --- hook (H9, sparse lowering): the spls op rules in passes/lower_spls_to_esact.py add
# themselves to _LOWERINGS when imported. Kept last: that module uses the definitions above.
import esact_cc.passes.lower_spls_to_esact  # noqa: F401
