"""Lowering quantized Transformer IR to a flat `esact` program, as named steps, each a pass
whose IR can be printed (`esact-opt -p esact-select-instructions` and so on, or
`esact-cc --print-ir-after-all`):

1. `esact-select-instructions` (this module): `func.func @main` holding INT8
   `transformer.linear` / `transformer.attention` (with or without masks),
   `transformer.layer_norm|gelu|softmax|add`, `transformer.host` regions, the `spls`
   prediction ops and `onnx.weight` handles (what `quantize` and a sparsity scheme leave)
   becomes the declarations (`esact.data` weights and constants in the DRAM image, `esact.io`
   inputs/outputs, `esact.host_segment` + `esact.host_tensor` for each host region) and the
   instructions in selection order, ending in `halt`, on virtual buffers, with the buffer
   events and placement directives of the `lowering` dialect between them;
2. `esact-allocate-buffers` (passes/allocate_buffers.py): on-chip addresses;
3. `esact-order` (passes/order_instructions.py): the program order, from the directives;
4. `schedule` (passes/schedule.py): the dependency tokens.
`lower-to-esact` runs steps 1-3 in one pass.

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
- The first weight tile of a linear is loaded before its activations and marked to be hoisted
  above the previous op's SFU/DMA tail (`hoist_last`; done by esact-order), so weights stream
  while that tail runs.

Instruction selection per op (`BUILTIN_RULES`, and any rule registered with
`lowering_state.register_lowering`; shared state in `passes/lowering_state.py`):
- linear, attention: `passes/lower_linear.py`, `passes/lower_attention.py` (one rule each,
  dense or masked; their masks: `passes/lower_masked_inputs.py`);
- the SPLS prediction chain: `passes/lower_spls_to_esact.py`;
- layer_norm / gelu / softmax / add: row chunks, LOAD -> SFU op in place -> STORE;
- host: the region is exported to ONNX (`onnx_export.export_ops`) and run by one HOST
  instruction; its inputs and outputs are the DRAM tensors bound to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from esact_cc.dialects import esact, transformer
from esact_cc.dialects.onnx import WeightOp
from esact_cc.backend.emit_esb import CONFIG_HASH_ATTR
from esact_cc.passes.allocate_buffers import allocate_buffers
from esact_cc.passes.layer_roles import layers_and_roles
from esact_cc.passes.order_instructions import order_module
from esact_cc.passes.lower_attention import lower_attention
from esact_cc.passes.lower_linear import lower_linear
from esact_cc.passes.lower_spls_to_esact import PREDICTION_RULES
from esact_cc.passes.on_chip_activations import SUMMARY_ATTR as ON_CHIP_SUMMARY_ATTR
from esact_cc.passes.on_chip_activations import rows_on_chip, write_or_keep
from esact_cc.passes.lowering_state import (
    F32,
    GELU_MODES,
    MAX_DIM,
    STAGE_FRACTION,
    DramTensor,
    Lowering,
    Rule,
    load_gamma_beta,
    register_lowering,
    registered_lowerings,
)
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.hw_config import HardwareConfig, resolve_config
from esact_cc.runtime.isa import Buffer
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue

from esact_cc.ir_queries import io_names, main_function, op_label
from esact_cc.passes.weight_store_pass import WeightStorePass
from esact_cc.weight_store import WeightStore


def rowwise(lw: Lowering, sources: Sequence[DramTensor], dest: SSAValue,
            body: Callable[[list[int], int, int], None]) -> None:
    """LOAD row chunks of each source into VBUF, run `body(addresses, rows, cols)` (which
    leaves the result in the first chunk), write the first chunk as `dest`'s rows."""
    rowwise_to(lw, sources, dest, lambda dst, srcs, rows, cols: body(srcs, rows, cols),
               in_place=True)


