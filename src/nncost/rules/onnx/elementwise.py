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
    "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Reciprocal",
    "Floor", "Ceil", "Round", "Sign", "Min", "Max", "Mean", "Sum", "Clip", "Where",
    "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
    "IsNaN", "IsInf", "BitShift",
    # activations
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "HardSigmoid",
    "HardSwish", "Softsign", "Shrink",
    # comparisons and logic
    "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot",
)
# The ATen rules' transcendental unit: functions whose one counted FLOP hides a series.
TRANSCENDENTAL = ("Pow", "Sqrt", "Exp", "Log", "Erf", "Sin", "Cos", "Sigmoid", "Tanh", "Softplus", "Gelu", "Mish",
                  "Swish")
REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceLogSum",
              "ArgMax", "ArgMin", "CumSum")
SQUARING_REDUCTIONS = ("ReduceSumSquare", "ReduceL2", "ReduceLogSumExp")


def _first(shapes: tuple[Shape | None, ...]) -> Shape:
    for shape in shapes:
        if shape is not None:
            return shape
    raise ValueError("no tensor shape")


@ONNX.rule(*ELEMENTWISE, unit="elementwise", formula="FLOPs = numel(out), one per result")
def elementwise(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, numel(out[0]))


ONNX.add(TRANSCENDENTAL, elementwise, unit="transcendental",
         formula="FLOPs = numel(out), one per result: the function's series counts as one")


@ONNX.rule("com.microsoft::Gelu", "com.microsoft::QuickGelu", "com.microsoft::FastGelu", unit="transcendental",
           formula="FLOPs = numel(x), 2·numel(x) with a bias input (FastGelu)")
def fused_gelu(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    biased = len(inputs) > 1 and inputs[1] is not None
    return Cost(0, (2 if biased else 1) * numel(_first(inputs)))


@ONNX.rule("com.microsoft::BiasGelu", unit="transcendental",
           formula="FLOPs = 2·numel(x) (bias add and the function)")
def biased(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, 2 * numel(_first(inputs)))


ONNX.add(("com.microsoft::BiasAdd",), biased, unit="elementwise",
         formula="FLOPs = 2·numel(x) (the bias and the skip added)")


@ONNX.rule(*REDUCTIONS, unit="reduction", formula="FLOPs = numel(input)")
def reduction(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, numel(_first(inputs)))


@ONNX.rule(*SQUARING_REDUCTIONS, unit="reduction", formula="FLOPs = 2·numel(input) (square or exp, then sum)")
def squaring_reduction(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, 2 * numel(_first(inputs)))
