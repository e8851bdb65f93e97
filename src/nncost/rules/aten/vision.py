"""torchvision's own operators (``torchvision::``), met in detection and segmentation models.

RoI pooling reads a data-dependent number of boxes; the rules cost the boxes actually given.
RoIAlign averages ``s × s`` bilinear samples per output bin, 8 FLOPs each (7 for the bilinear
interpolation, 1 for the average); with adaptive sampling (``sampling_ratio <= 0``) the count
depends on each box's size, and nncost counts ``s = 2``.  NMS is counted as its worst case, every
pair of boxes compared once at 12 FLOPs per IoU: an upper bound, since suppressed boxes are
skipped.  Deformable convolution costs a convolution's MACs plus a bilinear sample (7 FLOPs) per
input column it gathers.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.aten.conv import conv_cost, conv_unit
from nncost.rules.registry import ZERO, ByShape, Cost, Shape, numel

BILINEAR_FLOPS = 7
ADAPTIVE_SAMPLES = 2
IOU_FLOPS = 12


@ATEN.rule(
    "torchvision::roi_align",
    "torchvision::ps_roi_align",
    unit="elementwise",
    formula="FLOPs = numel(out)·s²·8, s = sampling_ratio (2 when adaptive)",
)
def roi_align(x: Shape, rois: Shape, spatial_scale: float, pooled_h: int, pooled_w: int, sampling_ratio: int,
              *rest: Any, out: tuple[Shape, ...]) -> Cost:
    samples = sampling_ratio if sampling_ratio > 0 else ADAPTIVE_SAMPLES
    return Cost(0, numel(out[0]) * samples * samples * (BILINEAR_FLOPS + 1))


@ATEN.rule(
    "torchvision::roi_pool",
    "torchvision::ps_roi_pool",
    unit="copy",
    formula="a max over each bin: counted as data movement, 0 FLOPs (bin sizes depend on the boxes)",
)
def roi_pool(*args: Any, out: tuple[Shape, ...]) -> Cost:
    return ZERO


@ATEN.rule(
    "torchvision::nms",
    unit="elementwise",
    formula="upper bound: FLOPs = 12·N·(N−1)/2 for N boxes",
)
def nms(boxes: Shape, scores: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    n = boxes[0]
    return Cost(0, IOU_FLOPS * n * (n - 1) // 2)


def _deform_conv_unit(x: Shape, w: Shape, *rest: Any, out: tuple[Shape, ...]) -> str:
    groups = rest[9] if len(rest) > 9 else 1  # deform_conv2d(input, weight, offset, mask, bias, 6 ints, groups, ...)
    return conv_unit(w, groups)


@ATEN.rule(
    "torchvision::deform_conv2d",
    unit=ByShape(("conv", "depthwise"), _deform_conv_unit),
    formula="MACs as convolution; FLOPs = 2·MACs + 7·N·Ci·∏k·∏out (bilinear sampling) + bias",
)
def deform_conv2d(x: Shape, w: Shape, offset: Shape, mask: Any, bias: Any, *rest: Any,
                  out: tuple[Shape, ...]) -> Cost:
    cost = conv_cost(x, w, out[0], transposed=False, bias=bias is not None)
    columns = x[0] * x[1] * numel(w[2:]) * numel(out[0][2:])
    return Cost(cost.macs, cost.flops + BILINEAR_FLOPS * columns)