def rowwise_to(lw: Lowering, sources: Sequence[DramTensor], dest: SSAValue,
               body: Callable[[int, list[int], int, int], None], in_place: bool = False) -> None:
    """Row chunks of each source in VBUF: `body(result, sources, rows, cols)` writes the
    result chunk, written (or kept on chip: `write_or_keep`) as `dest`'s rows. A source kept
    on chip is read where it is (the result then gets its own chunk), the others are LOADed;
    `in_place`: every source LOADed, the result is the first one's chunk."""
    rows, cols = sources[0].rows, sources[0].cols
    chunk = max(1, min(rows, MAX_DIM, (lw.capacity(Buffer.VBUF) // STAGE_FRACTION) // (cols * len(sources))))
    for r0 in range(0, rows, chunk):
        n = min(chunk, rows - r0)
        addrs, loaded = [], []
        # the chunk inside dest's kept region when it has one (several chunks: `output_tile`),
        # taken once the sources read on chip are marked read (never evicted for it)
        kept_at = _kept_chunk(lw, dest, r0, n, cols) if in_place else None
        for i, src in enumerate(sources):
            a = None if in_place else rows_on_chip(lw, src, r0)
            if a is None:
                if in_place and i == 0 and kept_at is not None:
                    a = kept_at  # the result is computed in the first source's chunk
                else:
                    a = lw.alloc(Buffer.VBUF, n * cols)
                    loaded.append(a)
                lw.load(Buffer.VBUF, a, src.address + r0 * cols * F32, n, cols)
            addrs.append(a)
        if not in_place:
            kept_at = _kept_chunk(lw, dest, r0, n, cols)
        dst = (kept_at if kept_at is not None else addrs[0] if addrs[0] in loaded
               else lw.alloc(Buffer.VBUF, n * cols))
        body(dst, addrs, n, cols)
        kept = write_or_keep(lw, dest, dst, r0, n, 0, cols)
        owned = loaded if dst in loaded else [*loaded, dst]
        lw.free(Buffer.VBUF, *[a for a in owned if not (kept and a == dst)])



def _kept_chunk(lw: Lowering, dest: SSAValue, r0: int, rows: int, cols: int) -> int | None:
    return None if lw.on_chip is None else lw.on_chip.tile(dest, r0, rows, 0, cols, False)


def lower_layer_norm(lw: Lowering, op: transformer.LayerNormOp) -> None:
    x = lw.f32_tensor(op.x, "x")
    n = x.cols
    g = load_gamma_beta(lw, op, n)
    eps = float(op.epsilon.value.data)

    def body(dst: int, addrs: list[int], rows: int, cols: int) -> None:
        lw.emit("layernorm", "sfu", dst_addr=dst, src_addr=addrs[0], rows=rows, cols=cols,
                  gamma_addr=g, beta_addr=g + n, eps=eps)

    rowwise_to(lw, [x], op.result, body)
    lw.free(Buffer.VBUF, g)



def lower_gelu(lw: Lowering, op: transformer.GeluOp) -> None:
    mode = GELU_MODES[op.approximate.data]

    def body(dst: int, addrs: list[int], rows: int, cols: int) -> None:
        lw.emit("gelu", "sfu", dst_addr=dst, src_addr=addrs[0], rows=rows, cols=cols, mode=mode)

    rowwise_to(lw, [lw.f32_tensor(op.x, "x")], op.result, body)



def lower_softmax(lw: Lowering, op: transformer.SoftmaxOp) -> None:
    def body(dst: int, addrs: list[int], rows: int, cols: int) -> None:
        lw.emit("softmax", "sfu", dst_addr=dst, src_addr=addrs[0], rows=rows, cols=cols, scale=1.0)

    rowwise_to(lw, [lw.f32_tensor(op.x, "x")], op.result, body)



def lower_add(lw: Lowering, op: transformer.AddOp) -> None:
    def body(dst: int, addrs: list[int], rows: int, cols: int) -> None:
        lw.emit("add", "sfu", dst_addr=dst, a_addr=addrs[0], b_addr=addrs[1], rows=rows, cols=cols)

    sources = [lw.f32_tensor(op.lhs, "lhs"), lw.f32_tensor(op.rhs, "rhs")]
    rowwise_to(lw, sources, op.result, body)



def lower_host(lw: Lowering, op: transformer.HostOp) -> None:
    from esact_cc.frontend.host_region_export import (host_input_names, host_output_names,
                                                      host_region_bytes)
    from esact_cc.frontend.onnx_export import module_opset

    segment = lw.host_count
    lw.host_count += 1
    in_names, out_names = host_input_names(op), host_output_names(op)
    onnx_bytes = host_region_bytes(op, lw.store, module_opset(lw.module), f"host{segment}")
    data = np.frombuffer(onnx_bytes, np.uint8)
    key = lw.store.add(lw.store.unique_name(f"esact.host{segment}.onnx"), data)
    lw.decls.append(esact.HostSegmentOp(segment, key))
    for kind, values, names in (("input", op.inputs, in_names), ("output", op.outputs, out_names)):
        for value, name in zip(values, names):
            t = lw.tensor_of(value)
            assert isinstance(value.type, TensorType)
            lw.decls.append(esact.HostTensorOp(segment, kind, name, t.address, value.type))
    lw.emit("host", "host", segment=segment)


BUILTIN_RULES: dict[type[Operation], Rule] = {
    transformer.LinearOp: lower_linear,  # type: ignore[dict-item]
    transformer.AttentionOp: lower_attention,  # type: ignore[dict-item]
    transformer.LayerNormOp: lower_layer_norm,  # type: ignore[dict-item]
    transformer.GeluOp: lower_gelu,  # type: ignore[dict-item]
    transformer.SoftmaxOp: lower_softmax,
    transformer.AddOp: lower_add,  # type: ignore[dict-item]
    transformer.HostOp: lower_host,  # type: ignore[dict-item]
    **PREDICTION_RULES,
}
"""Instruction selection of this project's ops: op class -> the rule emitting its instructions.
Other modules add theirs with `lowering_state.register_lowering`."""

for _op_type, _rule in BUILTIN_RULES.items():
    register_lowering(_op_type, _rule)


def select_instructions(module: ModuleOp, store: WeightStore, config: HardwareConfig,
                        spls_chunk_rows: int | None = None, keep_on_chip: bool = True) -> None:
    """Replace @main of `module` by the selection stream of its esact program (see the module
    docstring); `spls_chunk_rows`, `keep_on_chip` as the pass options of those names. Kept
    activations that leave an op's own tiles no room in VBUF are evicted one by one
    (`OnChipActivations.evict_one`)."""
    from esact_cc.sparsity.registry import import_scheme_modules

    import_scheme_modules("lowering")  # a scheme's rules register when its module is imported
    function = main_function(module)
    lowering = Lowering(module, store, config, registered_lowerings(), spls_chunk_rows,
                        keep_on_chip)
    lowering.stamps = layers_and_roles(function)
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
        if isinstance(op, (transformer.LinearOp, transformer.AttentionOp)) and not op.is_quantized:
            raise CompileError(f"lower-to-esact: {op_label(op)} is not supported on the "
                               "accelerator (run quantize first)")
        lowering.lower_op(op)
    lowering.emit("halt", None)
    function.detach()
    function.erase()
    module.body.block.add_ops([*lowering.decls, *lowering.stream])
    module.attributes[CONFIG_HASH_ATTR] = StringAttr(config.hash)
    if lowering.on_chip is not None:
        module.attributes[ON_CHIP_SUMMARY_ATTR] = StringAttr(lowering.on_chip.summary())


def _check_chunk_rows(step: str, rows: int | None) -> None:
    if rows is not None and rows < 0:
        raise CompileError(f"{step}: spls-chunk-rows must be >= 0, got {rows}")


@dataclass(frozen=True)
class SelectInstructionsPass(WeightStorePass):
    """quantized/transformer ops + host regions -> esact declarations and instructions on
    virtual buffers, in selection order, with placement directives (`dialects/lowering.py`)."""

    name = "esact-select-instructions"

    hw: str | None = None
    """Hardware config: a TOML path or the name of a bundled config (default: the default one)."""
    spls_chunk_rows: int | None = None
    """Rows per progressive SPLS prediction chunk (PAM, TOPK, SOFTMAX, SIMILARITY and the
    masked Q GEMM per chunk; passes/lower_spls_to_esact.py). Default: the MAC array's rows,
    so a chunk's Q row tile is one array pass; 0: one chunk of all rows."""
    keep_on_chip: bool = True
    """Keep an op's FP32 result in VBUF for its readers instead of a STORE + LOAD through
    DRAM, where it fits (passes/on_chip_activations.py); false: every result through DRAM."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        _check_chunk_rows(self.name, self.spls_chunk_rows)
        select_instructions(op, self.weights(), resolve_config(self.hw), self.spls_chunk_rows,
                            self.keep_on_chip)


@dataclass(frozen=True)
class LowerToEsactPass(WeightStorePass):
    """The lowering's steps in one pass: esact-select-instructions, esact-allocate-buffers,
    esact-order (then `schedule` assigns the tokens)."""

    name = "lower-to-esact"

    hw: str | None = None
    """Hardware config: a TOML path or the name of a bundled config (default: the default one)."""
    spls_chunk_rows: int | None = None
    """As esact-select-instructions' option of that name."""
    keep_on_chip: bool = True
    """As esact-select-instructions' option of that name."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        _check_chunk_rows(self.name, self.spls_chunk_rows)
        config = resolve_config(self.hw)
        select_instructions(op, self.weights(), config, self.spls_chunk_rows, self.keep_on_chip)
        allocate_buffers(op, config)
        order_module(op, config)


# Rules of ops defined beside the built-ins, registered when their module is imported.
from esact_cc.passes import lower_modern_blocks  # noqa: E402,F401
from esact_cc.passes import lower_select_rows  # noqa: E402,F401
