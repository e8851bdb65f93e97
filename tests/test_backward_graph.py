"""The walk over a loss's backward graph (nncost.simulation.graph)."""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

import torch

from nncost.simulation.graph import backward_nodes


class Node:
    """A stand-in for an autograd node's Python object as some torch releases (2.11) hand them out:
    made on access, shared while referenced (so one live object per node), freed when dropped."""

    live: ClassVar[weakref.WeakValueDictionary[int, Node]] = weakref.WeakValueDictionary()

    def __init__(self, graph: dict[int, list[int]], key: int) -> None:
        self.graph, self.key = graph, key

    @classmethod
    def of(cls, graph: dict[int, list[int]], key: int) -> Node:
        node = cls.live.get(key)
        if node is None:
            node = cls(graph, key)
            cls.live[key] = node
        return node

    @property
    def next_functions(self) -> tuple[tuple[Node, int], ...]:
        return tuple((Node.of(self.graph, child), 0) for child in self.graph[self.key])


class Loss:
    def __init__(self, grad_fn: Any) -> None:
        self.grad_fn = grad_fn


def test_every_node_once_when_node_objects_are_made_and_freed_on_access() -> None:
    """A ladder of 200 rungs, each node reached from two parents: freed objects' ids are taken again
    by new ones, which a walk that remembered ids alone took for nodes already seen."""
    rungs = 200
    graph = {k: [k + 1, k + 2] if k + 2 < 2 * rungs else [] for k in range(2 * rungs)}
    keys = [node.key for node in backward_nodes(Loss(Node.of(graph, 0)))]  # type: ignore[arg-type]
    assert sorted(keys) == list(range(2 * rungs))


def test_a_real_graph_is_walked_whole() -> None:
    """Every node of a real graph, each once: a diamond (x used twice) and the leaf's AccumulateGrad."""
    x = torch.ones(3, requires_grad=True)
    y = x * 2
    loss = (y.sin() + y.cos()).sum()
    names = sorted(type(node).__name__ for node in backward_nodes(loss))
    assert names == ["AccumulateGrad", "AddBackward0", "CosBackward0", "MulBackward0", "SinBackward0", "SumBackward0"]
