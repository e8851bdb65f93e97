"""ONNX elementwise operators and reductions, with the ATen rules' conventions.

One FLOP per output element per elementwise operator, transcendentals and activations
(``Sigmoid``, ``Erf``, ``Gelu``, ``HardSwish``...) included; comparisons and logic too.  ONNX
Runtime's fused ``BiasGelu``, ``FastGelu`` with a bias and ``BiasAdd`` count the bias add as one
more FLOP per element.  Reductions cost one FLOP per *input* element; ``ReduceSumSquare``,
``ReduceL2`` and ``ReduceLogSumExp`` two.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.onnx import ONNX
from nncost.rules.registry import Cost, Shape, numel

Inputs = tuple[Shape | None, ...]

ELEMENTWISE = (
    # arithmetic
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Neg", "Abs", "Reciprocal", "Sqrt", "Exp", "Log",
    "Floor", "Ceil", "Round", "Sign", "Min", "Max", "Mean", "Sum", "Clip", "Where", "Erf",
    "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
    "IsNaN", "IsInf", "BitShift",
    # activations
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Tanh", "Softplus", "Softsign", "Gelu", "Mish", "Swish", "Shrink",
    # comparisons and logic
    "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot",
)
BIASED = ("com.microsoft::BiasGelu", "com.microsoft::BiasAdd")
REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceLogSum",
              "ArgMax", "ArgMin", "CumSum")
SQUARING_REDUCTIONS = ("ReduceSumSquare", "ReduceL2", "ReduceLogSumExp")


def _first(shapes: tuple[Shape | None, ...]) -> Shape:
    for shape in shapes:
        if shape is not None:
            return shape
    raise ValueError("no tensor shape")


@ONNX.rule(*ELEMENTWISE, family="onnx elementwise", formula="FLOPs = numel(out), one per result")
def elementwise(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, numel(out[0]))


@ONNX.rule("com.microsoft::Gelu", "com.microsoft::QuickGelu", "com.microsoft::FastGelu", family="onnx elementwise",
           formula="FLOPs = numel(x), 2·numel(x) with a bias input (FastGelu)")
def fused_gelu(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    biased = len(inputs) > 1 and inputs[1] is not None
    return Cost(0, (2 if biased else 1) * numel(_first(inputs)))


@ONNX.rule(*BIASED, family="onnx elementwise", formula="FLOPs = 2·numel(x) (bias add and the function)")
def biased(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, 2 * numel(_first(inputs)))


@ONNX.rule(*REDUCTIONS, family="onnx reduction", formula="FLOPs = numel(input)")
def reduction(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, numel(_first(inputs)))


@ONNX.rule(*SQUARING_REDUCTIONS, family="onnx reduction", formula="FLOPs = 2·numel(input) (square or exp, then sum)")
def squaring_reduction(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, 2 * numel(_first(inputs)))
