"""`lift-transformer` rules for layer norm, GELU, softmax and residual adds.

- LayerNormalization (axis = last) -> transformer.layer_norm.
- The decomposition the opset < 17 exporters emit, anchored at its Div:
      mean = ReduceMean(x, last axis); d = Sub(x, mean)
      var = ReduceMean(Pow(d, 2) | Mul(d, d), last axis)
      n = Div(d, Sqrt(Add(var, eps)))  [-> Mul(n, gamma)] [-> Add(., beta)]
- Gelu (approximate none|tanh); the erf form x * 0.5 * (1 + Erf(x / sqrt(2))) (Div by sqrt(2)
  or Mul by 1/sqrt(2)); the tanh form 0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 x^3)))
  (x^3 as Pow(x, 3) or x * x * x), or BLOOM's Tanh((sqrt(2/pi) x) (1 + 0.044715 x x)); the
  product x * 0.5 * (...) in any association.
- Softmax over the last axis (outside attention) -> transformer.softmax.
- Add of two same-shape f32 tensors, one of them a transformer op's result -> transformer.add.
"""

from __future__ import annotations

import math

import numpy as np
from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.dialects.transformer import AddOp, GeluOp, LayerNormOp, SoftmaxOp
from esact_cc.passes.lift_transformer_graph import (
    NoMatch,
    OnnxGraph,
    close,
    fmt_shape,
    location_name,
    require,
    shape_of,
)
from esact_cc.passes.lift_transformer_pattern import LiftPattern, Phase, register_lift_pattern
from xdsl.dialects.builtin import Float32Type
from xdsl.ir import Operation, OpResult, SSAValue

SQRT_2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_CUBIC_COEFFICIENT = 0.044715
CONSTANT_RTOL = 1e-6
"""Relative tolerance when checking a float32 constant against its exact value."""


def is_f32(value: SSAValue) -> bool:
    return value.type.get_element_type() == Float32Type()  # type: ignore[attr-defined]


def constant_vector(graph: OnnxGraph, value: SSAValue, n: int, what: str) -> np.ndarray:
    """A constant broadcasting as [n] along the last axis."""
    array = graph.const(value)
    require(array is not None, f"{what} is not a constant")
    assert array is not None
    require(
        array.ndim >= 1 and array.shape[-1] == n and all(d == 1 for d in array.shape[:-1]),
        f"{what} has shape {fmt_shape(array.shape)}, expected [{n}]",
    )
    return array.reshape(n)


def weight_handle_of(
    graph: OnnxGraph, value: SSAValue, array: np.ndarray, hint: str, before: Operation
) -> SSAValue:
    return graph.weight_handle(value, array, graph.weight_name(value) or hint, before)


def replace_end(end: Operation, new: Operation, like: Operation) -> Operation:
    new.location = like.location
    end.parent_block().insert_op_before(new, end)  # type: ignore[union-attr]
    end.results[0].replace_all_uses_with(new.results[0])
    return new


@register_lift_pattern
class LayerNormPattern(LiftPattern):
    """LayerNormalization over the last axis -> transformer.layer_norm."""

    name = "layer_norm"
    anchors = ("LayerNormalization",)
    phase = Phase.LAYER_NORM

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        where = location_name(op)
        inputs = graph.inputs(op)
        x, gamma_value = inputs[0], inputs[1]
        beta_value = inputs[2] if len(inputs) > 2 else None
        assert x is not None and gamma_value is not None
        shape = shape_of(x)
        attrs = graph.attrs(op)
        axis = int(attrs.get("axis", -1))
        require(
            axis % len(shape) == len(shape) - 1,
            f"{where}: normalises from axis {axis}, not the last axis",
        )
        require(
            all(r.uses.get_length() == 0 for r in op.results[1:]),
            f"{where}: mean / inv-std outputs are used",
        )
        require(is_f32(x), f"{where}: input is not f32")
        epsilon = float(attrs.get("epsilon", 1e-5))
        require(
            epsilon > 0 and math.isfinite(epsilon), f"{where}: epsilon {epsilon} is not positive"
        )
        n = shape[-1]
        gamma = constant_vector(graph, gamma_value, n, f"{where}: scale")
        beta = constant_vector(graph, beta_value, n, f"{where}: bias") if beta_value is not None else None
        g = weight_handle_of(graph, gamma_value, gamma, f"{where}.gamma", op)
        b = (
            weight_handle_of(graph, beta_value, beta, f"{where}.beta", op)
            if beta_value is not None
            else None
        )
        return replace_end(op, LayerNormOp(x, g, b, epsilon, op.results[0].type), op)


