"""Linear algebra beyond matrix products: triangular solves and pairwise distances.

A triangular solve of an n×n system with k right-hand sides is counted as LAPACK counts
``trsm`` (LAWN 41): per right-hand side, ``n(n−1)/2`` multiply-accumulates of the substitution
and ``n`` divisions by the diagonal (none when the diagonal is unit), so ``k·n²`` FLOPs, about
``n²·k/2`` MACs; batched solves multiply by the batch.

Pairwise Euclidean distances (``torch.cdist``) run one of two kernels, chosen by PyTorch from the
sizes and ``compute_mode``, and each is counted as computed.  ``_euclidean_dist`` is the matmul
form: it appends the squared norms to both operands and takes one product of width ``M + 2``,
``‖x‖² − 2·x·y + ‖y‖²``, then clamps and takes the square root.  ``_cdist_forward`` is the direct
form: per pair and feature a difference, its power and an accumulation, then one root per pair;
it holds no MACs, as an elementwise loop.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import Cost, Shape, first_shape, numel

CDIST_FLOPS_PER_FEATURE = 3  # difference, power, accumulate


def triangular_solve_cost(batch: int, n: int, rhs: int, unitriangular: bool) -> Cost:
    macs = batch * rhs * n * (n - 1) // 2
    divisions = 0 if unitriangular else batch * rhs * n
    return Cost(macs, 2 * macs + divisions)


@ATEN.rule(
    "linalg_solve_triangular",
    unit="matmul",
    formula="A (*,n,n), k right-hand sides, batch b: MACs = b·k·n(n−1)/2; FLOPs = 2·MACs + b·k·n "
    "(divisions, none if unitriangular) = b·k·n²",
)
def linalg_solve_triangular(a: Shape, b: Shape, upper: bool = True, left: bool = True,
                            unitriangular: bool = False, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    solution = first_shape(out)
    rhs = solution[-1] if left else solution[-2]
    return triangular_solve_cost(numel(solution[:-2]), a[-1], rhs, bool(unitriangular))


@ATEN.rule(
    "triangular_solve",
    unit="matmul",
    formula="B (*,n,k), A (*,n,n): as linalg_solve_triangular",
)
def triangular_solve(b: Shape, a: Shape, upper: bool = True, transpose: bool = False,
                     unitriangular: bool = False, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    solution = first_shape(out)
    return triangular_solve_cost(numel(solution[:-2]), a[-1], solution[-1], bool(unitriangular))


@ATEN.rule(
    "_euclidean_dist",
    unit="matmul",
    formula="x1 (*,P,M), x2 (*,R,M), batch b: MACs = b·P·R·(M+2); FLOPs = 2·MACs + 3·b·P·M "
    "(square, sum, ×−2) + 2·b·R·M (square, sum) + 2·b·P·R (clamp, sqrt)",
)
def euclidean_dist(x1: Shape, x2: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    distances = first_shape(out)
    batch, p, r, m = numel(distances[:-2]), distances[-2], distances[-1], x1[-1]
    macs = batch * p * r * (m + 2)
    return Cost(macs, 2 * macs + 3 * batch * p * m + 2 * batch * r * m + 2 * batch * p * r)


@ATEN.rule(
    "_cdist_forward",
    unit="elementwise",
    formula="x1 (*,P,M), x2 (*,R,M), batch b: FLOPs = b·P·R·(3·M + 1) (difference, power, accumulate; root)",
)
def cdist_forward(x1: Shape, x2: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    distances = first_shape(out)
    pairs = numel(distances)
    return Cost(0, pairs * (CDIST_FLOPS_PER_FEATURE * x1[-1] + 1))
