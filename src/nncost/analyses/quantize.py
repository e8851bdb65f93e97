"""Quantized weights and caches as a what-if on a traced model: the same operators, narrower bytes.

The capture names the storages the operators read and write (``Trace.named``: the model's
parameters, and in generation the tensors of the KV cache).  A weight format
(:class:`~nncost.quantization.WeightFormat`) applies to the weights of matrix products: every
parameter of two or more dimensions that an operator of unit ``matmul`` reads (each
``nn.Linear``, ``lm_head`` included, HF's ``Conv1D`` too), as torchao's ``quantize_`` replaces
the weight of every linear layer.  Such a read costs the weight's bytes in that format, scales
and zero points included, and the product computes in the format's dtype (int8 for
``int8-dynamic``, fp8 for ``fp8``; the activations' otherwise).  A parameter also read by other
operators (an embedding tied to ``lm_head``) keeps its dense copy beside the quantized one, as
``quantize_`` unties them.  A KV cache dtype applies to every read and write of a cache tensor
and to the cache's allocations.  Nothing else changes: MACs, FLOPs and the operators are the
traced model's; the operators that would quantize activations on the fly are not added.
"""

from __future__ import annotations

import math
from dataclasses import replace

from nncost.quantization import WeightFormat, cache_nbytes
from nncost.records.trace import Named, OpCall, ParamStats, Trace

MATRIX_UNIT = "matmul"


def quantized(trace: Trace, weights: WeightFormat | None, kv_cache_dtype: str | None = None) -> Trace:
    """``trace`` with its weights stored as ``weights`` and its KV cache as ``kv_cache_dtype``."""
    if weights is None and kv_cache_dtype is None:
        return trace
    matrix, other = weight_reads(trace)
    sized = {sid: _size(named, weights if sid in matrix else None, kv_cache_dtype)
             for sid, named in trace.named.items()}
    ops = [_op(op, sized, matrix, weights) for op in trace.ops]
    events = trace.memory_events
    if kv_cache_dtype is not None:
        events = [(index, _scaled(delta, sized.get(allocation)), allocation) for index, delta, allocation in events]
    params = _params(trace.params, trace.named, matrix, other, weights)
    label = weights.label if weights is not None else trace.weight_format
    return replace(trace, ops=ops, memory_events=events, params=params, weight_format=label)


def weight_reads(trace: Trace) -> tuple[set[int], set[int]]:
    """The parameters (by storage id) read by matrix products as weights, and those read by any
    other operator."""
    matrix: set[int] = set()
    other: set[int] = set()
    for op in trace.ops:
        for sid, _ in op.reads:
            named = trace.named.get(sid)
            if named is None or named.kind != "param":
                continue
            (matrix if op.unit == MATRIX_UNIT and len(named.shape) >= 2 else other).add(sid)
    return matrix, other


def _size(named: Named, weights: WeightFormat | None, kv_cache_dtype: str | None) -> tuple[int, int] | None:
    """(dense bytes, stored bytes) of a named tensor under the what-if; None when it is unchanged."""
    dense = math.prod(named.shape) * named.element_size
    if named.kind == "param" and weights is not None:
        return dense, weights.nbytes(named.shape)
    if named.kind == "cache" and kv_cache_dtype is not None:
        return dense, cache_nbytes(kv_cache_dtype, named.shape, named.element_size)
    return None


def _scaled(nbytes: int, size: tuple[int, int] | None) -> int:
    """``nbytes`` of a tensor read or written, in its stored format: the whole tensor exactly, a part
    in proportion."""
    if size is None or not size[0]:
        return nbytes
    dense, stored = size
    sign = -1 if nbytes < 0 else 1
    nbytes = abs(nbytes)
    return sign * (stored if nbytes == dense else nbytes * stored // dense)


def _op(op: OpCall, sized: dict[int, tuple[int, int] | None], matrix: set[int],
        weights: WeightFormat | None) -> OpCall:
    is_matrix = op.unit == MATRIX_UNIT
    reads = tuple((sid, _scaled(n, sized.get(sid)) if is_matrix or sid not in matrix else n) for sid, n in op.reads)
    writes = tuple((sid, _scaled(n, sized.get(sid)) if sid not in matrix else n) for sid, n in op.writes)
    if reads == op.reads and writes == op.writes:
        return op
    dtype = op.dtype
    if is_matrix and weights is not None and weights.compute_dtype and any(sid in matrix for sid, _ in op.reads):
        dtype = weights.compute_dtype
    return replace(op, reads=reads, writes=writes, read_bytes=sum(n for _, n in reads),
                   write_bytes=sum(n for _, n in writes), dtype=dtype)


def _params(stats: ParamStats, named: dict[int, Named], matrix: set[int], other: set[int],
            weights: WeightFormat | None) -> ParamStats:
    """The parameters' bytes with the weights of matrix products in ``weights``: each moves from its
    dtype to the format's entry (a tied one stays in its dtype as well)."""
    if weights is None or not matrix:
        return stats
    by_dtype = dict(stats.param_bytes_by_dtype)
    for sid in matrix:
        param = named[sid]
        if sid not in other:
            by_dtype[param.dtype] = by_dtype.get(param.dtype, 0) - math.prod(param.shape) * param.element_size
        by_dtype[weights.name] = by_dtype.get(weights.name, 0) + weights.nbytes(param.shape)
    return replace(stats, param_bytes_by_dtype={k: v for k, v in by_dtype.items() if v})
