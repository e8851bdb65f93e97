"""Normalisation layers and softmax.

Convention: computing statistics and normalising costs 5 FLOPs per element (mean, subtract,
square, accumulate, scale by the inverse deviation); an affine transform adds 1 for the weight
(scale) and 1 for the bias (shift), 2 for the usual affine layer.
Inference BatchNorm uses running statistics, so the whole layer folds into one scale and one
shift: 2 FLOPs per element.  RMSNorm needs no mean: 3 FLOPs per element, plus 1 for its weight.
None of these are MACs: MACs count conv- and matmul-like work only.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import Cost, Shape, numel

STATS_FLOPS = 5
FOLDED_FLOPS = 2
RMS_FLOPS = 3
SOFTMAX_FLOPS = 5


def normalisation(x: Shape, *, training: bool, weight: bool, bias: bool) -> Cost:
    if not training:
        return Cost(0, FOLDED_FLOPS * numel(x))
    return Cost(0, (STATS_FLOPS + int(weight) + int(bias)) * numel(x))


@ATEN.rule(
    "_native_batch_norm_legit_no_training",
    unit="norm",
    formula="running statistics folded into scale and shift: FLOPs = 2·numel(x)",
)
def batch_norm_inference(x: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return normalisation(x, training=False, weight=True, bias=True)


@ATEN.rule(
    "native_batch_norm",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_functional",
    "cudnn_batch_norm",
    "miopen_batch_norm",
    unit="norm",
    formula="training: FLOPs = (5 + [weight] + [bias])·numel(x); inference: 2·numel(x)",
)
def batch_norm(x: Shape, weight: Any, bias: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    # The ``training`` flag is the first bool after the optional running-stat tensors.
    training = next((r for r in rest if isinstance(r, bool)), True)
    return normalisation(x, training=training, weight=weight is not None, bias=bias is not None)


@ATEN.rule(
    "native_layer_norm",
    unit="row-norm",
    formula="FLOPs = (5 + [weight] + [bias])·numel(x)",
)
def layer_norm(x: Shape, normalized_shape: Any, weight: Any, bias: Any, *rest: Any,
               out: tuple[Shape, ...]) -> Cost:
    return normalisation(x, training=True, weight=weight is not None, bias=bias is not None)


@ATEN.rule(
    "native_group_norm",
    unit="row-norm",
    formula="FLOPs = (5 + [weight] + [bias])·numel(x)",
)
def group_norm(x: Shape, weight: Any, bias: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return normalisation(x, training=True, weight=weight is not None, bias=bias is not None)


@ATEN.rule(
    "_fused_rms_norm",
    unit="row-norm",
    formula="FLOPs = (3 + 1 if weight)·numel(x)",
)
def rms_norm(x: Shape, normalized_shape: Any, weight: Any = None, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, (RMS_FLOPS + (1 if weight is not None else 0)) * numel(x))


@ATEN.rule(
    "_softmax",
    "_log_softmax",
    unit="transcendental",
    formula="FLOPs = 5·numel(x) (max, subtract, exp, sum, divide)",
)
def softmax(x: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, SOFTMAX_FLOPS * numel(x))


# The masked softmax of SDPA's math path (attention on meta tensors) runs as elementwise: the
# roofline's attention estimates in bench/roofline.py were measured with it there.
ATEN.add(("_safe_softmax",), softmax, unit="elementwise",
         formula="FLOPs = 5·numel(x) (max, subtract, exp, sum, divide)")
