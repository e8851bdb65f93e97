"""Convolutions, direct and transposed, in any number of spatial dimensions."""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import Cost, Shape, numel


def conv_cost(x: Shape, w: Shape, out: Shape, *, transposed: bool, bias: bool) -> Cost:
    """MACs of a convolution from its input, weight and output shapes.

    A direct convolution's weight is ``(Co, Ci/groups, *k)``: every output element takes
    ``Ci/groups * prod(k)`` multiply-accumulates.  A transposed convolution's weight is
    ``(Ci, Co/groups, *k)``: every *input* element is scattered through ``Co/groups * prod(k)``
    weights.  Padding is counted as the kernel computes it (zeros are multiplied too).
    """
    per_element = numel(w[1:])
    macs = numel(x) * per_element if transposed else numel(out) * per_element
    return Cost(macs, 2 * macs + (numel(out) if bias else 0))


@ATEN.rule(
    "convolution",
    "_convolution",
    family="convolution",
    formula="MACs = N·Co·∏out·(Ci/g)·∏k (transposed: N·Ci·∏in·(Co/g)·∏k); FLOPs = 2·MACs + N·Co·∏out if bias",
)
def convolution(x: Shape, w: Shape, bias: Any, stride: Any, padding: Any, dilation: Any,
                transposed: bool, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return conv_cost(x, w, out[0], transposed=bool(transposed), bias=bias is not None)


@ATEN.rule("cudnn_convolution", family="convolution", formula="as convolution; cuDNN's op takes no bias")
def cudnn_convolution(x: Shape, w: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return conv_cost(x, w, out[0], transposed=False, bias=False)


@ATEN.rule("mkldnn_convolution", family="convolution", formula="as convolution")
def mkldnn_convolution(x: Shape, w: Shape, bias: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return conv_cost(x, w, out[0], transposed=False, bias=bias is not None)


@ATEN.rule("cudnn_convolution_transpose", family="convolution", formula="as transposed convolution; no bias")
def cudnn_convolution_transpose(x: Shape, w: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return conv_cost(x, w, out[0], transposed=True, bias=False)
