"""Matrix products: the ATen ops that ``nn.Linear``, ``@``, ``matmul`` and ``einsum`` become."""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import Cost, Shape, numel


def _product(batch: int, m: int, k: int, n: int, bias_adds: int = 0) -> Cost:
    macs = batch * m * k * n
    return Cost(macs, 2 * macs + bias_adds)


def _plug_mm(a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> str:
    return f"MACs = m·k·n = {a[0]}·{a[1]}·{b[1]}; FLOPs = 2·MACs"


def _plug_addmm(bias: Shape, a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> str:
    return f"MACs = m·k·n = {a[0]}·{a[1]}·{b[1]}; FLOPs = 2·MACs + m·n (bias)"


def _plug_bmm(a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> str:
    return f"MACs = b·m·k·n = {a[0]}·{a[1]}·{a[2]}·{b[2]}; FLOPs = 2·MACs"


@ATEN.rule("mm", "_int_mm", unit="matmul", formula="(m,k)@(k,n): MACs = m·k·n; FLOPs = 2·MACs", plug=_plug_mm)
def mm(a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _product(1, a[0], a[1], b[1])


@ATEN.rule("_scaled_mm", unit="matmul", formula="(m,k)@(k,n): MACs = m·k·n; FLOPs = 2·MACs")
def scaled_mm(a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _product(1, a[0], a[1], b[1])


@ATEN.rule("_weight_int8pack_mm", "_weight_int4pack_mm", "_weight_int4pack_mm_for_cpu",
           "_weight_int4pack_mm_with_scales_and_zeros", unit="matmul",
           formula="(…,k) activations @ a packed int8/int4 weight of n outputs (n from the output): "
                   "MACs = (…)·k·n; FLOPs = 2·MACs")
def weight_packed_mm(a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    k = a[-1] if a else 1
    return _product(1, numel(a) // k if k else 0, k, out[0][-1] if out and out[0] else 0)


@ATEN.rule("addmm", unit="matmul", formula="bias + (m,k)@(k,n): MACs = m·k·n; FLOPs = 2·MACs + m·n",
           plug=_plug_addmm)
def addmm(bias: Shape, a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _product(1, a[0], a[1], b[1], bias_adds=a[0] * b[1])


@ATEN.rule("bmm", unit="matmul", formula="(b,m,k)@(b,k,n): MACs = b·m·k·n; FLOPs = 2·MACs", plug=_plug_bmm)
def bmm(a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _product(a[0], a[1], a[2], b[2])


@ATEN.rule("baddbmm", unit="matmul", formula="bias + (b,m,k)@(b,k,n): MACs = b·m·k·n; FLOPs = 2·MACs + b·m·n")
def baddbmm(bias: Shape, a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _product(a[0], a[1], a[2], b[2], bias_adds=a[0] * a[1] * b[2])


@ATEN.rule("addbmm", unit="matmul", formula="bias + Σ_b (m,k)@(k,n): MACs = b·m·k·n; FLOPs = 2·MACs + m·n")
def addbmm(bias: Shape, a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _product(a[0], a[1], a[2], b[2], bias_adds=a[1] * b[2])


@ATEN.rule("mv", unit="matmul", formula="(m,k)@(k): MACs = m·k; FLOPs = 2·MACs")
def mv(a: Shape, v: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _product(1, a[0], a[1], 1)


@ATEN.rule("addmv", unit="matmul", formula="bias + (m,k)@(k): MACs = m·k; FLOPs = 2·MACs + m")
def addmv(bias: Shape, a: Shape, v: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _product(1, a[0], a[1], 1, bias_adds=a[0])


@ATEN.rule("dot", "vdot", unit="matmul", formula="(k)·(k): MACs = k; FLOPs = 2·MACs")
def dot(a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _product(1, 1, numel(a), 1)


@ATEN.rule("addr", unit="matmul", formula="bias + outer((m),(n)): MACs = m·n; FLOPs = 2·MACs")
def addr(bias: Shape, a: Shape, b: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return _product(1, a[0], 1, b[0])
