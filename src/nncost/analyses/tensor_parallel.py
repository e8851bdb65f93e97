"""Tensor parallelism in the Megatron layout: what one of N GPUs holds, computes and sends.

Megatron-LM (Shoeybi et al., 2019, §3) splits each transformer layer's attention by heads (the
query, key and value projections by columns, the output projection by rows) and its MLP (the
first projections by columns, the last by rows), so each GPU runs 1/N of both, and joins the
halves with one all-reduce after the attention and one after the MLP.  The embedding and the
output projection are split by vocabulary; the norms and the residual additions are repeated
on every GPU.

nncost finds that layout in the trace, not in the model's names: a transformer layer is one of
several calls of the same module type under one parent (``model.layers.0``, ``.1``, …); inside
it, a child whose calls run matrix work (the attention, the MLP) is split, any other (a norm)
repeated, and the layer's own operators (the residual adds) repeated.  Outside the layers, a
module with weights that runs matrix products or lookups (the embedding, the output
projection) is split by vocabulary, the rest repeated.  A split operator's
MACs, FLOPs, bytes and allocations are divided by N (rounded up).

An all-reduce of ``b`` bytes over a ring of N GPUs sends and receives ``2·(N−1)/N·b`` bytes on
each GPU's link, one direction at a time: half the datasheet's two-way bandwidth.  Each layer
all-reduces its output twice; the embedding's output is all-reduced and the logits gathered
(``(N−1)/N`` of their bytes).  No message latency is added: a lower bound.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from nncost.analyses.generation import Segment
from nncost.errors import BadRequest
from nncost.records.report import Layer, Report
from nncost.records.trace import OpCall, Trace

SPLIT_UNITS = ("matmul", "attention", "gather")


def transformer_layers(report: Report) -> set[int]:
    """The indices of the repeated blocks: non-leaf calls of one module type that occur at
    least twice under the same parent."""
    counts = Counter((layer.parent, layer.type) for layer in report.layers if not layer.is_leaf)
    return {layer.index for layer in report.layers
            if not layer.is_leaf and layer.parent is not None and counts[(layer.parent, layer.type)] >= 2}


def pipeline_blocks(report: Report) -> list[Layer]:
    """The transformer blocks a pipeline places, in call order: the largest group of repeated
    blocks (:func:`transformer_layers`) under one parent (``model.layers.0`` … ``.79``; the
    experts inside a block are groups of their own, smaller); none when nothing repeats."""
    blocks = transformer_layers(report)
    groups: dict[tuple[int | None, str], list[Layer]] = {}
    for layer in report.layers:
        if layer.index in blocks:
            groups.setdefault((layer.parent, layer.type), []).append(layer)
    return max(groups.values(), key=len) if groups else []


def split_layers(report: Report) -> set[int]:
    """The layer calls whose own operators each GPU runs 1/N of (this module's docstring)."""
    children: dict[int, list[Layer]] = {}
    for layer in report.layers:
        if layer.parent is not None:
            children.setdefault(layer.parent, []).append(layer)

    def subtree(layer: Layer) -> list[Layer]:
        found = [layer]
        for child in children.get(layer.index, []):
            found += subtree(child)
        return found

    def runs_matrix_work(layers: list[Layer]) -> bool:
        return any(op.unit in ("matmul", "attention") for layer in layers for op in layer.self_ops)

    blocks = transformer_layers(report)
    inside: set[int] = set()
    split: set[int] = set()
    for block in (layer for layer in report.layers if layer.index in blocks):
        for child in children.get(block.index, []):
            part = subtree(child)
            inside.update(layer.index for layer in part)
            if runs_matrix_work(part):
                split.update(layer.index for layer in part)
        inside.add(block.index)
    for layer in report.layers:  # outside every block (``inside`` holds each block's whole subtree)
        if layer.index not in inside and layer.own_params and any(op.unit in SPLIT_UNITS for op in layer.self_ops):
            split.add(layer.index)
    return split


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


def communication_bytes(report: Report, split: set[int], n: int) -> int:
    """Bytes each GPU sends on its link in one call of the model: two all-reduces of every
    transformer layer's output, the embedding's all-reduce and the logits' gather."""
    if n == 1:
        return 0
    ring = 2 * (n - 1) / n
    blocks = transformer_layers(report)
    inside = _under_blocks(report, blocks)
    total = sum(2 * ring * layer.output_bytes for layer in report.layers if layer.index in blocks)
    for layer in report.layers:
        if layer.index in split and layer.index not in inside and layer.is_leaf:
            units = {op.unit for op in layer.self_ops}
            if "gather" in units:
                total += ring * layer.output_bytes  # the embedding's partial rows, all-reduced
            elif "matmul" in units:
                total += (n - 1) / n * layer.output_bytes  # the logits, gathered
    return round(total)


def check_tensor_parallel(heads: int | None, size: int, gpus_per_node: int | None = None,
                          hardware: str = "", kv_heads: int | None = None) -> None:
    """A clear error where ``size`` GPUs cannot split a model of ``heads`` attention heads (None: its
    config names none) and ``kv_heads`` key-value heads, or span more than one node of
    ``gpus_per_node`` GPUs of ``hardware``: tensor parallelism's all-reduces run within a node.

    The key-value heads of grouped-query attention are split as the query heads are, each GPU
    holding kv_heads / size of them, or, when there are fewer of them than GPUs, each repeated on
    size / kv_heads GPUs (Megatron-LM, vLLM): the size must divide them or be a multiple of them."""
    if heads is None:
        raise BadRequest("tensor parallelism splits attention heads, and this model's config names none")
    if heads % size:
        raise BadRequest(f"{heads} attention heads cannot be split over {size} GPUs: tensor parallelism needs a "
                         "divisor of the head count")
    if kv_heads is not None and kv_heads % size and size % kv_heads:
        raise BadRequest(f"{kv_heads} key-value heads cannot be split over {size} GPUs: tensor parallelism needs a "
                         "divisor of the key-value head count, or a multiple of it (each head then repeated)")
    if gpus_per_node is not None and size > gpus_per_node:
        raise BadRequest(f"tensor parallelism runs within a node: at most {gpus_per_node} GPUs of {hardware}, "
                         f"not {size}")


def link_seconds(nbytes: float, interconnect_bandwidth: float) -> float:
    """Time to send ``nbytes`` one way over a link quoted at ``interconnect_bandwidth`` both ways."""
    return nbytes / (interconnect_bandwidth / 2)
