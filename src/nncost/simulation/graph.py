"""The autograd graph behind a loss."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def backward_nodes(loss: torch.Tensor) -> Iterator[Any]:
    """Every node of the backward graph of ``loss``, each once (depth first from its ``grad_fn``).

    A node's Python object lives only while it is referenced, and a new one may take a freed one's
    ``id`` (torch 2.11 frees them as soon as they are dropped): the visited objects are held until
    the walk ends, so that each ``id`` names one node."""
    seen: dict[int, Any] = {}
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        stack.extend(next_node for next_node, _ in node.next_functions)
        yield node
