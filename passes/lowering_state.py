"""State of one instruction selection (`esact-select-instructions`): DRAM map, the selection
stream, virtual on-chip buffers.

`Lowering` holds what every instruction-selection rule shares: the DRAM plan (weights and
compiler constants in the image, one region per activation, INT8 copies of activations whose
linear or attention consumers quantize them alike: `plan_activation_formats`), the selection stream
(`stream`: instructions in selection order, with the buffer events and placement directives of
the `lowering` dialect between them), emission helpers (LOAD / STORE, QUANT of FP32 rows, the
FP32 and INT8 writes of an output tile) and the masks on chip (`masks`: MBUF regions of each
mask value, from an SPLS prediction or a constant). `lower_op` lowers one op through the rule
table the pass gives it (`rules`), so rules that lower other ops beside their own (the SPLS
prediction) need no import of the driver.

On-chip tiles are virtual buffers: `alloc` returns a virtual address (the buffer's id in the
high bits, `VIRTUAL_SPAN`, so a rule adds offsets to it like to an address) and records a
`lowering.reserve`; `emit` turns each virtual address field into its offset plus the
`lowering.vbuf` attribute. The allocators (WBUF and ACC in two banks used in turn, ABUF / VBUF /
MBUF as rings) run here too, as the capacity model: a tiling that does not fit is known while
selecting (`lower_aside` falls back on it); addresses are assigned by `esact-allocate-buffers`,
which replays the events through the same allocators. Where instructions go beyond selection
order is said by directives (`hoist_last`, `lower_aside`, `place`) and done by `esact-order`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from esact_cc.dialects import esact, transformer
from esact_cc.dialects import lowering as stream_ops
from esact_cc.dialects.integer_attr import i64_attr
from esact_cc.dialects.onnx import WeightOp
from esact_cc.dialects.plain_attrs import dictionary_attr, string_attr
from esact_cc.passes.attention_inputs import attention_input_format, int8_copy_fits
from esact_cc.passes.layer_roles import Stamp, component_of
from esact_cc.passes.on_chip_activations import OnChipActivations
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.hw_config import HardwareConfig
from esact_cc.runtime.isa import DIM_BITS, Buffer
from xdsl.dialects.builtin import (
    ModuleOp,
    NameLoc,
    StringAttr,
    TensorType,
    UnitAttr,
)
from xdsl.ir import Operation, SSAValue

from esact_cc import tensor_types
from esact_cc.backend.emit_esb import CONFIG_HASH_ATTR
from esact_cc.backend.sram_allocator import buffer_allocators
from esact_cc.ir_queries import op_label
from esact_cc.quantized_kernels import GELU_MODES, input_groups, quant_multiplier  # noqa: F401 (lower_to_esact)
from esact_cc.weight_store import WeightStore

DRAM_ALIGN = 64
MAX_DIM = (1 << DIM_BITS) - 1
F32 = 4
# Fractions of each buffer one op's live tiles may take (the rest lets the ring double-buffer).
STAGE_FRACTION = 8  # VBUF: an FP32 staging chunk of activations is at most 1/8 of VBUF
OUT_FRACTION = 4  # VBUF: one output tile at most 1/4
HALF = 2  # WBUF / ACC: one tile at most half the buffer (ABUF: a linear's input may take 3/4)
VIRTUAL_SPAN = 1 << 40
"""Virtual address of offset o in virtual buffer v: (v + 1) * VIRTUAL_SPAN + o (above any
buffer or DRAM address a field can hold)."""


def check_selected_for(module: ModuleOp, config: HardwareConfig, step: str) -> None:
    """A lowering step after selection runs with the hardware config selection used."""
    selected = module.attributes.get(CONFIG_HASH_ATTR)
    if not isinstance(selected, StringAttr):
        raise CompileError(f"{step}: the module is not a selected esact program (it has no "
                           f"'{CONFIG_HASH_ATTR}'; run esact-select-instructions first)")
    if selected.data != config.hash:
        raise CompileError(f"{step}: the program was selected for another hardware config "
                           f"(hash {selected.data}) than '{config.name}' (hash {config.hash}); "
                           "give every lowering step the same hw option")


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


def shape_of(value: SSAValue) -> tuple[int, ...]:
    assert isinstance(value.type, TensorType)
    return tuple(value.type.get_shape())


def round_tile(limit: int, total: int, quantum: int) -> int:
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

@dataclass
class MaskTiles:
    """MBUF addresses of the masks one mask value stands for (per batch element b: + b * size
    of each region); absent regions are None."""

    batch: int
    length: int
    heads: int
    reuse_map: int | None = None  # L little-endian int16 per batch element (2 L MBUF bytes)
    row_mask: int | None = None  # L bytes, 1 = computed row
    key_mask: int | None = None  # H x L bytes
    spa: int | None = None  # H x L x L bytes
    spa_dram: DramTensor | None = None
    """[B, H, L, L] SPA bytes in DRAM when they do not fit MBUF (the SPLS ring form spills
    them per chunk; the attention LOADs each head's rows)."""
    expand: Callable[[int, int, int, int, int], None] | None = None
    """expand(b, h, first_row, rows, mbuf_address) writes those SPA rows on chip from a
    scheme's compact state (SpAtten's keep vectors) when the whole SPA does not fit MBUF."""
    vectors: list[int] = field(default_factory=list)
    """MBUF regions `expand` reads, freed with the masks."""
    users: set[Operation] = field(default_factory=set)
    """Ops still to be lowered that read these masks; the regions are freed after the last."""
    chunks: list[tuple[int, int]] = field(default_factory=list)
    """(first row, rows) of each GEMM of a row-masked linear of `x`: whole SPLS prediction
    chunks, grouped to fill the MAC array's rows (`lower_spls_to_esact._gemm_row_tiles`)."""
    x: SSAValue | None = None
    """The SPLS prediction's input: a row-masked linear of it gets one GEMM per chunk."""

    def regions(self) -> list[int]:
        return [r for r in (self.reuse_map, self.row_mask, self.key_mask, self.spa)
                if r is not None] + self.vectors


@dataclass(frozen=True)
class DeferredRows:
    """A row-wise op whose result is never written to DRAM: every consumer (a linear that
    quantizes its input rows on chip) LOADs the op's input rows and applies the op to them in
    VBUF before quantizing, so no whole-tensor pass stands between two linears."""

    source: DramTensor
    """The op's input (the rows consumers LOAD)."""
    table: DramTensor
    """A constant row the op reads (RMSNorm's gamma), LOADed into VBUF once per use."""
    apply: Callable[[int, int, int, int], None]
    """apply(rows in VBUF, rows, cols, table in VBUF): emit the op in place."""


Rule = Callable[["Lowering", Operation], None]
"""An instruction-selection rule: emits the instructions of one op."""

_LOWERINGS: dict[type[Operation], Rule] = {}


def register_lowering(op_type: type[Operation], rule: Rule) -> None:
    """Make `lower-to-esact` lower every `op_type` op with `rule(lowering, op)`. The built-in
    rules register themselves when passes/lower_to_esact.py is imported; a module adding an op
    registers its rule the same way when it is imported. One rule per op type: registering a
    second one is a bug (ValueError), not an override."""
    if op_type in _LOWERINGS:
        raise ValueError(f"a lowering for {op_type.__name__} is already registered "
                         f"({_LOWERINGS[op_type].__qualname__})")
    _LOWERINGS[op_type] = rule


def registered_lowerings() -> Mapping[type[Operation], Rule]:
    """Op type -> its instruction-selection rule, as registered so far (read-only view)."""
    return MappingProxyType(_LOWERINGS)




class Lowering:
    """State of one lowering: allocators, DRAM map, the declarations and instructions."""

    def __init__(self, module: ModuleOp, store: WeightStore, config: HardwareConfig,
                 rules: Mapping[type[Operation], Rule], spls_chunk_rows: int | None = None,
                 keep_on_chip: bool = False):
        self.module = module
        self.rules = rules
        self.store = store
        self.config = config
        self.spls_chunk_rows = spls_chunk_rows  # the pass option; read by lower_spls_to_esact
        self.rings = buffer_allocators(config)
        """The capacity model: does a tile fit beside the live ones (see the module docstring)."""
        self.dram_end = 0
        self.tensors: dict[SSAValue, DramTensor] = {}
        self.placed: dict[str, DramTensor] = {}
        self.constants: dict[tuple, DramTensor] = {}
        self.decls: list[Operation] = []
        self.stream: list[Operation] = []
        """Instructions in selection order, with buffer events and placement directives."""
        self.vbuf_sizes: list[int] = []
        """Size of each virtual buffer, by id."""
        self.physical: dict[int, int] = {}
        """Virtual buffer id -> its address in the capacity model's allocators (for `free`)."""
        self.group: int | None = None
        """The placement group instructions emitted now belong to (`lower_aside`)."""
        self.counters = {"group": 0, "label": 0}
        self.host_count = 0
        self.fused: set[Operation] = set()
        self.int8_scale: dict[SSAValue, float | InputFormat] = {}
        """Values whose every linear consumer quantizes them alike: the per-tensor input scale,
        or the InputFormat of grouped input scales (see `format_of`)."""
        self.fp32_needed: set[SSAValue] = set()
        """Values some consumer reads in FP32 (non-linear ops, host segments, outputs)."""
        self.int8_tensors: dict[SSAValue, DramTensor] = {}
        self.current: Operation | None = None
        self.layer = -1
        self.stamps: dict[Operation, Stamp] = {}
        """Layer and role of every op of the function (passes/layer_roles.py)."""
        self.masks: dict[SSAValue, MaskTiles] = {}
        """On-chip masks by the mask value they hold (its users read them there)."""
        self.deferred_rows: dict[SSAValue, DeferredRows] = {}
        """Values left to their consumers (`DeferredRows`): they have no DRAM tensor."""
        self.masked_inputs_planned = False
        """Whether the INT8 plan of masked linears' inputs was made (`lower_masked_inputs`)."""
        self.on_chip = OnChipActivations(self) if keep_on_chip else None
        """Activations kept in VBUF between ops (passes/on_chip_activations.py), or None."""

    # --- rules ----------------------------------------------------------------------------------
    def lower_op(self, op: Operation) -> None:
        """Lower `op` here through its rule (with its location and layer on the instructions);
        it is then skipped where it stands."""
        rule = self.rules.get(type(op))
        if rule is None:
            raise CompileError(f"lower-to-esact: {op_label(op)} is not supported on the accelerator")
        saved = self.current, self.layer
        self.current, self.layer = op, self.stamps[op].layer
        if self.on_chip is not None:
            self.on_chip.begin()
        try:
            rule(self, op)
        finally:
            self.current, self.layer = saved
        if self.on_chip is not None:
            self.on_chip.end(op)

    def component_of(self, op: Operation) -> str:
        """A linear's debug-map component, from its role (passes/layer_roles.py)."""
        return component_of(self.stamps[op])

    # --- DRAM ---------------------------------------------------------------------------------
    def _dram_alloc(self, nbytes: int) -> int:
        address = self.dram_end
        self.dram_end += -(-max(nbytes, 1) // DRAM_ALIGN) * DRAM_ALIGN
        return address

    def scratch_tensor(self, shape: tuple[int, ...], dtype: type) -> DramTensor:
        """A DRAM region for on-chip data spilled and read back within the program."""
        size = math.prod(shape) * np.dtype(dtype).itemsize
        return DramTensor(self._dram_alloc(size), shape, np.dtype(dtype))

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

    def tensor_of(self, value: SSAValue, on_chip: bool = False) -> DramTensor:
        """The DRAM tensor holding `value` (weights are placed, activations allocated); one
        kept on chip is written there first unless `on_chip` (read by LOADs: `load` writes it)."""
        if not on_chip and self.on_chip is not None:
            self.on_chip.for_dram(value)
        assert value not in self.deferred_rows, "a deferred value is never written to DRAM"
        if value not in self.tensors:
            owner = value.owner
            if isinstance(owner, WeightOp):
                t = self.place_weight(owner.weight_name.data)
            else:
                assert isinstance(value.type, TensorType)
                dtype = tensor_types.numpy_dtype_of(value.type)
                shape = shape_of(value)
                t = DramTensor(self._dram_alloc(math.prod(shape) * dtype.itemsize), shape, dtype)
            self.tensors[value] = t
        return self.tensors[value]

    def f32_tensor(self, value: SSAValue, what: str) -> DramTensor:
        t = self.tensor_of(value, on_chip=True)
        if t.dtype != np.float32:
            raise CompileError(f"{op_label(self.current)}: {what} must be float32, got {t.dtype}")
        return t

    def weight_array(self, value: SSAValue, what: str) -> np.ndarray:
        owner = value.owner
        if not isinstance(owner, WeightOp):
            raise CompileError(f"{op_label(self.current)}: {what} must be a weight-store handle")
        return np.asarray(self.store[owner.weight_name.data])

    # --- emission -------------------------------------------------------------------------------
    def emit(self, name: str, component: str | None, **fields: float) -> esact.InstructionOp:
        """Append instruction `name`; a field holding a virtual address becomes the offset
        into its virtual buffer, named by the `lowering.vbuf` attribute."""
        attrs: dict[str, object] = {} if component is None else {"component": string_attr(component)}
        if self.layer >= 0:
            attrs["layer"] = i64_attr(self.layer)
        vbufs = {}
        for key, value in fields.items():
            if isinstance(value, (int, np.integer)) and value >= VIRTUAL_SPAN:
                vid, offset = divmod(int(value), VIRTUAL_SPAN)
                assert offset <= self.vbuf_sizes[vid - 1], f"{name}.{key} runs off its buffer"
                fields[key], vbufs[key] = offset, i64_attr(vid - 1)
        if vbufs:
            attrs[stream_ops.VBUF_ATTR] = dictionary_attr(vbufs)
        if self.group is not None:
            attrs[stream_ops.GROUP_ATTR] = i64_attr(self.group)
        location = None if self.current is None else self.current.location
        op = esact.instruction_op(name, attrs, location=location, **fields)  # type: ignore[arg-type]
        self.stream.append(op)
        return op

    def load(self, buf: Buffer, sram: int, dram: int, rows: int, cols: int, dram_stride: int = 0,
             sram_stride: int = 0) -> None:
        if self.on_chip is not None:
            self.on_chip.before_load(dram)
        self.emit("load", "load", buf=buf, sram_addr=sram, dram_addr=dram, rows=rows, cols=cols,
                  sram_stride=sram_stride, dram_stride=dram_stride)

    def store_(self, buf: Buffer, sram: int, dram: int, rows: int, cols: int, dram_stride: int = 0,
               sram_stride: int = 0) -> None:
        self.emit("store", "store", buf=buf, sram_addr=sram, dram_addr=dram, rows=rows, cols=cols,
                  sram_stride=sram_stride, dram_stride=dram_stride)

    def plan_activation_formats(self, block_ops: Sequence[Operation], outputs: Sequence[SSAValue]) -> None:
        """Decide per value whether its producer writes it in FP32, INT8 (already quantized
        the way its linear consumers, or the INT8 attentions it is Q, K or V of, quantize it,
        so they LOAD it straight into ABUF), or both."""
        for op in block_ops:
            for value in op.results:
                formats: dict[InputFormat, float | None] = {}  # -> the per-tensor scale
                for use in value.uses:
                    user = use.operation
                    attention = attention_input_format(self, user, use.index, value)
                    if is_dense_int8_linear(user) and use.index == 0 and user.token_scales is None:
                        fmt = self.input_format(user)
                        formats.setdefault(fmt, user.input_scale.value.data if len(fmt) == 1 else None)
                    elif attention is not None:  # Q, K, V (passes/attention_inputs.py)
                        formats.setdefault(*attention)
                    else:
                        self.fp32_needed.add(value)
                if len(formats) == 1:
                    (fmt, scale), = formats.items()  # per tensor: the consumers' scale itself
                    self.int8_scale[value] = fmt if scale is None else scale
                elif formats:
                    self.fp32_needed.add(value)
        self.fp32_needed.update(outputs)

    def input_format(self, op: transformer.LinearOp) -> InputFormat:
        """(first channel, end channel, QUANT multiplier) of each input group of a linear."""
        k = shape_of(op.x)[-1]
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
        return ((0, shape_of(value)[-1], float(quant_multiplier(planned))),)

    def write_tile(self, value: SSAValue, vbuf: int, row0: int, rows: int, col0: int, cols: int,
                   fp32: bool = True, stride: int | None = None) -> None:
        """Store an FP32 tile of `value` (rows x cols at `vbuf`, packed, or rows `stride`
        apart) to its DRAM forms (the FP32 one only if `fp32`). The INT8 copy goes first: the
        next linear waits for it, the FP32 copy is usually only read much later (by a residual
        add)."""
        stride = cols if stride is None else stride
        if value in self.int8_scale and int8_copy_fits(self, value, cols):
            t8 = self.int8_tensor(value)
            # row pieces where ABUF has no room for all (beside an SPLS chain: attention_inputs)
            piece = min(rows, max(1, self.room(Buffer.ABUF) // cols))
            for r in range(0, rows, piece):
                n = min(piece, rows - r)
                a = self.alloc(Buffer.ABUF, n * cols)
                for start, end, mult in self.format_of(value) or ():
                    lo, hi = max(start, col0), min(end, col0 + cols)
                    if lo < hi:
                        self.emit("quant", "sfu", dst_addr=a + lo - col0, src_addr=vbuf + r * stride + lo - col0,
                                  rows=n, cols=hi - lo, src_stride=stride, dst_stride=cols, mult=mult)
                self.store_(Buffer.ABUF, a, t8.address + (row0 + r) * t8.cols + col0, n, cols,
                            dram_stride=t8.cols)
                self.free(Buffer.ABUF, a)
        if fp32 and (value in self.fp32_needed or value not in self.int8_scale):
            t = self.f32_tensor(value, "result")
            self.store_(Buffer.VBUF, vbuf, t.address + (row0 * t.cols + col0) * F32, rows, cols,
                        dram_stride=t.cols * F32, sram_stride=0 if stride == cols else stride)

    def int8_tensor(self, value: SSAValue) -> DramTensor:
        """The INT8 copy of an activation (allocated by its producer)."""
        if value not in self.int8_tensors:
            shape = shape_of(value)
            self.int8_tensors[value] = DramTensor(self._dram_alloc(math.prod(shape)), shape, np.dtype(np.int8))
        return self.int8_tensors[value]

    def hoist_last(self) -> None:
        """Mark the just-emitted LOAD of read-only data to be moved back past the previous
        op's SFU/DMA tail by the ordering step (`order_instructions.hoist`)."""
        last = self.stream[-1]
        assert last.name == "esact.load"
        last.attributes[stream_ops.HOIST_ATTR] = UnitAttr()

    # --- placement directives -----------------------------------------------------------------
    def label(self) -> int:
        """A new point of the stream for a directive to refer to."""
        self.counters["label"] += 1
        self.stream.append(stream_ops.LabelOp(self.counters["label"]))
        return self.counters["label"]

    def place(self, policy: str, group: int, label: int | None = None) -> None:
        self.stream.append(stream_ops.PlaceOp(policy, group, label))

    def lower_now(self, op: Operation) -> None:
        """Lower `op` at this point of the program (it is then skipped where it stands)."""
        self.lower_op(op)
        self.fused.add(op)

    def lower_aside(self, ops: list[Operation], masks: MaskTiles | None) -> int | None:
        """Lower `ops` now as a placement group held out of the program (`place "aside"`),
        for a later directive to place; returns the group. Their tiles are reserved while
        every region live now is, so they never share one. None, with the lowering state as
        before (but for unused DRAM constants), when their tiles do not fit (`masks`: the
        masks whose users the lowering updates)."""
        saved = (copy.deepcopy(self.rings), len(self.stream), set(self.fused),
                 None if masks is None else set(masks.users), dict(self.physical),
                 None if self.on_chip is None else self.on_chip.snapshot())
        self.counters["group"] += 1
        group, self.group = self.counters["group"], self.counters["group"]
        try:
            for op in ops:
                self.lower_now(op)
        except CompileError:
            self.rings.clear()
            self.rings.update(saved[0])
            # spill STOREs placed back before the group stay (`OnChipActivations.store`)
            inserted = 0 if self.on_chip is None else self.on_chip.restore(saved[5])
            del self.stream[saved[1] + inserted:]
            self.fused.clear()
            self.fused.update(saved[2])
            if masks is not None and saved[3] is not None:
                masks.users = saved[3]
            self.physical = saved[4]
            return None
        finally:
            self.group = None
        self.place("aside", group)
        return group

    def load_weight_tile(self, w: DramTensor, dequant: DramTensor, n0: int, n_tile: int,
                         hoist: bool = False, into: int | None = None) -> tuple[int, int]:
        """LOAD columns [n0, n0 + n_tile) of an INT8 weight [k, n] into WBUF (a new tile, or
        at `into` inside one already allocated) and the same columns of its DEQUANT rows
        (scales, bias) into VBUF; returns the two addresses.
        `hoist`: move the weight load back past the previous op's tail (`hoist_last`)."""
        (k, n), scale_rows = w.shape, dequant.shape[0]
        nt = min(n_tile, n - n0)
        wt = self.alloc(Buffer.WBUF, k * nt) if into is None else into
        self.load(Buffer.WBUF, wt, w.address + n0, k, nt, dram_stride=n)
        if hoist:
            self.hoist_last()
        sv = self.alloc(Buffer.VBUF, scale_rows * nt)
        self.load(Buffer.VBUF, sv, dequant.address + n0 * F32, scale_rows, nt, dram_stride=n * F32)
        return wt, sv

    def alloc(self, buf: Buffer, size: int) -> int:
        """A new virtual buffer of `size` elements of `buf`: its virtual address (activations
        kept on chip are evicted while it does not fit beside them)."""
        while True:  # the capacity model: raises if the tile does not fit
            try:
                physical = self.rings[buf].alloc(size)
                break
            except CompileError:
                if buf is not Buffer.VBUF or self.on_chip is None or not self.on_chip.evict_one(size):
                    raise
        vid = self.reserve(buf, size)
        self.physical[vid] = physical
        return (vid + 1) * VIRTUAL_SPAN

    def reserve(self, buf: Buffer, size: int, address: int | None = None) -> int:
        """Record virtual buffer `size` elements of `buf` (pinned at `address` if given)."""
        vid = len(self.vbuf_sizes)
        self.vbuf_sizes.append(max(1, size))
        self.stream.append(stream_ops.ReserveOp(vid, buf, max(1, size), address))
        return vid

    def pinned(self, buf: Buffer, address: int, size: int) -> int:
        """A virtual buffer at a fixed `address` of `buf`, outside the allocator (never freed)."""
        return (self.reserve(buf, size, address) + 1) * VIRTUAL_SPAN

    def free(self, buf: Buffer, *starts: int) -> None:
        for s in starts:
            vid, offset = divmod(s, VIRTUAL_SPAN)
            assert offset == 0 and vid - 1 in self.physical, "free of an address alloc did not give"
            self.rings[buf].release(self.physical.pop(vid - 1))
            self.stream.append(stream_ops.ReleaseOp(vid - 1))

    def capacity(self, buf: Buffer) -> int:
        return self.rings[buf].capacity

    def room(self, buf: Buffer) -> int:
        """The largest tile ring buffer `buf` can give now, beside every live one."""
        return self.rings[buf].largest_free()  # type: ignore[union-attr]

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
        if self.on_chip is not None and self.on_chip.quantize(src, row0, rows, col0, cols, abuf, groups):
            return  # QUANT straight from the tile kept on chip
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

    @staticmethod
    def defined_before(value: SSAValue, op: Operation) -> bool:
        """Whether `value` is a weight, a block argument or the result of an op before `op`
        in its block (so lowered before it)."""
        owner = value.owner
        if not isinstance(owner, Operation):
            return True  # a block argument
        if isinstance(owner, WeightOp):
            return True
        block = op.parent_block()
        return owner.parent_block() is block and block.get_operation_index(owner) < block.get_operation_index(op)


def is_dense_int8_linear(op: Operation) -> bool:
    return isinstance(op, transformer.LinearOp) and op.is_quantized and not op.is_masked


def load_gamma_beta(lw: Lowering, norm: transformer.LayerNormOp, n: int) -> int:
    """A layer norm's gamma and beta (zeros when absent) LOADed into VBUF as two rows of n."""
    gamma = lw.weight_array(norm.gamma, "gamma").astype(np.float32).reshape(n)
    beta = (np.zeros(n, np.float32) if norm.beta is None
            else lw.weight_array(norm.beta, "beta").astype(np.float32).reshape(n))
    gb = lw.constant(f"{node_name(norm) or 'layer_norm'}.gamma_beta", np.stack([gamma, beta]))
    at = lw.alloc(Buffer.VBUF, 2 * n)
    lw.load(Buffer.VBUF, at, gb.address, 2, n)
    return at
