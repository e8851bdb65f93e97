"""Elementwise operators and reductions.

Convention: one FLOP per output element per elementwise operator, transcendental functions
(exp, tanh, GELU, SiLU...) included, so that counts compare across activations and backends.
Fused multiply-add style ops (``addcmul``, ``addcdiv``, ``lerp``) count 2.  In-place variants
(``relu_``) cost the same as their out-of-place forms.  Reductions cost one FLOP per *input*
element (variance and standard deviation 3: subtract, square, accumulate).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import Cost, Shape, first_shape, numel

UNARY_AND_BINARY = (
    # arithmetic
    "add", "sub", "rsub", "mul", "div", "neg", "abs", "reciprocal", "remainder", "fmod",
    "pow", "sqrt", "rsqrt", "square", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p",
    "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "erf", "erfc", "erfinv",
    "floor", "ceil", "round", "trunc", "frac", "sign", "sgn", "floor_divide", "xlogy",
    "maximum", "minimum", "fmax", "fmin", "clamp", "clamp_min", "clamp_max", "clip",
    "where", "masked_fill", "nan_to_num", "hypot", "copysign", "logit",
    # activations
    "relu", "relu6", "threshold", "hardtanh", "leaky_relu", "rrelu_with_noise", "prelu",
    "_prelu_kernel", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid", "tanh",
    "hardsigmoid", "hardswish", "hardshrink", "softshrink", "softplus", "log_sigmoid_forward",
    "glu", "logaddexp",
    # comparisons and logic
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "logical_xor",
    "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "isnan", "isinf", "isfinite",
    "native_dropout",
)
# Functions whose one counted FLOP per element hides a polynomial or a series: the transcendental unit.
TRANSCENDENTAL = ("gelu", "tanh", "erf", "exp", "sigmoid", "silu", "mish", "softplus", "log", "pow", "rsqrt", "sqrt",
                  "sin", "cos")
FUSED_TWO = ("addcmul", "addcdiv", "lerp")
REDUCTIONS = (
    "sum", "mean", "prod", "amax", "amin", "max", "min", "argmax", "argmin", "cumsum", "linalg_vector_norm",
    "norm", "logsumexp",
)
# Reductions that run as elementwise: the reduction unit's rate is measured on a mean over a
# feature map (nncost.hardware.calibrate), and these have not been timed against it.
ELEMENTWISE_REDUCTIONS = (
    "nansum", "nanmean", "aminmax", "any", "all", "count_nonzero", "cumprod", "cummax", "cummin", "logcumsumexp",
    "median", "nanmedian",
)
VARIANCE = ("var", "std", "var_mean", "std_mean")


def with_inplace(names: Iterable[str]) -> list[str]:
    """Each name and its in-place variant (``relu`` and ``relu_``)."""
    return [variant for name in names for variant in (name, name + "_")]


def per_output(flops_per_element: int) -> Any:
    def rule(*args: Any, out: tuple[Shape, ...], **kwargs: Any) -> Cost:
        return Cost(0, flops_per_element * numel(first_shape(out)))

    return rule


def per_input(flops_per_element: int) -> Any:
    def rule(x: Any, *args: Any, out: tuple[Shape, ...], **kwargs: Any) -> Cost:
        return Cost(0, flops_per_element * numel(first_shape(x)))

    return rule


ATEN.add(with_inplace(name for name in UNARY_AND_BINARY if name not in TRANSCENDENTAL), per_output(1),
         unit="elementwise", formula="FLOPs = numel(out), one per result")
ATEN.add(with_inplace(TRANSCENDENTAL), per_output(1), unit="transcendental",
         formula="FLOPs = numel(out), one per result: the function's series counts as one")
ATEN.add(with_inplace(FUSED_TWO), per_output(2), unit="elementwise",
         formula="FLOPs = 2·numel(out) (a multiply and an add per result)")
ATEN.add(REDUCTIONS, per_input(1), unit="reduction", formula="FLOPs = numel(input)")
ATEN.add(ELEMENTWISE_REDUCTIONS, per_input(1), unit="elementwise", formula="FLOPs = numel(input)")
ATEN.add(VARIANCE, per_input(3), unit="reduction",
         formula="FLOPs = 3·numel(input) (subtract mean, square, accumulate)")