@register_lift_pattern
class DecomposedLayerNormPattern(LiftPattern):
    """ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div[/Mul/Add] -> transformer.layer_norm."""

    name = "layer_norm"
    anchors = ("Div",)
    phase = Phase.LAYER_NORM

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        return (
            graph.producer(op.operands[0], "Sub") is not None
            and graph.producer(op.operands[1], "Sqrt") is not None
        )

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        where = location_name(op)
        centered, root = op.operands
        sub = graph.expect(centered, "Sub", f"{where}: numerator")
        x, mean = sub.operands
        shape = shape_of(x)
        require(is_f32(x), f"{where}: input is not f32")
        mean_op = graph.expect(mean, "ReduceMean", f"{where}: the subtracted mean")
        require(mean_op.operands[0] is x, f"{where}: the mean is not taken of the normalised input")
        check_last_axis_mean(mean_op, graph, len(shape), "mean")
        sqrt = graph.expect(root, "Sqrt", f"{where}: denominator")
        add_eps = graph.expect(sqrt.operands[0], "Add", f"{where}: Sqrt input")
        variance, epsilon = graph.split_const(add_eps, "epsilon Add")
        require(
            epsilon > 0 and math.isfinite(epsilon), f"{where}: epsilon {epsilon} is not positive"
        )
        var_op = graph.expect(variance, "ReduceMean", f"{where}: variance")
        check_last_axis_mean(var_op, graph, len(shape), "variance")
        square = graph.producer(var_op.operands[0], "Pow", "Mul")
        require(square is not None, f"{where}: variance is not a mean of squares")
        assert square is not None
        if square.op_type == "Pow":
            require(
                square.operands[0] is centered, f"{where}: Pow squares something else than x - mean"
            )
            exponent = graph.scalar(square.operands[1], f"{where}: Pow exponent")
            require(exponent == 2.0, f"{where}: Pow exponent {exponent} is not 2")
            centered_uses = 2
        else:
            require(
                square.operands[0] is centered and square.operands[1] is centered,
                f"{where}: Mul squares something else than x - mean",
            )
            centered_uses = 3
        require(centered.uses.get_length() == centered_uses, f"{where}: x - mean is used elsewhere")
        for value, what in (
            (mean, "mean"),
            (variance, "variance"),
            (square.results[0], "square"),
            (add_eps.results[0], "variance + eps"),
            (root, "sqrt"),
        ):
            graph.require_single_use(value, f"{where}: the {what}")
        n = shape[-1]
        end: Operation = op
        gamma = beta = None
        gamma_value = beta_value = None
        mul = graph.only_user(op.results[0], "Mul")
        if mul is not None:
            other = mul.operands[1] if mul.operands[0] is op.results[0] else mul.operands[0]
            if graph.is_const(other):
                gamma, gamma_value, end = constant_vector(graph, other, n, f"{where}: scale"), other, mul
        add = graph.only_user(end.results[0], "Add")
        if add is not None:
            other = add.operands[1] if add.operands[0] is end.results[0] else add.operands[0]
            if graph.is_const(other):
                beta, beta_value, end = constant_vector(graph, other, n, f"{where}: bias"), other, add
        require(
            shape_of(end.results[0]) == shape, f"{where}: the result broadcasts to another shape"
        )
        if gamma is None:
            g = graph.new_weight(np.ones(n, np.float32), f"{where}.gamma", end)
        else:
            assert gamma_value is not None
            g = weight_handle_of(graph, gamma_value, gamma, f"{where}.gamma", end)
        b = None
        if beta is not None:
            assert beta_value is not None
            b = weight_handle_of(graph, beta_value, beta, f"{where}.beta", end)
        return replace_end(end, LayerNormOp(x, g, b, epsilon, end.results[0].type), mean_op)


