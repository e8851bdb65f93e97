"""The one registry of cost rules.

A rule is a pure function of shapes: it receives an operator's arguments with every tensor
replaced by its shape (a tuple of ints) and the shapes of the outputs (``out``, a tuple of
shapes), and returns a :class:`Cost`.  It never sees tensor data, so it can be tested alone
with made-up shapes.

Operators are keyed by their overload packet name: ``"convolution"`` for ``aten::convolution``,
``"torchvision::nms"`` for operators outside the ``aten`` namespace.  Rules for other sources
of operators (ONNX) live beside the ATen rules in their own registry instance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

Shape = tuple[int, ...]


class Cost(NamedTuple):
    """What one operator call costs in arithmetic.

    ``macs`` counts multiply-accumulates of conv- and matmul-like work only;
    ``flops`` counts every floating-point operation, ``2 * macs`` included.
    """

    macs: int
    flops: int


ZERO = Cost(0, 0)

RuleFn = Callable[..., Cost]


@dataclass(frozen=True)
class Rule:
    """A cost rule, with the human-readable formula the docs and ``explain`` print."""

    ops: tuple[str, ...]
    fn: RuleFn
    family: str
    formula: str


@dataclass
class Registry:
    """Maps operator names to rules, and knows which operators cost nothing at all."""

    rules: dict[str, Rule] = field(default_factory=dict)
    free: dict[str, str] = field(default_factory=dict)
    allocating: set[str] = field(default_factory=set)  # free, but the storage they create is memory

    def rule(self, *ops: str, family: str, formula: str) -> Callable[[RuleFn], RuleFn]:
        """Register ``fn`` as the rule of every operator in ``ops``."""

        def register(fn: RuleFn) -> RuleFn:
            entry = Rule(ops=ops, fn=fn, family=family, formula=formula)
            for op in ops:
                if op in self.rules or op in self.free:
                    raise ValueError(f"operator {op!r} registered twice")
                self.rules[op] = entry
            return fn

        return register

    def add(self, ops: Iterable[str], fn: RuleFn, *, family: str, formula: str) -> None:
        """Register an already built rule function (used by rule factories)."""
        self.rule(*ops, family=family, formula=formula)(fn)

    def mark_free(self, ops: Iterable[str], why: str) -> None:
        """Operators that read and compute nothing: views, metadata queries, bare allocation."""
        for op in ops:
            if op in self.rules or op in self.free:
                raise ValueError(f"operator {op!r} registered twice")
            self.free[op] = why

    def mark_allocating(self, ops: Iterable[str], why: str) -> None:
        """Operators that compute nothing but allocate: free of cost, yet their storage is live memory
        (``empty_like`` makes dropout's mask before ``bernoulli_`` fills it in place)."""
        self.mark_free(ops, why)
        self.allocating.update(ops)

    def get(self, op: str) -> Rule | None:
        return self.rules.get(op)

    def is_free(self, op: str) -> bool:
        return op in self.free

    def is_allocating(self, op: str) -> bool:
        return op in self.allocating

    def families(self) -> dict[str, list[Rule]]:
        """Rules grouped by family, each rule once, for the generated docs table."""
        seen: dict[int, Rule] = {}
        for entry in self.rules.values():
            seen.setdefault(id(entry), entry)
        grouped: dict[str, list[Rule]] = {}
        for entry in seen.values():
            grouped.setdefault(entry.family, []).append(entry)
        return grouped


def numel(shape: Sequence[int]) -> int:
    """Number of elements of a shape; ``()`` is a scalar with one element."""
    return math.prod(shape)


def first_shape(value: Any) -> Shape:
    """The shape of the first tensor in ``value`` (a shape, or a list/tuple of shapes)."""
    if is_shape(value):
        return tuple(value)
    for item in value:
        if item is not None:
            return first_shape(item)
    raise ValueError("no tensor shape found")


def is_shape(value: Any) -> bool:
    """Shapes are tuples of ints; lists of shapes are not shapes."""
    return isinstance(value, tuple) and all(isinstance(d, int) for d in value)
