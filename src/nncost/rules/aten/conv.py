"""Convolutions, direct and transposed, in any number of spatial dimensions."""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import ByShape, Cost, Shape, numel


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


def conv_unit(w: Shape, groups: Any) -> str:
    """``depthwise`` for a grouped convolution whose weight has one channel per group, else ``conv``."""
    return "depthwise" if len(w) > 1 and w[1] == 1 and isinstance(groups, int) and groups > 1 else "conv"


def _groups_at(position: int) -> ByShape:
    """The conv/depthwise unit of an operator that takes ``groups`` at ``position``."""

    def pick(x: Shape, w: Shape, *rest: Any, out: tuple[Shape, ...]) -> str:
        groups = rest[position - 2] if len(rest) > position - 2 else 1
        return conv_unit(w, groups)

    return ByShape(("conv", "depthwise"), pick)


def _plug_convolution(x: Shape, w: Shape, bias: Any, stride: Any, padding: Any, dilation: Any, transposed: bool,
                      output_padding: Any, groups: Any, *rest: Any, out: tuple[Shape, ...]) -> str:
    """The formula with the call's sizes, for ``explain``."""
    if transposed:
        return (f"MACs = N·Cin·∏in·(Co/g)·∏K = {x[0]}·{x[1]}·{'·'.join(map(str, x[2:]))}"
                f"·{w[1]}·{'·'.join(map(str, w[2:]))}")
    o = out[0]
    return (f"MACs = N·H·W·M·(C/g)·K·K = {o[0]}·{'·'.join(map(str, o[2:]))}·{o[1]}·({x[1]}/{groups})·"
            f"{'·'.join(map(str, w[2:]))}; FLOPs = 2·MACs" + (" + N·M·H·W (bias)" if bias is not None else ""))


@ATEN.rule(
    "convolution",
    "_convolution",
    unit=_groups_at(8),
    plug=_plug_convolution,
    formula="MACs = N·Co·∏out·(Ci/g)·∏k (transposed: N·Ci·∏in·(Co/g)·∏k); FLOPs = 2·MACs + N·Co·∏out if bias",
)
def convolution(x: Shape, w: Shape, bias: Any, stride: Any, padding: Any, dilation: Any,
                transposed: bool, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return conv_cost(x, w, out[0], transposed=bool(transposed), bias=bias is not None)


@ATEN.rule("cudnn_convolution", unit=_groups_at(5), formula="as convolution; cuDNN's op takes no bias")
def cudnn_convolution(x: Shape, w: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return conv_cost(x, w, out[0], transposed=False, bias=False)


@ATEN.rule("mkldnn_convolution", unit=_groups_at(6), formula="as convolution")
def mkldnn_convolution(x: Shape, w: Shape, bias: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return conv_cost(x, w, out[0], transposed=False, bias=bias is not None)


@ATEN.rule("cudnn_convolution_transpose", unit=_groups_at(6), formula="as transposed convolution; no bias")
def cudnn_convolution_transpose(x: Shape, w: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return conv_cost(x, w, out[0], transposed=True, bias=False)