def check_last_axis_mean(op: OnnxOperation, graph: OnnxGraph, rank: int, what: str) -> None:
    """A ReduceMean over the last axis only, keeping it."""
    where = location_name(op)
    attrs = graph.attrs(op)
    axes_value = graph.input(op, 1)
    if axes_value is not None:
        array = graph.const(axes_value)
        require(array is not None, f"{where}: {what} axes are not constant")
        assert array is not None
        axes = [int(a) for a in array.reshape(-1)]
    else:
        axes = [int(a) for a in attrs.get("axes", [])]
    require(
        [a % rank for a in axes] == [rank - 1],
        f"{where}: {what} over axes {axes}, not the last axis",
    )
    require(int(attrs.get("keepdims", 1)) == 1, f"{where}: {what} drops the reduced axis")


def _half_x_product(start: SSAValue, x: SSAValue, graph: OnnxGraph, where: str) -> Operation:
    """Follow `start` through Muls until it has been multiplied by x and 0.5 (any order);
    the last Mul."""
    constant, has_x = 1.0, False
    value = start
    user: OnnxOperation | None = None
    for _ in range(3):
        graph.require_single_use(value, f"{where}: the GELU factor at {location_name(value.op)}")  # type: ignore[union-attr]
        user = graph.only_user(value, "Mul")
        require(user is not None, f"{where}: (1 + ...) is not multiplied by x / 2")
        assert user is not None
        other = user.operands[1] if user.operands[0] is value else user.operands[0]
        if other is x:
            require(not has_x, f"{where}: x appears twice in the GELU product")
            has_x = True
        elif graph.is_const(other):
            constant *= graph.scalar(other, f"{where}: GELU factor")
        else:
            half = graph.producer(other, "Mul")
            require(
                half is not None and graph.single_use(other),
                f"{where}: GELU product has an unexpected factor "
                f"{location_name(other.op) if isinstance(other, OpResult) else 'argument'}",
            )
            assert half is not None
            rest, factor = graph.split_const(half, "x / 2")
            require(
                rest is x and not has_x, f"{where}: GELU product multiplies something else than x"
            )
            has_x, constant = True, constant * factor
        value = user.results[0]
        if has_x and close(constant, 0.5, CONSTANT_RTOL):
            return user
    raise NoMatch(f"{where}: GELU product is x * {constant:g} * (...) , expected x * 0.5 * (...)")


def _plus_one(value: SSAValue, graph: OnnxGraph, where: str) -> OnnxOperation:
    graph.require_single_use(value, f"{where}: the GELU Erf/Tanh")
    add = graph.only_user(value, "Add")
    require(add is not None, f"{where}: Erf/Tanh is not followed by Add 1")
    assert add is not None
    other, one = graph.split_const(add, "1 + ...")
    require(
        other is value and one == 1.0, f"{where}: Erf/Tanh is followed by Add {one}, expected 1"
    )
    return add


@register_lift_pattern
class GeluPattern(LiftPattern):
    """Gelu op -> transformer.gelu."""

    name = "gelu"
    anchors = ("Gelu",)
    phase = Phase.ACTIVATION

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        approximate = str(graph.attrs(op).get("approximate", "none"))
        require(
            approximate in ("none", "tanh"), f"{location_name(op)}: approximate={approximate!r}"
        )
        require(is_f32(op.operands[0]), f"{location_name(op)}: input is not f32")
        return replace_end(op, GeluOp(op.operands[0], approximate, op.results[0].type), op)


