"""ONNX pooling and resizing.

Pooling costs one FLOP per window element per output (``MaxPool``, ``AveragePool``, ``LpPool``);
a global pool's window is the whole spatial extent, so it costs one FLOP per input element.
``Resize`` (and the old ``Upsample``) in ``nearest`` mode is a copy: 0 FLOPs.  ``linear`` mode
over ``d`` dimensions reads ``2^d`` taps and costs ``2·2^d − 1`` FLOPs per output; ``cubic``
reads ``4^d``.  ``d`` is the number of spatial dimensions (all but N and C) when N and C keep
their size, as ``F.interpolate`` exports it; otherwise the number of dimensions that change.
"""

from __future__ import annotations

import math
from typing import Any

from nncost.rules.onnx import ONNX
from nncost.rules.registry import ZERO, ByShape, Cost, Shape, numel

Inputs = tuple[Shape | None, ...]


@ONNX.rule("MaxPool", unit="pooling", formula="FLOPs = numel(out)·∏kernel_shape")
def pool(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, numel(out[0]) * math.prod(int(k) for k in attrs["kernel_shape"]))


# Average and Lp pooling sum shifted inputs: elementwise, as ATen's avg_pool2d.
ONNX.add(("AveragePool", "LpPool"), pool, unit="elementwise", formula="FLOPs = numel(out)·∏kernel_shape")


@ONNX.rule("GlobalAveragePool", "GlobalLpPool", unit="reduction",
           formula="FLOPs = numel(x) (the window is the whole spatial extent)")
def global_pool(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    x = inputs[0]
    assert x is not None
    return Cost(0, numel(x))


# PyTorch runs a global average pool as a mean (a reduction) and a global max pool as adaptive max pooling.
ONNX.add(("GlobalMaxPool",), global_pool, unit="pooling",
         formula="FLOPs = numel(x) (the window is the whole spatial extent)")


def interpolated_dims(x: Shape, y: Shape) -> int:
    if len(x) >= 3 and x[:2] == y[:2]:
        return len(x) - 2
    return sum(1 for a, b in zip(x, y, strict=True) if a != b)


TAPS = {"linear": 2, "cubic": 4}


def resize_unit(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> str:
    """Nearest (or no change): a copy, as aten.upsample_nearest; linear and cubic: elementwise."""
    x = inputs[0]
    interpolates = str(attrs.get("mode", "nearest")) in TAPS and x is not None and interpolated_dims(x, out[0]) > 0
    return "elementwise" if interpolates else "copy"


@ONNX.rule("Resize", "Upsample", unit=ByShape(("elementwise", "copy"), resize_unit),
           formula="nearest: 0; linear over d dims: FLOPs = numel(out)·(2·2^d − 1); cubic: numel(out)·(2·4^d − 1)")
def resize(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    mode = str(attrs.get("mode", "nearest"))
    x = inputs[0]
    assert x is not None
    if mode not in TAPS:
        return ZERO
    d = interpolated_dims(x, out[0])
    if d == 0:
        return ZERO
    return Cost(0, numel(out[0]) * (2 * TAPS[mode] ** d - 1))
