"""Grouped matrix products (``torch._grouped_mm``): one product per group, as mixture-of-experts
layers run their experts.

``aten::_grouped_mm(Tensor self, Tensor mat2, Tensor? offs=None, Tensor? bias=None, ScalarType?
out_dtype=None)`` has four layouts; ``offs`` holds each group's end along the grouped dimension.
The groups split one dimension, so the sum over groups of each group's product is the product
of the whole dimension:

- ``a (M, K)``, ``b (G, K, N)``, groups of rows of ``a``: ``Σ_g m_g·K·N = M·K·N``;
- ``a (G, M, K)``, ``b (K, N)``, groups of columns of ``b``: ``Σ_g M·K·n_g = M·K·N``;
- ``a (M, K)``, ``b (K, N)``, groups along ``K``, output ``(G, M, N)``: ``Σ_g M·k_g·N = M·K·N``;
- ``a (G, M, K)``, ``b (G, K, N)``, no ``offs``: ``G·M·K·N``.

The rule sees shapes, not the offsets, so it counts every row of the grouped dimension as in
some group (``offs[-1]`` equal to its size), as a mixture-of-experts layer arranges its tokens.

With one 2D and one 3D operand, each row (or column) of the 2D one is multiplied by one slice of
the 3D one, the expert it was routed to: the rule's ``routed`` function names that operand, the
rows and the slices, from which the analyses derive the parameters one token uses
(``active_params``, [conventions.md](conventions.md#mixtures-of-experts)).
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.aten import linear as _linear  # noqa: F401  (registered first: it introduces matmul in the docs)
from nncost.rules.registry import Cost, Shape


def routed(a: Shape, b: Shape, offs: Any = None, *rest: Any) -> tuple[int, int, int] | None:
    """(position of the sliced operand, rows routed through it, its slices): ``a (M, K) @ b (G, K, N)``
    routes M rows through G slices of b; ``a (G, M, K) @ b (K, N)`` routes N columns of b through
    G slices of a.  Groups along K (a weight gradient) and 3D @ 3D route nothing."""
    if len(a) == 2 and len(b) == 3:
        return 1, a[0], b[0]
    if len(a) == 3 and len(b) == 2:
        return 0, b[1], a[0]
    return None


def _plug(a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> str | None:
    """The experts' case, 2D rows @ 3D groups, with the call's sizes (None for the others)."""
    if len(a) != 2 or len(b) != 3:
        return None
    return (f"MACs = Σ_g m_g·k·n = M·K·N = {a[0]}·{a[1]}·{b[2]} (each of the M rows in one of {b[0]} groups);"
            " FLOPs = 2·MACs")


@ATEN.rule(
    "_grouped_mm",
    routed=routed,
    plug=_plug,
    unit="matmul",
    formula="one (m_g,k)@(k,n) per group g: MACs = Σ_g m_g·k·n (a 2D (M,K) @ 3D (G,K,N): M·K·N; "
    "3D @ 3D: G·M·K·N; groups along k or n alike); FLOPs = 2·MACs (+ one add per output with bias)",
)
def grouped_mm(a: Shape, b: Shape, offs: Any = None, bias: Any = None, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    if len(a) == 2 and len(b) == 3:  # groups of rows of a, one matrix of b each
        macs, outputs = a[0] * a[1] * b[2], a[0] * b[2]
    elif len(a) == 3 and len(b) == 2:  # groups of columns of b, one matrix of a each
        macs, outputs = a[1] * a[2] * b[1], a[1] * b[1]
    elif len(a) == 2:  # groups along K: output (G, M, N), each group one slice of the K sum
        groups = offs[0] if isinstance(offs, tuple) and offs else 1
        macs, outputs = a[0] * a[1] * b[1], groups * a[0] * b[1]
    else:  # (G, M, K) @ (G, K, N)
        macs, outputs = a[0] * a[1] * a[2] * b[2], a[0] * a[1] * b[2]
    return Cost(macs, 2 * macs + (outputs if bias is not None else 0))
