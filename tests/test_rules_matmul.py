"""Matrix products against closed forms: nn.Linear, ``@`` with broadcasting, bmm, einsum, and the rules alone.

A product ``(m, k) @ (k, n)`` is ``m·k·n`` MACs and ``2·m·k·n`` FLOPs, once per broadcast batch element;
a bias adds one FLOP per output element.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nncost
from nncost.rules import ATEN

SETTINGS: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
DEVICES = st.sampled_from(["meta", "cpu"])


class Fn(nn.Module):
    """A function of the inputs, as a module nncost can profile."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(*args)


def totals(report: nncost.Report) -> tuple[int, int]:
    assert report.uncounted == []
    return report.totals.macs, report.totals.flops


@settings(max_examples=60, **SETTINGS)
@given(
    lead=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    in_features=st.integers(1, 9),
    out_features=st.integers(1, 9),
    bias=st.booleans(),
    transpose=st.booleans(),
    device=DEVICES,
)
def test_linear_matches_closed_form(
    lead: list[int], in_features: int, out_features: int, bias: bool, transpose: bool, device: str
) -> None:
    # lead == [] is an unbatched 1-d input; a transposed (non-contiguous) input takes matmul + add_
    # instead of addmm, which must cost the same.
    x = torch.randn(*lead, in_features)
    if transpose and len(lead) >= 2:
        x = torch.randn(lead[1], lead[0], *lead[2:], in_features).transpose(0, 1)
    report = nncost.profile(nn.Linear(in_features, out_features, bias=bias), inputs=x, device=device)
    rows = math.prod(lead)
    macs = rows * in_features * out_features
    assert totals(report) == (macs, 2 * macs + (rows * out_features if bias else 0))
    assert report.totals.params == in_features * out_features + (out_features if bias else 0)
    assert report.layers[0].output_shapes == [(*lead, out_features)]


