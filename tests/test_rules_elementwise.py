"""Elementwise operators: one FLOP per output element, activations included, broadcasting or not."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nncost

SETTINGS: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
DEVICES = st.sampled_from(["meta", "cpu"])

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "ReLU": nn.ReLU, "ReLU(inplace)": lambda: nn.ReLU(inplace=True), "ReLU6": nn.ReLU6, "GELU": nn.GELU,
    "GELU(tanh)": lambda: nn.GELU(approximate="tanh"), "SiLU": nn.SiLU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh,
    "Hardswish": nn.Hardswish, "Hardsigmoid": nn.Hardsigmoid, "LeakyReLU": nn.LeakyReLU, "ELU": nn.ELU,
    "Mish": nn.Mish, "Softplus": nn.Softplus,
}
BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "maximum": torch.maximum,
    "minimum": torch.minimum, "max": torch.max, "pow": torch.pow, "atan2": torch.atan2,
}


class Binary(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fn(a, b)


@settings(max_examples=50, **SETTINGS)
@given(st.sampled_from(sorted(ACTIVATIONS)), st.lists(st.integers(1, 5), min_size=1, max_size=4), DEVICES)
def test_activations_one_flop_per_element(name: str, shape: list[int], device: str) -> None:
    report = nncost.profile(ACTIVATIONS[name](), inputs=torch.randn(shape), device=device)
    assert report.uncounted == []
    assert (report.totals.macs, report.totals.flops) == (0, math.prod(shape))


@st.composite
def broadcastable(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    full = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))

    def operand() -> tuple[int, ...]:
        dims = full[len(full) - draw(st.integers(1, len(full))):]
        return tuple(d if draw(st.booleans()) else 1 for d in dims)

    a, b = operand(), operand()
    return a, b, tuple(torch.broadcast_shapes(a, b))


@settings(max_examples=60, **SETTINGS)
@given(st.sampled_from(sorted(BINARY)), broadcastable(), DEVICES)
def test_binary_ops_count_the_broadcast_output(name: str, shapes: tuple[tuple[int, ...], ...], device: str) -> None:
    a, b, out = shapes
    report = nncost.profile(Binary(BINARY[name]), inputs=(torch.rand(a) + 0.5, torch.rand(b) + 0.5), device=device)
    assert report.uncounted == []
    assert (report.totals.macs, report.totals.flops) == (0, math.prod(out))
