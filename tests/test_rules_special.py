"""Inverse hyperbolic and special functions against their closed form: ``FLOPs = numel(out)``, no
MACs, the transcendental unit, in place or not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nncost
from nncost.rules import ATEN
from nncost.rules.aten.special import SPECIAL


class Call(nn.Module):
    """Runs one function of its input, so that an operator can be profiled alone."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(x)


def calls(report: nncost.Report) -> list[tuple[str, int, int]]:
    return [(c.op, c.macs, c.flops) for layer in report.layers for c in layer.self_ops]


@pytest.mark.parametrize("name", SPECIAL)
@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.booleans())
def test_one_flop_per_result(name: str, shape: list[int], inplace: bool) -> None:
    op = name + "_" if inplace else name
    report = nncost.profile(Call(lambda x: getattr(x, op)()), inputs=torch.rand(*shape) + 1.5)
    n = 1
    for size in shape:
        n *= size
    assert report.uncounted == []
    assert calls(report) == [(op, 0, n)]


@pytest.mark.parametrize("name", SPECIAL)
def test_runs_as_transcendental(name: str) -> None:
    for op in (name, name + "_"):
        rule = ATEN.rules[op]
        assert rule.unit == "transcendental"
        assert rule.unit_of((3, 4), out=((3, 4),)) == "transcendental"
        assert rule.fn((3, 4), out=((3, 4),)) == (0, 12)
