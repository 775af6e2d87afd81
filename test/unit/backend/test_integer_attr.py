"""`i64_attr` builds the attribute `IntegerAttr(value, i64)` would, and leaves anything it
cannot build directly to that constructor's checks."""

import pytest
from esact_cc.dialects.integer_attr import i64_attr
from xdsl.dialects.builtin import IntegerAttr, i64


@pytest.mark.parametrize("value", [0, 1, -1, 4096, (1 << 40) + 3, (1 << 63) - 1, -(1 << 63),
                                   1 << 63, (1 << 64) - 1])  # the last two: wrapped, as signless
def test_same_attribute_as_the_constructor(value):
    made, reference = i64_attr(value), IntegerAttr(value, i64)
    assert made == reference and hash(made) == hash(reference)
    assert str(made) == str(reference) and made.type == i64
    made.verify()  # what IRDL's verifier would check holds


@pytest.mark.parametrize("value", [1 << 64, -(1 << 63) - 1])
def test_out_of_range_is_the_constructors_error(value):
    with pytest.raises(Exception) as made:
        i64_attr(value)
    with pytest.raises(Exception) as reference:
        IntegerAttr(value, i64)
    assert type(made.value) is type(reference.value) and str(made.value) == str(reference.value)
