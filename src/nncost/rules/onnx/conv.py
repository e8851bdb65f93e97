"""ONNX convolutions: ``Conv`` (weight ``(Co, Ci/g, *k)``) and ``ConvTranspose`` (``(Ci, Co/g, *k)``).

The same closed forms as ``aten.convolution``: a direct convolution costs ``Ci/g·∏k`` MACs per
output element, a transposed one scatters every input element through ``Co/g·∏k`` weights; a
bias adds one FLOP per output element.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten.conv import conv_cost, conv_unit
from nncost.rules.onnx import ONNX
from nncost.rules.registry import ByShape, Cost, Shape

Inputs = tuple[Shape | None, ...]


def _has(inputs: Inputs, position: int) -> bool:
    return len(inputs) > position and inputs[position] is not None


def _unit(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> str:
    w = inputs[1]
    return conv_unit(w, int(attrs.get("group", 1))) if w is not None else "conv"


UNIT = ByShape(("conv", "depthwise"), _unit)


@ONNX.rule("Conv", "com.microsoft::FusedConv", "com.microsoft::NhwcConv", unit=UNIT,
           formula="MACs = N·Co·∏out·(Ci/g)·∏k; FLOPs = 2·MACs + N·Co·∏out if B")
def conv(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    x, w = inputs[0], inputs[1]
    assert x is not None and w is not None
    return conv_cost(x, w, out[0], transposed=False, bias=_has(inputs, 2))


@ONNX.rule("ConvTranspose", unit=UNIT,
           formula="MACs = N·Ci·∏in·(Co/g)·∏k; FLOPs = 2·MACs + N·Co·∏out if B")
def conv_transpose(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    x, w = inputs[0], inputs[1]
    assert x is not None and w is not None
    return conv_cost(x, w, out[0], transposed=True, bias=_has(inputs, 2))
