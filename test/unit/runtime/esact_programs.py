"""Shared hypothesis strategies for runtime tests: random instructions and valid programs.

(Not a test file; imported by the runtime tests through their rootdir-relative path.)
"""

from __future__ import annotations

from types import MappingProxyType

from esact_cc.runtime.esb import COMPONENTS, DataSegment, DebugEntry, IODescriptor, Program
from esact_cc.runtime.isa import (
    ALLOWED_BUFFERS,
    INSTRUCTION_SPECS,
    MAX_INT8_HLOG_BITS,
    Buffer,
    FieldKind,
    Instruction,
    InstructionSpec,
    SimilarityMode,
    bits_float,
    float_bits,
)
from hypothesis import strategies as st

HASH = "ab" * 32


@st.composite
def encodable_instructions(draw: st.DrawFn, spec: InstructionSpec) -> Instruction:
    """Any field values that fit their bit widths (not necessarily valid)."""
    values = {}
    for f in spec.fields:
        lo, hi = f.encodable_range
        values[f.name] = draw(st.integers(lo, hi))
    return Instruction(spec.name, MappingProxyType(values))


def _finite_float_bits() -> st.SearchStrategy[int]:
    return st.floats(width=32, allow_nan=False, allow_infinity=False).map(float_bits)


@st.composite
def valid_instructions(draw: st.DrawFn, spec: InstructionSpec) -> Instruction:
    """Values that pass isa.validate_instruction (token masks left 0: no deadlock)."""
    values: dict[str, int] = {}
    for f in spec.fields:
        lo, hi = f.valid_range
        if f.kind is FieldKind.QUEUE_MASK:
            values[f.name] = 0
        elif f.kind is FieldKind.FLOAT32:
            values[f.name] = draw(_finite_float_bits())
        elif f.enum is not None:
            allowed = ALLOWED_BUFFERS.get((spec.name, f.name))
            members = sorted(allowed) if allowed is not None else list(f.enum)
            values[f.name] = int(draw(st.sampled_from(members)))
        else:
            values[f.name] = draw(st.one_of(st.integers(lo, min(hi, 64)), st.integers(lo, hi)))
    # Repairs for the cross-field rules of validate_instruction.
    probe = Instruction(spec.name, MappingProxyType(dict(values)))
    for op in spec.operands:
        if op.stride is not None:
            cols = op.cols(probe.fields)
            if values[op.stride] and values[op.stride] < cols:
                values[op.stride] = 0
    if spec.name == "hlog":
        if values["dst_buf"] != Buffer.ACC:
            values["bits"] = min(values["bits"], MAX_INT8_HLOG_BITS)
        if not bits_float(values["scale"]) > 0:
            values["scale"] = float_bits(1.0)
    if spec.name == "similarity" and values["mode"] == SimilarityMode.COSPROB:
        values["has_prob"] = 1
    if spec.name == "similarity":  # the row chunk lies inside the rows
        values["first_row"] %= values["length"]
        values["row_count"] %= values["length"] - values["first_row"] + 1
    if spec.name in ("topk", "pam_scores", "bpu_scores"):
        values["k"] = min(values["k"], values["cols"])
    if spec.name == "host":
        values["segment"] = 0
    return Instruction(spec.name, MappingProxyType(values))


# Printable text, as esb requires of names (str.isprintable: no Cc Cf Cs Co Cn Zl Zp, no Zs but space).
node_names = st.text(st.characters(codec="utf-8", include_characters=" ", exclude_categories=(
    "Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")), max_size=20)


@st.composite
def valid_programs(draw: st.DrawFn) -> Program:
    """Programs of valid instructions (no host instructions), I/O, data and debug entries."""
    names = [n for n in INSTRUCTION_SPECS if n not in ("halt", "host")]
    body = draw(st.lists(st.sampled_from(names).flatmap(
        lambda n: valid_instructions(INSTRUCTION_SPECS[n])), max_size=8))
    instructions = [*body, Instruction.make("halt")]
    io = []
    for i, kind in enumerate(draw(st.lists(st.sampled_from(["input", "output"]), max_size=3))):
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        dtype = draw(st.sampled_from(["float32", "int8", "int32", "int64", "bool"]))
        io.append(IODescriptor(f"t{i}", shape, dtype, draw(st.integers(0, 1 << 20)), kind))
    data = []
    address = 0
    for i in range(draw(st.integers(0, 3))):
        payload = draw(st.binary(max_size=100))
        data.append(DataSegment(draw(node_names), address, payload))
        address += len(payload) + draw(st.integers(0, 50))
    debug = {}
    for index in draw(st.sets(st.integers(0, len(instructions) - 1))):
        debug[index] = DebugEntry(draw(node_names), draw(st.integers(-1, 100)),
                                  draw(st.sampled_from(sorted(COMPONENTS))))
    return Program(instructions, HASH, io, data, [], debug)
