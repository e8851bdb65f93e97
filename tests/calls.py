"""A module that runs one function of its inputs, so that one operator can be profiled alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn


class Call(nn.Module):
    """Runs ``fn`` on its inputs."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *inputs: Any) -> Any:
        return self.fn(*inputs)
