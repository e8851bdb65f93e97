"""ONNX normalisation and softmax, with the ATen rules' conventions.

Statistics and normalising cost 5 FLOPs per element, +1 for a scale and +1 for a bias.
``BatchNormalization`` in inference (``training_mode=0``, the default) folds into one scale and
one shift: 2 FLOPs per element.  RMS normalisation needs no mean: 3 FLOPs per element, +1 for its
scale.  ONNX Runtime's fused ``Skip*`` variants add the residual (and an optional bias) first:
one FLOP per element each.  Softmax costs 5 FLOPs per element.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten.norm import FOLDED_FLOPS, RMS_FLOPS, SOFTMAX_FLOPS, STATS_FLOPS
from nncost.rules.onnx import ONNX
from nncost.rules.registry import Cost, Shape, numel

Inputs = tuple[Shape | None, ...]


def _has(inputs: Inputs, position: int) -> bool:
    return len(inputs) > position and inputs[position] is not None


def _x(inputs: Inputs) -> Shape:
    x = inputs[0]
    assert x is not None
    return x


@ONNX.rule("BatchNormalization", unit="norm",
           formula="inference: FLOPs = 2·numel(x); training_mode=1: 7·numel(x)")
def batch_norm(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    per_element = STATS_FLOPS + 2 if attrs.get("training_mode", 0) else FOLDED_FLOPS
    return Cost(0, per_element * numel(_x(inputs)))


@ONNX.rule("LayerNormalization", "GroupNormalization", "com.microsoft::LayerNormalization", unit="row-norm",
           formula="FLOPs = (5 + [scale] + [bias])·numel(x)")
def normalisation(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, (STATS_FLOPS + int(_has(inputs, 1)) + int(_has(inputs, 2))) * numel(_x(inputs)))


ONNX.add(("InstanceNormalization",), normalisation, unit="norm", formula="FLOPs = (5 + [scale] + [bias])·numel(x)")


@ONNX.rule("RMSNormalization", "com.microsoft::SimplifiedLayerNormalization", unit="row-norm",
           formula="FLOPs = (3 + [scale])·numel(x)")
def rms_normalisation(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, (RMS_FLOPS + int(_has(inputs, 1))) * numel(_x(inputs)))


@ONNX.rule("com.microsoft::SkipLayerNormalization", unit="row-norm",
           formula="input, skip, gamma, [beta], [bias]: FLOPs = (1 + [bias] + 5 + 1 + [beta])·numel(x)")
def skip_layer_norm(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    per_element = 1 + int(_has(inputs, 4)) + STATS_FLOPS + int(_has(inputs, 2)) + int(_has(inputs, 3))
    return Cost(0, per_element * numel(_x(inputs)))


@ONNX.rule("com.microsoft::SkipSimplifiedLayerNormalization", unit="row-norm",
           formula="input, skip, gamma, [bias]: FLOPs = (1 + [bias] + 3 + 1)·numel(x)")
def skip_rms_norm(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    per_element = 1 + int(_has(inputs, 3)) + RMS_FLOPS + int(_has(inputs, 2))
    return Cost(0, per_element * numel(_x(inputs)))


@ONNX.rule("Softmax", "LogSoftmax", unit="transcendental",
           formula="FLOPs = 5·numel(x) (max, subtract, exp, sum, divide)")
def softmax(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, SOFTMAX_FLOPS * numel(_x(inputs)))


ONNX.add(("Hardmax",), softmax, unit="reduction", formula="FLOPs = 5·numel(x), as Softmax")