@st.composite
def broadcast_pairs(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Shapes for ``a @ b`` with broadcasting batch dimensions (or 1-d operands), and the MACs."""
    batch = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
    m, k, n = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))

    def batch_of_operand() -> list[int]:
        dims = batch[len(batch) - draw(st.integers(0, len(batch))):]  # a suffix, as broadcasting aligns right
        return [d if draw(st.booleans()) else 1 for d in dims]

    a_batch, b_batch = batch_of_operand(), batch_of_operand()
    a_vector = draw(st.booleans()) and not a_batch
    b_vector = draw(st.booleans()) and not b_batch
    a = (k,) if a_vector else (*a_batch, m, k)
    b = (k,) if b_vector else (*b_batch, k, n)
    broadcast = torch.broadcast_shapes(tuple(a_batch), tuple(b_batch))
    macs = math.prod(broadcast) * (1 if a_vector else m) * k * (1 if b_vector else n)
    return a, b, macs


@settings(max_examples=80, **SETTINGS)
@given(broadcast_pairs(), DEVICES)
def test_matmul_with_broadcast_batch_dimensions(pair: tuple[tuple[int, ...], tuple[int, ...], int],
                                                device: str) -> None:
    a, b, macs = pair
    report = nncost.profile(Fn(torch.matmul), inputs=(torch.randn(a), torch.randn(b)), device=device)
    assert totals(report) == (macs, 2 * macs)


@settings(max_examples=30, **SETTINGS)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6), st.integers(1, 6), DEVICES)
def test_bmm(batch: int, m: int, k: int, n: int, device: str) -> None:
    report = nncost.profile(Fn(torch.bmm), inputs=(torch.randn(batch, m, k), torch.randn(batch, k, n)), device=device)
    assert totals(report) == (batch * m * k * n, 2 * batch * m * k * n)


EINSUMS = ["bij,bjk->bik", "bhqd,bhkd->bhqk", "bhqk,bhkd->bhqd", "ij,jk->ik", "bi,bi->b", "i,i->", "bn,nm->bm",
           "bld,hd->blh"]


@settings(max_examples=60, **SETTINGS)
@given(st.sampled_from(EINSUMS), st.dictionaries(st.sampled_from("bhijklmnqd"), st.integers(2, 5)), DEVICES)
def test_einsum_contractions(equation: str, sizes: dict[str, int], device: str) -> None:
    # Every index of these equations is either kept or summed over both operands, so the product
    # visits every combination of index values once: MACs = ∏ over the distinct indices.
    # Sizes start at 2: einsum turns a contraction over a size-1 index into a plain multiply.
    operands, _ = equation.split("->")
    letters = sorted(set(operands.replace(",", "")))
    size = {c: sizes.get(c, 3) for c in letters}
    tensors = tuple(torch.randn([size[c] for c in spec]) for spec in operands.split(","))
    report = nncost.profile(Fn(lambda *t: torch.einsum(equation, *t)), inputs=tensors, device=device)
    macs = math.prod(size.values())
    assert totals(report) == (macs, 2 * macs)


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize(
    ("model", "shape", "macs"),
    [
        (Fn(torch.matmul), [(5,), (5, 3)], 5 * 3),  # matmul: unsqueeze(0), mm, squeeze_(0)
        (nn.Linear(5, 3, bias=False), [(5,)], 5 * 3),  # the same matmul inside F.linear
        (Fn(lambda x: x.unsqueeze_(0).t_().transpose_(0, 1).squeeze_(0) + 1), [(5,)], 0),
    ],
)
def test_in_place_views_are_free(model: nn.Module, shape: list[tuple[int, ...]], macs: int, device: str) -> None:
    report = nncost.profile(model, inputs=tuple(torch.randn(s) for s in shape), device=device)
    assert report.totals.macs == macs
    assert report.uncounted == []


def test_matmul_inside_attention_like_block() -> None:
    # Q·Kᵀ then P·V through @, heads as batch: B·H·L·S·(E + Ev)
    def block(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (q @ k.transpose(-1, -2)) @ v

    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 6)
    report = nncost.profile(Fn(block), inputs=(q, k, v))
    macs = 2 * 3 * 5 * 7 * (4 + 6)
    assert totals(report) == (macs, 2 * macs)


# -- the rules as pure functions of shapes ----------------------------------------------------


def rule(name: str) -> Callable[..., Any]:
    entry = ATEN.get(name)
    assert entry is not None, name
    return entry.fn


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64), st.integers(1, 64), st.integers(1, 16))
def test_product_rules(m: int, k: int, n: int, b: int) -> None:
    mkn = m * k * n
    assert rule("mm")((m, k), (k, n), out=((m, n),)) == (mkn, 2 * mkn)
    assert rule("addmm")((n,), (m, k), (k, n), 1, 1, out=((m, n),)) == (mkn, 2 * mkn + m * n)
    assert rule("bmm")((b, m, k), (b, k, n), out=((b, m, n),)) == (b * mkn, 2 * b * mkn)
    assert rule("baddbmm")((b, m, n), (b, m, k), (b, k, n), out=((b, m, n),)) == (b * mkn, 2 * b * mkn + b * m * n)
    # addbmm sums the b products into one (m, n) result: the bias is added once per output
    assert rule("addbmm")((m, n), (b, m, k), (b, k, n), out=((m, n),)) == (b * mkn, 2 * b * mkn + m * n)
    assert rule("mv")((m, k), (k,), out=((m,),)) == (m * k, 2 * m * k)
    assert rule("addmv")((m,), (m, k), (k,), out=((m,),)) == (m * k, 2 * m * k + m)
    assert rule("dot")((k,), (k,), out=((),)) == (k, 2 * k)
    assert rule("vdot")((k,), (k,), out=((),)) == (k, 2 * k)
    assert rule("addr")((m, n), (m,), (n,), out=((m, n),)) == (m * n, 2 * m * n)


@pytest.mark.parametrize(
    ("fn", "shapes", "macs", "bias_adds"),
    [
        (torch.addmm, [(4, 6), (4, 5), (5, 6)], 4 * 5 * 6, 4 * 6),
        (torch.baddbmm, [(3, 4, 6), (3, 4, 5), (3, 5, 6)], 3 * 4 * 5 * 6, 3 * 4 * 6),
        (torch.addbmm, [(4, 6), (3, 4, 5), (3, 5, 6)], 3 * 4 * 5 * 6, 4 * 6),
        (torch.addmv, [(4,), (4, 5), (5,)], 4 * 5, 4),
        (torch.mv, [(4, 5), (5,)], 4 * 5, 0),
        (torch.dot, [(7,), (7,)], 7, 0),
    ],
)
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_fused_products_through_the_tracer(fn: Callable[..., torch.Tensor], shapes: list[tuple[int, ...]],
                                           macs: int, bias_adds: int, device: str) -> None:
    report = nncost.profile(Fn(fn), inputs=tuple(torch.randn(s) for s in shapes), device=device)
    assert totals(report) == (macs, 2 * macs + bias_adds)
