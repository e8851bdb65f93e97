"""Inverse hyperbolic and special functions: one FLOP per result, as every transcendental.

``asinh`` is met in transformers (Moonshine's streaming encoder compresses its features with
it); ``acosh``, ``atanh``, ``sinc``, ``lgamma``, ``digamma`` and ``i0`` are its kin among PyTorch's
unary functions.  Like ``exp`` or ``tanh`` in ``elementwise.py``, each costs one FLOP per output
element, the series or polynomial behind it counted as one, and runs as the transcendental unit.
In-place variants cost the same.
"""

from __future__ import annotations

from nncost.rules.aten import ATEN
from nncost.rules.aten.elementwise import per_output, with_inplace

SPECIAL = ("asinh", "acosh", "atanh", "sinc", "lgamma", "digamma", "i0")

ATEN.add(with_inplace(SPECIAL), per_output(1), unit="transcendental",
         formula="FLOPs = numel(out), one per result: the function's series counts as one")
