"""`init_leaf_op` sets up the op xDSL's constructor would: instruction ops and the lowering
dialect's reserve / release / label ops equal, print and verify as if built by
`Operation.__init__`, and have no IRDL defaults the direct set-up would skip."""

import pytest
from esact_cc.dialects import esact
from esact_cc.dialects.integer_attr import i64_attr
from esact_cc.dialects.lowering import LabelOp, ReleaseOp, ReserveOp
from esact_cc.runtime.isa import Buffer
from xdsl.dialects.builtin import FileLineColLoc, IntAttr, StringAttr, UnknownLoc
from xdsl.ir import Operation


def _by_constructor(op: Operation) -> Operation:
    reference = type(op).__new__(type(op))
    Operation.__init__(reference, properties=op.properties, attributes=op.attributes,
                       location=op.location)
    return reference


def _verified(op: Operation) -> str:
    try:
        op.verify()
    except Exception as error:  # noqa: BLE001 - the message is compared
        return f"{type(error).__name__}: {error}"
    return "ok"


def _assert_same(op: Operation) -> None:
    reference = _by_constructor(op)
    for part in ("properties", "attributes", "location", "operands", "results", "successors",
                 "regions", "parent"):
        assert getattr(op, part) == getattr(reference, part), part
    assert str(op) == str(reference)
    assert _verified(op) == _verified(reference)


@pytest.mark.parametrize("name", sorted(esact.INSTRUCTION_OPS))
def test_instruction_ops(name):
    spec = esact.INSTRUCTION_SPECS[name]
    fields = {f.name: 1 for f in spec.fields if f.kind is not esact.FieldKind.FLOAT32}
    fields |= {f.name: 0.5 for f in spec.fields if f.kind is esact.FieldKind.FLOAT32}
    location = FileLineColLoc(StringAttr("node"), IntAttr(1), IntAttr(2))
    op = esact.instruction_op(name, {"layer": i64_attr(3), "component": None},
                              location=location, **fields)
    _assert_same(op)
    assert op.location == location and set(op.attributes) == {"layer"}
    assert list(op.properties) == list(spec.field_names)  # table order
    assert all(op.field_value(f.name) == 1 for f in spec.fields
               if f.kind is not esact.FieldKind.FLOAT32)
    bare = esact.instruction_op(name)
    _assert_same(bare)
    assert bare.location == UnknownLoc() and all(bare.field_value(f) == 0 for f in spec.field_names)


def test_numpy_and_float_values_convert_as_before():
    import numpy as np

    op = esact.instruction_op("load", rows=np.int64(64), cols=32.0)
    assert op.field_value("rows") == 64 and op.field_value("cols") == 32
    assert type(op.properties["rows"].value.data) is int
    _assert_same(op)


@pytest.mark.parametrize("op", [ReserveOp(3, Buffer.VBUF, 64), ReserveOp(4, Buffer.ABUF, 8, 128),
                                ReleaseOp(3), LabelOp(7)], ids=str)
def test_lowering_ops(op):
    _assert_same(op)
    op.verify()


@pytest.mark.parametrize("cls", [*esact.INSTRUCTION_OPS.values(), ReserveOp, ReleaseOp, LabelOp],
                         ids=lambda cls: cls.name)
def test_no_irdl_defaults_to_fill(cls):
    definition = cls.get_irdl_definition()
    assert all(d.default_value is None for d in definition.properties.values())
    assert all(getattr(d, "default_value", None) is None for d in definition.attributes.values())


def test_ops_share_no_mutable_dicts():
    a, b = esact.instruction_op("load", rows=1), esact.instruction_op("load", rows=2)
    a.set_field("cols", 5)
    assert b.field_value("cols") == 0 and a.properties is not b.properties
    assert esact.instruction_op("load").field_value("cols") == 0
