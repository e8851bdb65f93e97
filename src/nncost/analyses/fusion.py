"""A compiled engine's fusions as a what-if on a traced step: runs of pointwise operators as one kernel.

vLLM's V1 engine compiles the model with ``torch.compile``; Inductor turns each chain of
pointwise, normalisation and reduction operators between two matrix products (or attention) into
one generated kernel, and vLLM's own fused kernels (``fused_add_rms_norm``, ``silu_and_mul``,
rotary embedding in place) do the same for the chains it matches by hand.  Such a kernel reads
its inputs once and writes only what outlives it; its intermediates stay in registers.

:func:`fused` models that from the units of the traced operators, never their names or their
modules, so any architecture is fused the same way.  A *run* is a maximal sequence of
consecutive operators whose unit is in :data:`FUSIBLE` (or a view, which moves nothing), and
that write no storage of the KV cache (the cache's slot writes are their own kernel).  A run of
two or more counted operators becomes one operator of unit ``fused``:

- it **reads** each storage that the run reads before writing it, once: the bytes its operators
  read of it, at most the storage (two halves of one tensor are read once each, a tensor read by
  three operators once);
- it **writes** each storage the run writes that an operator after the run reads, or that the
  step does not free (an output of the step, or state such as a cache made before it), at most
  once likewise;
- its MACs and FLOPs are the run's sums, so the totals do not change;
- it belongs to the innermost module call that holds all of its operators (a residual add and
  the next layer's norm belong to the decoder, SiLU and its product to the MLP);
- the storages it creates and does not write (its intermediates) leave the memory timeline.

The decisions read only units and which storage each operator touches, so the fused steps of a
decode phase are the same operators at every context length, as its linear sum needs.
docs/engines.md ("Fusions") cites the engine's sources and says what is not fused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from nncost.records.trace import LayerCall, OpCall, Trace

FUSED = "fused"  # the unit of a fused run (nncost.rules.registry.UNITS)
FREE = "free"
# The units a compiler fuses into one pointwise kernel: arithmetic, activations, norms,
# reductions along a row, and data movement (casts, copies, concatenation, indexing, fills).
FUSIBLE = frozenset({"elementwise", "transcendental", "norm", "row-norm", "reduction", "copy"})


def fused(trace: Trace) -> Trace:
    """``trace`` with every run of two or more fusible operators replaced by one fused operator."""
    runs = fusible_runs(trace)
    if not runs:
        return trace
    later_reads = _last_reads(trace.ops)
    freed = {allocation for _, delta, allocation in trace.memory_events if delta < 0}
    created = {allocation: index for index, delta, allocation in trace.memory_events if delta > 0}
    sizes = storage_bytes(trace)
    ops: list[OpCall] = []
    position: list[int] = []  # the new index of each old operator
    dropped: set[int] = set()  # storages that live only inside one fused run
    starts = {start: end for start, end in runs}
    i = 0
    while i < len(trace.ops):
        end = starts.get(i)
        if end is None:
            position.append(len(ops))
            ops.append(trace.ops[i])
            i += 1
            continue
        fusion = _fuse(trace, i, end, later_reads, freed, sizes)
        made_here = {sid for sid in fusion.unread if i <= created.get(sid, -1) < end}
        dropped |= made_here
        position.extend([len(ops)] * (end - i))
        ops.append(fusion.op)
        i = end
    events = [(_moved(index, position, len(ops)), delta, allocation)
              for index, delta, allocation in trace.memory_events if allocation not in dropped]
    return replace(trace, ops=ops, memory_events=events, allocations={})


def fusible_runs(trace: Trace) -> list[tuple[int, int]]:
    """The runs ``[start, end)`` of operators that fuse: maximal runs of fusible operators and
    views that hold at least two fusible operators."""
    caches = {sid for sid, named in trace.named.items() if named.kind == "cache"}
    runs = []
    start = None
    counted = 0
    for i, op in enumerate([*trace.ops, None]):
        if op is not None and (op.unit == FREE or _fusible(op, caches)):
            if start is None:
                start, counted = i, 0
            counted += op.unit != FREE
            continue
        if start is not None and counted >= 2:
            runs.append((start, i))
        start = None
    return runs


def _fusible(op: OpCall, caches: set[int]) -> bool:
    return op.counted and op.unit in FUSIBLE and not any(sid in caches for sid, _ in op.writes)


@dataclass(frozen=True)
class _Fusion:
    op: OpCall
    unread: set[int]  # storages the run writes that nothing reads after it and the step frees


def storage_bytes(trace: Trace) -> dict[int, int]:
    """The bytes of each storage whose size the trace knows: those its operators create, and the
    named ones (parameters, the cache), by storage id."""
    sizes = {sid: math.prod(named.shape) * named.element_size for sid, named in trace.named.items()}
    sizes.update({allocation: delta for _, delta, allocation in trace.memory_events if delta > 0})
    return sizes


def _fuse(trace: Trace, start: int, end: int, later_reads: dict[int, int], freed: set[int],
          sizes: dict[int, int]) -> _Fusion:
    """The one kernel that runs operators ``start … end − 1``: what it reads from before it, what
    it leaves for after it."""
    members = [op for op in trace.ops[start:end] if op.unit != FREE]
    reads: dict[int, list[int]] = {}
    written: dict[int, list[int]] = {}
    for op in members:
        for sid, nbytes in op.reads:
            if sid not in written:
                reads.setdefault(sid, []).append(nbytes)
        for sid, nbytes in op.writes:
            written.setdefault(sid, []).append(nbytes)
    once = {sid: _once(parts, sizes.get(sid)) for sid, parts in reads.items()}
    kept = {sid: _once(parts, sizes.get(sid)) for sid, parts in written.items()
            if later_reads.get(sid, -1) >= end or sid not in freed}
    first = members[0]
    op = OpCall(op=f"fused({'+'.join(m.op for m in members)})", layer=_common_layer(trace.layers, members),
                macs=sum(m.macs for m in members), flops=sum(m.flops for m in members),
                read_bytes=sum(once.values()), write_bytes=sum(kept.values()), counted=True, unit=FUSED,
                out_shapes=members[-1].out_shapes, kernel_bytes=max(m.kernel_bytes for m in members),
                dtype=first.dtype, reads=tuple(once.items()), writes=tuple(kept.items()))
    return _Fusion(op, set(written) - set(kept))


def _once(parts: list[int], size: int | None) -> int:
    """The bytes of one storage that a kernel moves once: what its operators moved of it, at most
    the storage (the largest part where its size is unknown)."""
    return min(sum(parts), size) if size is not None else max(parts)


def _last_reads(ops: list[OpCall]) -> dict[int, int]:
    """The index of the last operator that reads each storage (views move nothing)."""
    last: dict[int, int] = {}
    for i, op in enumerate(ops):
        if op.unit != FREE:
            for sid, _ in op.reads:
                last[sid] = i
    return last


def _common_layer(layers: list[LayerCall], members: list[OpCall]) -> int:
    """The innermost module call that holds every member's (-1: outside the model)."""
    def chain(index: int) -> list[int]:
        path = []
        current: int | None = index
        while current is not None and current >= 0:
            path.append(current)
            current = layers[current].parent
        return path[::-1]

    common = chain(members[0].layer)
    for op in members[1:]:
        other = chain(op.layer)
        n = 0
        while n < min(len(common), len(other)) and common[n] == other[n]:
            n += 1
        common = common[:n]
    return common[-1] if common else -1


def _moved(index: int, position: list[int], count: int) -> int:
    """The new index of an event's operator (an event after the last operator stays after it)."""
    return position[index] if 0 <= index < len(position) else (count if index >= len(position) else index)
