"""Generation under tensor parallelism: what one of N GPUs computes and sends.

Each GPU runs the layers :func:`~nncost.analyses.split.split_layers` finds (Megatron's layout)
for 1/N of their work: a split operator's MACs, FLOPs, bytes and allocations are divided by N
(rounded up), in the prefill and in every decode step.

An all-reduce of ``b`` bytes over a ring of N GPUs sends and receives ``2·(N−1)/N·b`` bytes on
each GPU's link (nccl-tests' bus bytes).  Each layer all-reduces its output twice; the
embedding's output is all-reduced and the logits gathered (``(N−1)/N`` of their bytes): the
:func:`collectives`, each timed as NCCL's ring where the catalogue gives its figures
(:class:`nncost.hardware.catalogue.RingCollectives`), else at half the link's two-way datasheet
bandwidth with no latency.
"""

from __future__ import annotations

from dataclasses import replace

from nncost.analyses.generation import Segment
from nncost.analyses.split import transformer_layers
from nncost.records.report import Layer, Report
from nncost.records.trace import OpCall, Trace


def _under_blocks(report: Report, blocks: set[int]) -> set[int]:
    """The layers that are one of ``blocks`` or inside one, in one walk up the parents."""
    by_index = {layer.index: layer for layer in report.layers}
    under: dict[int, bool] = {}

    def is_under(index: int) -> bool:
        if index not in under:
            parent = by_index[index].parent
            under[index] = index in blocks or (parent is not None and is_under(parent))
        return under[index]

    return {layer.index for layer in report.layers if is_under(layer.index)}


def _divided(value: int, n: int) -> int:
    return -(-value // n)


def _op_share(op: OpCall, n: int) -> OpCall:
    return replace(op, macs=_divided(op.macs, n), flops=_divided(op.flops, n), read_bytes=_divided(op.read_bytes, n),
                   write_bytes=_divided(op.write_bytes, n))


def shard_trace(trace: Trace, split: set[int], n: int) -> Trace:
    """One GPU's share of ``trace``: split layers' operators and allocations divided by ``n``."""
    ops = [_op_share(op, n) if op.layer in split else op for op in trace.ops]
    events = [(index, _divided(delta, n) if delta > 0 else -_divided(-delta, n), allocation)
              if 0 <= index < len(trace.ops) and trace.ops[index].layer in split else (index, delta, allocation)
              for index, delta, allocation in trace.memory_events]
    return replace(trace, ops=ops, memory_events=events)


def shard_segments(segments: list[Segment], split: set[int], n: int) -> list[Segment]:
    """One GPU's share of every decode step: each split operator's line divided by ``n``."""
    sharded = []
    for segment in segments:
        slopes = tuple((-(-slope[0] // n), -(-slope[1] // n), -(-slope[2] // n), -(-slope[3] // n))
                       if op.layer in split else slope for op, slope in zip(segment.base.ops, segment.slopes,
                                                                            strict=True))
        sharded.append(replace(segment, base=shard_trace(segment.base, split, n), slopes=slopes))
    return sharded


def collectives(report: Report, split: set[int], n: int) -> list[tuple[int, float]]:
    """The collectives each GPU joins in one call of the model, in call order, each as (its ring
    steps, the bytes each GPU sends): an all-reduce (2·(N−1) steps, ``2·(N−1)/N`` of its bytes)
    after the attention and one after the MLP of every transformer layer (the outermost repeated
    blocks: an MoE's experts inside a layer join none of their own), the embedding's all-reduce
    and the logits' all-gather (N−1 steps, ``(N−1)/N`` of their bytes)."""
    if n == 1:
        return []
    ring = 2 * (n - 1) / n
    blocks = transformer_layers(report)
    by_index = {layer.index: layer for layer in report.layers}
    outermost = {index for index in blocks if not _under_blocks_above(by_index, index, blocks)}
    inside = _under_blocks(report, blocks)
    calls: list[tuple[int, float]] = []
    for layer in report.layers:
        if layer.index in outermost:
            calls += [(2 * (n - 1), ring * layer.output_bytes)] * 2
        elif layer.index in split and layer.index not in inside and layer.is_leaf:
            units = {op.unit for op in layer.self_ops}
            if "gather" in units:
                calls.append((2 * (n - 1), ring * layer.output_bytes))  # the embedding's partial rows
            elif "matmul" in units:
                calls.append((n - 1, (n - 1) / n * layer.output_bytes))  # the logits, gathered
    return calls


def _under_blocks_above(by_index: dict[int, Layer], index: int, blocks: set[int]) -> bool:
    """Whether a parent of layer ``index`` is one of ``blocks``."""
    parent = by_index[index].parent
    while parent is not None:
        if parent in blocks:
            return True
        parent = by_index[parent].parent
    return False


def communication_bytes(report: Report, split: set[int], n: int) -> int:
    """Bytes each GPU sends on its link in one call of the model: its :func:`collectives`'."""
    return round(sum(sent for _, sent in collectives(report, split, n)))
