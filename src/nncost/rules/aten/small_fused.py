"""Small fused operators met in transformers models: weight normalisation, bool reductions,
membership tests and complex numbers from polar form.

Each is costed as the sum of the elementwise and reduction operators it fuses, under the
conventions of those families: one FLOP per elementwise result, one per reduced input element,
and none of it MACs.

* ``_weight_norm_interface`` (``nn.utils.parametrizations.weight_norm``: wav2vec2, HuBERT,
  EnCodec...) computes ``w = g · v / ‖v‖``, the norm taken over every dimension but ``dim``.
  The norm is a reduction over ``v``, the ratio ``g / ‖v‖`` one FLOP per norm, and the scale one
  FLOP per element of ``v``: ``2·numel(v) + numel(g)``.  PyTorch's composite path for other
  dimensions, ``v * (g / norm_except_dim(v))``, costs the same under these rules.
* ``isin`` counts one comparison per (element, test element) pair, dense, as the brute-force
  kernel does.  For large test sets the CPU kernel sorts instead (NumPy's heuristic) and does
  fewer comparisons; like dense attention, the count does not depend on the kernel chosen.
* ``polar`` builds ``abs·cos(angle) + i·abs·sin(angle)``: a cosine, a sine and two products.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import Cost, Shape, first_shape, is_shape, numel

POLAR_FLOPS = 4  # cos, sin, two products


@ATEN.rule(
    "_weight_norm_interface",
    unit="reduction",
    formula="w = g·v/‖v‖, norm over all dims but `dim`: FLOPs = numel(v) (the norm) + numel(g) (g/‖v‖) "
    "+ numel(v) (the scale)",
)
def weight_norm_interface(v: Shape, g: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, 2 * numel(v) + numel(g))


@ATEN.rule(
    "_is_all_true",
    "_is_any_true",
    unit="reduction",
    formula="FLOPs = numel(input) (a reduction over a bool tensor)",
)
def is_all_true(x: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, numel(x))


def _count(value: Any) -> int:
    """Elements of a tensor argument; a Python scalar is one element."""
    return numel(value) if is_shape(value) else 1


@ATEN.rule(
    "isin",
    unit="elementwise",
    formula="FLOPs = numel(elements)·numel(test_elements), one comparison per pair (a scalar is one element)",
)
def isin(elements: Any, test_elements: Any, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, _count(elements) * _count(test_elements))


@ATEN.rule(
    "polar",
    unit="transcendental",
    formula="abs·cos(angle) + i·abs·sin(angle): FLOPs = 4·numel(out)",
)
def polar(magnitude: Shape, angle: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return Cost(0, POLAR_FLOPS * numel(first_shape(out)))
