"""The bytes an operator reads of its arguments where that is less than the arguments.

The tracer counts every tensor argument whole (``OpCall.reads``).  Two kinds of operator read
less, and :func:`bytes_read` gives their reads as they are:

- **A lookup** (unit ``gather``: ``embedding``, ``index_select``, ONNX ``Gather``) reads the rows
  it gathers of its table, its first argument, not the table: as many bytes as it writes, at
  most the table.  A decode step's embedding reads one row a sequence, not the vocabulary.
- **The experts of a mixture of experts.** A grouped matrix product that routes each row
  through one slice of a parameter (``OpCall.routed``: one ``(E, …)`` parameter holding every
  expert) is traced with the whole parameter as an argument, but its kernel reads only the
  experts that some row is routed to.  With ``T`` tokens each routed to ``k`` distinct experts of
  ``E``, and the routing assumed uniform and independent from token to token (the routing is
  data, unknown on meta), an expert is missed by one token with probability ``1 − k/E`` and by
  all of them with ``(1 − k/E)^T``: the expected number of distinct experts read is
  ``E·(1 − (1 − k/E)^T)``.  A decode step of one sequence (``T = 1``) reads its ``k`` experts; a
  prefill of a few hundred tokens reads all of them.  The MACs are unchanged (every routed row
  is multiplied once, whatever the routing).

The roofline already moves ``2 × written`` bytes for a lookup; these reads make the bytes the
reports show agree with it.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

from nncost.records.trace import OpCall, Routed, Trace, token_rows

GATHER = "gather"  # the unit of lookups (nncost.rules.registry.UNITS)


def expected_experts(experts: int, top_k: float, tokens: int) -> float:
    """The expected number of distinct experts ``tokens`` tokens route to, each to ``top_k`` of
    ``experts`` chosen uniformly and independently: ``E·(1 − (1 − k/E)^T)``."""
    if experts <= 0 or tokens <= 0:
        return 0.0
    missed = max(0.0, 1.0 - top_k / experts)
    return experts * (1.0 - missed ** tokens)


def experts_read(routed: Routed, tokens: int) -> tuple[float, float]:
    """(k, the expected slices of a routed parameter that ``tokens`` tokens read): k is the rows
    routed per token."""
    top_k = float(Fraction(routed.rows, tokens))
    return top_k, expected_experts(routed.slices, top_k, tokens)


def read_share(routed: Routed, tokens: int | None) -> float:
    """The share of the routed parameter a call reads: the expected distinct slices of its
    ``tokens`` over all the slices (1 when the tokens are unknown)."""
    if tokens is None or tokens <= 0 or routed.slices <= 0:
        return 1.0
    return min(1.0, experts_read(routed, tokens)[1] / routed.slices)


def bytes_read(trace: Trace) -> Trace:
    """``trace`` with each lookup reading the rows it gathers, and each routed parameter read in the
    share of its slices that its call's tokens are expected to route to (:func:`read_share`), the
    tokens being the rows of the input of the module call that ran the product (as
    :func:`nncost.analyses.build.active_params` counts them)."""
    params = {name.name: sid for sid, name in trace.named.items() if name.kind == "param"}
    ops = [_routed(_gathered(op), trace, params) for op in trace.ops]
    return trace if all(a is b for a, b in zip(ops, trace.ops, strict=True)) else replace(trace, ops=ops)


def _gathered(op: OpCall) -> OpCall:
    """A lookup reads of its table (its first argument) the bytes it writes, at most the table."""
    if op.unit != GATHER or not op.reads:
        return op
    (table, nbytes), *rest = op.reads
    rows = min(nbytes, op.write_bytes)
    if rows == nbytes:
        return op
    reads = ((table, rows), *rest)
    return replace(op, reads=reads, read_bytes=sum(n for _, n in reads))


def _routed(op: OpCall, trace: Trace, params: dict[str, int]) -> OpCall:
    routed = op.routed
    if routed is None or routed.param not in params:
        return op
    tokens = token_rows(trace.layers[op.layer].input_shapes) if op.layer >= 0 else None
    share = read_share(routed, tokens)
    if share >= 1.0:
        return op
    sid = params[routed.param]
    reads = tuple((s, round(n * share) if s == sid else n) for s, n in op.reads)
    return replace(op, reads=reads, read_bytes=sum(n for _, n in reads))
