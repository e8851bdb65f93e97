"""ONNX matrix products: ``Gemm``, ``MatMul`` (numpy broadcasting), ``Einsum``.

A product of ``(M, K)`` by ``(K, N)`` costs ``M·K·N`` MACs.  ``Gemm``'s ``C`` adds one FLOP per
output element, and so does each of its ``alpha`` and ``beta`` scalings when it is not 1.
``Einsum`` with a summed (contracted) index is a product over every index of the equation:
``MACs = ∏ sizes of all indices``; without one it is elementwise (one FLOP per output element),
and a single operand that only permutes costs nothing.
"""

from __future__ import annotations

import math
from typing import Any

from nncost.rules.onnx import ONNX
from nncost.rules.registry import ByShape, Cost, Shape, numel

Inputs = tuple[Shape | None, ...]


@ONNX.rule("Gemm", unit="matmul",
           formula="A (M,K), B (K,N) after transA/transB: MACs = M·K·N; FLOPs = 2·MACs + M·N if C "
                   "(+ M·N for alpha ≠ 1, + M·N for beta ≠ 1 with C)")
def gemm(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    a = inputs[0]
    assert a is not None
    k = a[0] if attrs.get("transA", 0) else a[1]
    m, n = out[0]
    macs = m * k * n
    has_c = len(inputs) > 2 and inputs[2] is not None
    extra = m * n * (int(has_c) + int(attrs.get("alpha", 1.0) != 1.0)
                     + int(has_c and attrs.get("beta", 1.0) != 1.0))
    return Cost(macs, 2 * macs + extra)


@ONNX.rule("MatMul", "com.microsoft::FusedMatMul", unit="matmul",
           formula="(…,M,K) @ (…,K,N), broadcast: MACs = numel(out)·K; FLOPs = 2·MACs")
def matmul(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    a = inputs[0]
    assert a is not None
    k = a[-2] if attrs.get("transA", 0) and len(a) >= 2 else a[-1]
    macs = numel(out[0]) * k
    return Cost(macs, 2 * macs)


def einsum_sizes(equation: str, shapes: list[Shape]) -> tuple[dict[str, int], list[str], list[list[str]]]:
    """Sizes of every index, the output's indices and each operand's, ellipses expanded."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum {equation!r} names {len(terms)} operands, got {len(shapes)}")
    sizes: dict[str, int] = {}
    operands: list[list[str]] = []
    ellipsis_rank = 0
    for term, shape in zip(terms, shapes, strict=True):
        named = term.replace("...", "")
        rank = len(shape) - len(named) if "..." in term else 0
        ellipsis_rank = max(ellipsis_rank, rank)
        before, _, after = term.partition("...")
        labels = list(before) + [f"…{rank - i}" for i in range(rank)] + list(after) if "..." in term else list(term)
        if len(labels) != len(shape):
            raise ValueError(f"einsum term {term!r} does not match shape {shape}")
        for label, size in zip(labels, shape, strict=True):
            sizes[label] = max(sizes.get(label, 1), size)  # broadcast dims of size 1
        operands.append(labels)
    ellipsis = [f"…{ellipsis_rank - i}" for i in range(ellipsis_rank)]
    if arrow:
        before, _, after = rhs.partition("...")
        output = list(before) + (ellipsis if "..." in rhs else []) + list(after)
    else:
        counts = [label for labels in operands for label in labels if not label.startswith("…")]
        output = ellipsis + sorted(label for label in set(counts) if counts.count(label) == 1)
    return sizes, output, operands


def einsum_unit(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> str:
    """As the cost: a product (matmul), a reduction of one operand, an elementwise product, a permutation (copy)."""
    shapes = [s for s in inputs if s is not None]
    sizes, output, operands = einsum_sizes(str(attrs["equation"]), shapes)
    if set(sizes) - set(output):
        return "reduction" if len(operands) == 1 else "matmul"
    return "copy" if len(operands) == 1 else "elementwise"


@ONNX.rule("Einsum", unit=ByShape(("matmul", "reduction", "elementwise", "copy"), einsum_unit),
           formula="with a summed index: MACs = ∏ sizes of all indices, FLOPs = 2·MACs; "
                   "without: FLOPs = numel(out) (a permutation of one operand: 0)")
def einsum(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    shapes = [s for s in inputs if s is not None]
    sizes, output, operands = einsum_sizes(str(attrs["equation"]), shapes)
    summed = set(sizes) - set(output)
    if summed:
        if len(operands) == 1:  # a reduction of one operand (a trace, a sum): one FLOP per element read
            return Cost(0, numel(shapes[0]))
        macs = math.prod(sizes.values())
        return Cost(macs, 2 * macs)
    if len(operands) == 1:
        return Cost(0, 0)
    return Cost(0, numel(out[0]))
