"""Weight normalisation, bool reductions, ``isin`` and ``polar`` against their closed forms.

``_weight_norm_interface``: ``FLOPs = 2·numel(v) + numel(g)`` (the norm, g/‖v‖, the scale), the
same as PyTorch's composite path ``v * (g / norm_except_dim(v))`` costs under the elementwise and
reduction rules.  ``_is_all_true``: ``numel(x)``.  ``isin``: ``numel(elements)·numel(test)``.
``polar``: ``4·numel(out)``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nncost
from calls import Call
from nncost.rules import ATEN

SETTINGS: dict[str, Any] = {"deadline": None}


def calls(report: nncost.Report) -> list[tuple[str, int, int]]:
    return [(c.op, c.macs, c.flops) for layer in report.layers for c in layer.self_ops]


class WeightNormConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, dim: int | None) -> None:
        super().__init__()
        self.conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(cin, cout, kernel, bias=False), dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@settings(max_examples=25, **SETTINGS)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.sampled_from([0, 1, 2, None]))
def test_weight_norm_costs_the_norm_and_the_scale(cin: int, cout: int, kernel: int, dim: int | None) -> None:
    report = nncost.profile(WeightNormConv(cin, cout, kernel, dim), (cin, kernel + 3))
    assert report.uncounted == []
    v = cout * cin * kernel
    g = 1 if dim is None else (cout, cin, kernel)[dim]  # one norm per slice along dim
    conv_macs = cout * cin * kernel * 4
    # dims 0 and the last take the fused kernel, dim 1 and the whole tensor (None) the composite path:
    # the same figure either way
    assert report.totals.flops == 2 * conv_macs + 2 * v + g
    ops = [op for op, _, _ in calls(report)]
    assert ("_weight_norm_interface" in ops) == (dim in (0, 2))


def test_weight_norm_rule_alone() -> None:
    rule = ATEN.get("_weight_norm_interface")
    assert rule is not None
    assert rule.fn((768, 48, 128), (1, 1, 128), 2, out=((768, 48, 128), (1, 1, 128))) == (0, 2 * 768 * 48 * 128 + 128)


@settings(max_examples=20, **SETTINGS)
@given(st.lists(st.integers(0, 5), min_size=0, max_size=3), st.sampled_from(["_is_all_true", "_is_any_true"]))
def test_bool_reductions_cost_one_flop_per_element(shape: list[int], op: str) -> None:
    fn = getattr(torch.ops.aten, op)
    report = nncost.profile(Call(fn), inputs=(torch.zeros(shape, dtype=torch.bool),))
    elements = 1
    for size in shape:
        elements *= size
    assert calls(report) == [(op, 0, elements)]


@settings(max_examples=25, **SETTINGS)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 40), st.booleans(), st.sampled_from(["meta", "cpu"]))
def test_isin_compares_every_pair(rows: int, cols: int, tests: int, invert: bool, device: str) -> None:
    elements, test_elements = torch.arange(rows * cols).view(rows, cols), torch.arange(tests) * 3
    report = nncost.profile(Call(lambda e, t: torch.isin(e, t, invert=invert)), inputs=(elements, test_elements),
                            device=device)
    assert calls(report) == [("isin", 0, rows * cols * tests)]


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_isin_with_a_scalar(device: str) -> None:
    elements = torch.arange(12).view(3, 4)
    report = nncost.profile(Call(lambda e: torch.isin(e, 5)), inputs=(elements,), device=device)
    assert report.totals.flops == 12
    report = nncost.profile(Call(lambda t: torch.isin(5, t)), inputs=(elements,), device=device)
    assert report.totals.flops == 12


@settings(max_examples=25, **SETTINGS)
@given(st.integers(1, 4), st.integers(1, 6), st.booleans())
def test_polar_costs_four_flops_per_complex_result(rows: int, cols: int, broadcast: bool) -> None:
    magnitude = torch.rand(rows, cols)
    angle = torch.rand(cols) if broadcast else torch.rand(rows, cols)
    report = nncost.profile(Call(torch.polar), inputs=(magnitude, angle))
    assert calls(report) == [("polar", 0, 4 * rows * cols)]
