"""The one registry of cost rules.

A rule is a pure function of shapes: it receives an operator's arguments with every tensor
replaced by its shape (a tuple of ints) and the shapes of the outputs (``out``, a tuple of
shapes), and returns a :class:`Cost`.  It never sees tensor data, so it can be tested alone
with made-up shapes.

Operators are keyed by their overload packet name: ``"convolution"`` for ``aten::convolution``,
``"torchvision::nms"`` for operators outside the ``aten`` namespace.  Rules for other sources
of operators (ONNX) live beside the ATen rules in their own registry instance.

Every rule also names the *unit* its operator executes as, one of :data:`UNITS`: the kind of
work the hardware does for it (matrix units, a vector pass, a lookup, a copy).  Anything that
needs to know what kind of operator a call is (the roofline, the docs) reads the unit, never
the operator's name, so an ONNX ``Conv`` and an ``aten.convolution`` are the same kind of work.
A unit is a fixed name, or :class:`ByShape` when it depends on the call's shapes.
"""

from __future__ import annotations

import math
import sys
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

UNITS = {
    "conv": "convolutions, on the matrix units",
    "depthwise": "grouped convolutions with one input channel per group: little reuse of each weight",
    "matmul": "matrix products (mm, addmm, bmm, linear, einsum) and recurrent kernels, on the matrix units",
    "attention": "fused attention kernels: two matrix products and a softmax per score",
    "norm": "batch and instance norms: statistics per channel",
    "row-norm": "layer, group and RMS norms: two passes over each row",
    "pooling": "max pooling: a comparison per window element",
    "reduction": "means, sums, maxima, norms, variances over a dimension",
    "elementwise": "a few FLOPs per element: arithmetic, activations, comparisons, average pooling (a sum of "
                   "shifted inputs), interpolation",
    "transcendental": "elementwise functions whose one counted FLOP hides a series: GELU, tanh, exp, softmax",
    "spectral": "fast Fourier transforms: 5·N·log2 N FLOPs per complex transform, on the vector units",
    "gather": "lookups that move only the rows they gather (embedding, index_select), not the whole table",
    "copy": "data movement without arithmetic: copies, concatenation, padding, selection, sorting, fills",
    "fused": "a compiled engine's run of elementwise, norm, reduction and copy operators as one kernel "
             "(nncost.analyses.fusion): its inputs read once, its intermediates never written",
    "free": "views and metadata: no bytes, no FLOPs, no time",
    "uncounted": "an operator without a rule: no FLOPs, its bytes counted (a memory-bound lower bound)",
}

UnitFn = Callable[..., str]
# The rule's formula with one call's shapes plugged in, from the cost rule's arguments (None: the
# call's arguments say nothing the bare formula does not).
PlugFn = Callable[..., str | None]
# For an operator that routes each row of one operand through one slice of another (a grouped matrix
# product running a mixture of experts): from the rule's arguments, (the position of the sliced
# operand, the rows routed, the slices), or None for a call that routes nothing.
RoutedFn = Callable[..., tuple[int, int, int] | None]


@dataclass(frozen=True)
class ByShape:
    """A unit that depends on the call: ``pick`` receives what the cost rule receives and returns
    one of ``units`` (a grouped convolution with one input channel per group is ``depthwise``)."""

    units: tuple[str, ...]
    pick: UnitFn


Unit = str | ByShape


@dataclass(frozen=True)
class Rule:
    """A cost rule, with the unit it executes as and the formula the docs and ``explain`` print."""

    ops: tuple[str, ...]
    fn: RuleFn
    unit: Unit
    formula: str
    module: str = ""  # the module that registered it: the docs' section
    routed: RoutedFn | None = None  # which operand is read one slice per row (see RoutedFn)
    plug: PlugFn | None = None  # the formula with a call's shapes in it, for ``explain`` (see PlugFn)

    def plugged(self, *args: Any, out: tuple[Shape, ...]) -> str:
        """The formula of one call, its shapes plugged in where the rule knows how, from the same
        arguments as the cost rule; the bare formula otherwise, or when the call's arguments do
        not fit the rule's plug (an overload with fewer of them)."""
        if self.plug is not None:
            try:
                text = self.plug(*args, out=out)
            except (TypeError, IndexError):
                text = None
            if text is not None:
                return text
        return self.formula

    def unit_of(self, *args: Any, out: tuple[Shape, ...]) -> str:
        """The unit of one call, from the same arguments as the cost rule."""
        if isinstance(self.unit, str):
            return self.unit
        picked = self.unit.pick(*args, out=out)
        if picked not in self.unit.units:
            raise ValueError(f"{self.ops[0]}: unit {picked!r} is not one of {self.unit.units}")
        return picked

    @property
    def units(self) -> tuple[str, ...]:
        """Every unit a call of this rule can have."""
        return (self.unit,) if isinstance(self.unit, str) else self.unit.units


def check_unit(unit: Unit) -> None:
    names = (unit,) if isinstance(unit, str) else unit.units
    unknown = [name for name in names if name not in UNITS]
    if unknown or not names:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unknown or unit!r}")


@dataclass
class Registry:
    """Maps operator names to rules, and knows which operators cost nothing at all."""

    rules: dict[str, Rule] = field(default_factory=dict)
    free: dict[str, str] = field(default_factory=dict)
    allocating: set[str] = field(default_factory=set)  # free, but the storage they create is memory

    def rule(self, *ops: str, unit: Unit, formula: str, module: str | None = None,
             routed: RoutedFn | None = None, plug: PlugFn | None = None) -> Callable[[RuleFn], RuleFn]:
        """Register ``fn`` as the rule of every operator in ``ops``, executing as ``unit``; ``routed``
        says which operand a call reads one slice per row of (a mixture of experts), ``plug``
        writes the formula with a call's shapes in it."""
        check_unit(unit)
        module = module or sys._getframe(1).f_globals.get("__name__", "")

        def register(fn: RuleFn) -> RuleFn:
            entry = Rule(ops=ops, fn=fn, unit=unit, formula=formula, module=module, routed=routed, plug=plug)
            for op in ops:
                if op in self.rules or op in self.free:
                    raise ValueError(f"operator {op!r} registered twice")
                self.rules[op] = entry
            return fn

        return register

    def add(self, ops: Iterable[str], fn: RuleFn, *, unit: Unit, formula: str) -> None:
        """Register an already built rule function (used by rule factories)."""
        self.rule(*ops, unit=unit, formula=formula, module=sys._getframe(1).f_globals.get("__name__", ""))(fn)

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

    def unit(self, op: str) -> Unit:
        """The unit of ``op``: its rule's, ``free``, or ``uncounted`` when it has no rule."""
        entry = self.rules.get(op)
        if entry is not None:
            return entry.unit
        return "free" if op in self.free else "uncounted"

    def entries(self) -> list[Rule]:
        """Every rule once, in registration order."""
        seen: dict[int, Rule] = {}
        for entry in self.rules.values():
            seen.setdefault(id(entry), entry)
        return list(seen.values())


def op_label(name: str) -> str:
    """How a message names an operator: ``aten.convolution``, but ``torchvision::nms`` for one
    outside ``aten`` (operators are keyed by name, with the namespace of those outside aten only)."""
    return name if "::" in name else f"aten.{name}"


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