@register_lift_pattern
class ErfGeluPattern(LiftPattern):
    """x * 0.5 * (1 + Erf(x / sqrt(2))) -> transformer.gelu approximate("none")."""

    name = "gelu"
    anchors = ("Erf",)
    phase = Phase.ACTIVATION

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        where = location_name(op)
        scaled = graph.producer(op.operands[0], "Div", "Mul")
        require(scaled is not None, f"{where}: Erf input is not x / sqrt(2)")
        assert scaled is not None
        graph.require_single_use(op.operands[0], f"{where}: x / sqrt(2)")
        x, factor = graph.split_const(scaled, "x / sqrt(2)")
        expected = SQRT_2 if scaled.op_type == "Div" else 1.0 / SQRT_2
        require(
            close(factor, expected, CONSTANT_RTOL),
            f"{where}: Erf input is x {'/' if scaled.op_type == 'Div' else '*'} {factor!r}, "
            f"expected {expected!r}",
        )
        require(is_f32(x), f"{where}: input is not f32")
        end = _half_x_product(_plus_one(op.results[0], graph, where).results[0], x, graph, where)
        require(
            shape_of(end.results[0]) == shape_of(x),
            f"{where}: GELU result broadcasts to another shape",
        )
        return replace_end(end, GeluOp(x, "none", end.results[0].type), op)


@register_lift_pattern
class TanhGeluPattern(LiftPattern):
    """0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 x^3))) -> gelu approximate("tanh")."""

    name = "gelu"
    anchors = ("Tanh",)
    phase = Phase.ACTIVATION

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        return graph.producer(op.operands[0], "Mul") is not None

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        where = location_name(op)
        scaled = graph.expect(op.operands[0], "Mul", f"{where}: Tanh input")
        graph.require_single_use(op.operands[0], f"{where}: the Tanh input")
        if not any(graph.is_const(v) for v in scaled.operands):
            x = self._split_factored(scaled, graph, where)
        else:
            inner, factor = graph.split_const(scaled, "sqrt(2/pi) Mul")
            self._check_sqrt_2_over_pi(factor, where)
            add = graph.expect(inner, "Add", f"{where}: x + 0.044715 x^3")
            graph.require_single_use(inner, f"{where}: x + 0.044715 x^3")
            x, cubic = self._split_cubic(add, graph, where)
        require(is_f32(x), f"{where}: input is not f32")
        end = _half_x_product(_plus_one(op.results[0], graph, where).results[0], x, graph, where)
        require(
            shape_of(end.results[0]) == shape_of(x),
            f"{where}: GELU result broadcasts to another shape",
        )
        return replace_end(end, GeluOp(x, "tanh", end.results[0].type), op)

    @staticmethod
    def _check_sqrt_2_over_pi(factor: float, where: str) -> None:
        require(
            close(factor, SQRT_2_OVER_PI, CONSTANT_RTOL),
            f"{where}: Tanh input scaled by {factor!r}, expected sqrt(2/pi) = {SQRT_2_OVER_PI!r}",
        )

    def _split_factored(self, scaled: OnnxOperation, graph: OnnxGraph, where: str) -> SSAValue:
        """BLOOM's factored form, (sqrt(2/pi) * x) * (1 + 0.044715 * x * x): x."""
        for a, b in (scaled.operands, scaled.operands[::-1]):
            scale_mul, one_plus = graph.producer(a, "Mul"), graph.producer(b, "Add")
            if scale_mul is None or one_plus is None:
                continue
            x, factor = graph.split_const(scale_mul, "sqrt(2/pi) * x")
            self._check_sqrt_2_over_pi(factor, where)
            quadratic, one = graph.split_const(one_plus, "1 + 0.044715 x^2")
            require(one == 1.0, f"{where}: {location_name(one_plus)} adds {one}, expected 1")
            square = graph.expect(quadratic, "Mul", f"{where}: 0.044715 x^2")
            coefficient_mul = next((graph.producer(v, "Mul") for v in square.operands
                                    if v is not x and graph.producer(v, "Mul")), None)
            require(coefficient_mul is not None and x in square.operands,
                    f"{where}: {location_name(square)} is not (0.044715 x) * x")
            assert coefficient_mul is not None
            rest, coefficient = graph.split_const(coefficient_mul, "0.044715 Mul")
            require(rest is x and close(coefficient, GELU_CUBIC_COEFFICIENT, CONSTANT_RTOL),
                    f"{where}: quadratic term {coefficient!r} of another value, expected "
                    f"{GELU_CUBIC_COEFFICIENT} x")
            for value in (a, b, quadratic, coefficient_mul.results[0]):
                graph.require_single_use(value, f"{where}: the factored GELU at "
                                         f"{location_name(value.op)}")  # type: ignore[union-attr]
            return x
        raise NoMatch(f"{where}: Tanh argument is neither sqrt(2/pi) * (x + 0.044715 x^3) nor "
                      "(sqrt(2/pi) x) (1 + 0.044715 x^2)")

    @staticmethod
    def _split_cubic(
        add: OnnxOperation, graph: OnnxGraph, where: str
    ) -> tuple[SSAValue, OnnxOperation]:
        for x, term in ((add.operands[0], add.operands[1]), (add.operands[1], add.operands[0])):
            mul = graph.producer(term, "Mul")
            if mul is None or graph.is_const(x):
                continue
            cube, coefficient = graph.split_const(mul, "0.044715 Mul")
            require(
                close(coefficient, GELU_CUBIC_COEFFICIENT, CONSTANT_RTOL),
                f"{where}: cubic coefficient {coefficient!r}, expected {GELU_CUBIC_COEFFICIENT}",
            )
            require(
                _is_cube_of(cube, x, graph), f"{where}: the cubic term is not x^3 of the GELU input"
            )
            graph.require_single_use(term, f"{where}: 0.044715 x^3")
            return x, mul
        raise NoMatch(f"{where}: Tanh argument is not sqrt(2/pi) * (x + 0.044715 * x^3)")


