"""Generation from a few traced steps: the decode phase summed over every step, exactly.

A decode step's operators are the same at every context length ``L`` (the tokens already in
the cache); what changes is the attention over the cache, linear in ``L`` until a sliding
window fills, constant after.  So a run of consecutive steps whose every operator's MACs,
FLOPs and bytes are linear in ``L`` is summed in closed form, and :func:`linear_segments`
finds those runs: it traces the first two steps and the middle and last step of a range, and
splits the range in two wherever the middle or the last step is off the line.  A window that
fills inside a range is found in a few splits, so 2,048 steps take a handful of traces while
the sum stays that of every step.  Step time is not one line (an operator can go from one roof
to the other), but under one bandwidth each operator's two roofs are lines, so its time is summed
in closed form on each side of where they cross (:func:`~nncost.analyses.roofline.op_seconds_sum`).
Nothing is kept per step: the cost of 10⁸ new tokens is that of a few traced steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from nncost.analyses.build import build_report
from nncost.analyses.roofline import estimate, op_overhead, op_seconds, op_seconds_sum
from nncost.records.report import Report
from nncost.records.roofline import Roofline
from nncost.records.trace import OpCall, Trace

FIGURES = ("macs", "flops", "read_bytes", "write_bytes")
Figures = tuple[int, int, int, int]


def _figures(op: OpCall) -> Figures:
    return op.macs, op.flops, op.read_bytes, op.write_bytes


def _signature(trace: Trace) -> list[tuple[str, int, str]]:
    return [(op.op, op.layer, op.unit) for op in trace.ops]


@dataclass(frozen=True)
class Segment:
    """Steps ``first`` … ``first + count − 1`` (context lengths), every operator linear in them:
    its figures at step ``first + k`` are ``base + k · slope``."""

    first: int
    count: int
    base: Trace
    slopes: tuple[Figures, ...]

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def at(self, step: int) -> list[Figures]:
        k = step - self.first
        return [tuple(b + k * d for b, d in zip(_figures(op), slope, strict=True))  # type: ignore[misc]
                for op, slope in zip(self.base.ops, self.slopes, strict=True)]


def linear_segments(trace_at: Callable[[int], Trace], first: int, last: int) -> list[Segment]:
    """The steps ``first`` … ``last`` as segments that are each linear in the context length.

    ``trace_at(L)`` traces the step at context ``L`` (each is traced once).  A range is linear
    when its first two steps give a line that its middle and last steps lie on, operator by
    operator, with the same operators throughout; otherwise it is split at its middle.
    """
    traced: dict[int, Trace] = {}

    def at(step: int) -> Trace:
        if step not in traced:
            traced[step] = trace_at(step)
        return traced[step]

    def single(step: int) -> Segment:
        trace = at(step)
        return Segment(step, 1, trace, tuple((0, 0, 0, 0) for _ in trace.ops))

    def solve(start: int, end: int) -> list[Segment]:
        if end - start < 2:
            return [single(step) for step in range(start, end + 1)]
        base, next_ = at(start), at(start + 1)
        middle = (start + end) // 2
        if _signature(base) == _signature(next_):
            slopes = tuple(tuple(b - a for a, b in zip(_figures(x), _figures(y), strict=True))
                           for x, y in zip(base.ops, next_.ops, strict=True))
            segment = Segment(start, end - start + 1, base, slopes)  # type: ignore[arg-type]
            if all(_signature(at(step)) == _signature(base)
                   and [_figures(op) for op in at(step).ops] == segment.at(step) for step in (middle, end)):
                return [segment]
        return solve(start, middle) + solve(middle + 1, end)

    return solve(first, last)


def summed(segments: list[Segment]) -> Trace:
    """One trace whose every operator holds its figures summed over all the segments' steps.

    The operators must be the same in every segment (decode steps differ in shapes only); the
    memory events and the arguments are those of the last step.
    """
    last = segments[-1].base
    signature = _signature(last)
    if any(_signature(s.base) != signature for s in segments):
        raise ValueError("the decode steps do not run the same operators at every context length")
    totals = [[0, 0, 0, 0] for _ in last.ops]
    for segment in segments:
        n = segment.count
        for total, op, slope in zip(totals, segment.base.ops, segment.slopes, strict=True):
            for i, (value, step) in enumerate(zip(_figures(op), slope, strict=True)):
                total[i] += n * value + step * n * (n - 1) // 2
    ops = [replace(op, macs=t[0], flops=t[1], read_bytes=t[2], write_bytes=t[3]) for op, t in zip(last.ops, totals,
                                                                                                    strict=True)]
    return replace(last, ops=ops)


def decode_report(segments: list[Segment], roofline: Roofline | None) -> Report:
    """The decode phase as one report: every layer's figures summed over the steps, and, with a
    roofline, every layer's time summed step by step."""
    trace = summed(segments)
    report = build_report(trace)
    if roofline is None:
        return report
    series: dict[int, tuple[float, float]] = {}
    for position in range(len(trace.ops)):
        compute_bound = memory_bound = 0.0
        for segment in segments:
            on_compute, on_memory = op_seconds_sum(segment.base.ops[position], segment.slopes[position],
                                                   segment.count, roofline)
            compute_bound += on_compute
            memory_bound += on_memory
        series[id(trace.ops[position])] = (compute_bound, memory_bound)
    steps = sum(segment.count for segment in segments)
    timed = estimate(report, roofline, op_time=lambda op: series[id(op)], calls=steps)
    return timed


def no_decode(prefill: Trace, roofline: Roofline | None) -> Report:
    """The decode phase of a generation of one new token (the prefill yields it): zero steps, the
    prefill's layers with no operators, so that every figure, and with a roofline every time, is 0."""
    report = build_report(replace(prefill, ops=[], memory_events=[]))
    if roofline is None:
        return report
    return estimate(report, roofline, op_time=lambda op: (0.0, 0.0), calls=0)


def step_samples(segments: list[Segment], roofline: Roofline | None) -> list[tuple[int, int, float | None]]:
    """(context length, MACs, seconds) of the step at each segment's ends: the step's cost
    against the context length, a line between those points, for charts."""
    samples = []
    for segment in segments:
        for step in sorted({segment.first, segment.last}):
            ops = [replace(op, macs=f[0], flops=f[1], read_bytes=f[2], write_bytes=f[3])
                   for op, f in zip(segment.base.ops, segment.at(step), strict=True)]
            seconds = None
            if roofline is not None:
                seconds = roofline.module_call_seconds * len(segment.base.layers) + sum(
                    max(op_seconds(op, roofline)) + op_overhead(op, roofline) for op in ops)
            samples.append((step, sum(op.macs for op in ops), seconds))
    return samples
