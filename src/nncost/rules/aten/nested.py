"""Conversions between nested tensors and dense ones: copies, without arithmetic.

PyTorch's attention on a jagged nested tensor (the math path) copies each sequence into a
strided nested tensor, and a padded batch is built from one; an operator on the strided nested
tensor itself is costed by the tracer component by component, with the dense rules.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import ZERO, Cost

CONVERSIONS = (
    "_nested_tensor_from_tensor_list", "to_padded_tensor", "_nested_from_padded",
    "_nested_from_padded_and_nested_example", "_nested_tensor_from_mask",
)


def _no_arithmetic(*args: Any, out: Any) -> Cost:
    return ZERO


ATEN.add(CONVERSIONS, _no_arithmetic, unit="copy", formula="0 FLOPs; bytes read and written are counted")