def _is_cube_of(value: SSAValue, x: SSAValue, graph: OnnxGraph) -> bool:
    op = graph.producer(value)
    if op is None or not graph.single_use(value):
        return False
    if op.op_type == "Pow":
        exponent = graph.const(op.operands[1])
        return (
            op.operands[0] is x
            and exponent is not None
            and exponent.size == 1
            and float(exponent.reshape(-1)[0]) == 3.0
        )
    if op.op_type == "Mul":
        a, b = op.operands
        for single, square in ((a, b), (b, a)):
            sq = graph.producer(square, "Mul")
            if (
                single is x
                and sq is not None
                and graph.single_use(square)
                and sq.operands[0] is x
                and sq.operands[1] is x
            ):
                return True
    return False


@register_lift_pattern
class SoftmaxPattern(LiftPattern):
    """Softmax over the last axis (not part of attention) -> transformer.softmax."""

    name = "softmax"
    anchors = ("Softmax",)
    phase = Phase.SOFTMAX

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        shape = shape_of(op.operands[0])
        axis = int(graph.attrs(op).get("axis", -1))
        require(
            axis % len(shape) == len(shape) - 1,
            f"{location_name(op)}: Softmax axis {axis} is not the last axis",
        )
        require(is_f32(op.operands[0]), f"{location_name(op)}: input is not f32")
        return replace_end(op, SoftmaxOp(op.operands[0], op.results[0].type), op)


_TRANSFORMER_PREFIX = "transformer."


def from_transformer_op(value: SSAValue) -> bool:
    return isinstance(value, OpResult) and value.op.name.startswith(_TRANSFORMER_PREFIX)


@register_lift_pattern
class ResidualAddPattern(LiftPattern):
    """Add of same-shape activations, one from a transformer op -> transformer.add."""

    name = "add"
    anchors = ("Add",)
    phase = Phase.RESIDUAL

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        a, b = op.operands
        return (
            not graph.is_const(a)
            and not graph.is_const(b)
            and (from_transformer_op(a) or from_transformer_op(b))
        )

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        a, b = op.operands
        where = location_name(op)
        require(
            shape_of(a) == shape_of(b) == shape_of(op.results[0]),
            f"{where}: shapes {fmt_shape(shape_of(a))} + {fmt_shape(shape_of(b))} broadcast",
        )
        require(is_f32(a) and is_f32(b), f"{where}: operands are not f32")
        return replace_end(op, AddOp(a, b, op.results[0].type), op)
