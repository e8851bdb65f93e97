"""The autograd graph behind a loss."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def backward_nodes(loss: torch.Tensor) -> Iterator[Any]:
    """Every node of the backward graph of ``loss``, each once (depth first from its ``grad_fn``)."""
    seen: set[int] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(next_node for next_node, _ in node.next_functions)
        yield node
