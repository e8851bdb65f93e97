"""A transformer split over GPUs: its repeated blocks, and the Megatron split of each.

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

A link is quoted at its two-way bandwidth and sends one direction at a time: half of it
(:func:`link_seconds`), with no message latency: a lower bound.  Training layouts are timed so;
generation under tensor parallelism times its all-reduces as NCCL's ring where the catalogue
gives its figures (:mod:`nncost.analyses.tensor_parallel`).

Training over many GPUs (:mod:`nncost.analyses.parallel`) places these blocks on pipeline stages
and splits them for tensor parallelism; generation under tensor parallelism takes one GPU's
share of them (:mod:`nncost.analyses.tensor_parallel`).
"""

from __future__ import annotations

from collections import Counter

from nncost.compat import StrEnum
from nncost.errors import BadRequest
from nncost.records.report import Layer, Report


class Rejection(StrEnum):
    """Why a layout cannot run, as one reason shared by every layout it rules out: a plan
    (:func:`nncost.analyses.parallel.plan`) counts its rejected layouts by it, and shows its text."""

    NO_HEADS = "tensor parallelism splits attention heads, and this model's config names none"
    HEADS = "tensor parallelism does not divide the attention heads"
    KV_HEADS = "tensor parallelism does not divide the key-value heads"
    BEYOND_NODE = "tensor parallelism beyond one node"
    STAGES = "more pipeline stages than transformer blocks"
    GPUS = "the GPUs are not tensor × pipeline × data-parallel"
    NO_INTERCONNECT = "the catalogue gives no GPU-to-GPU bandwidth"
    NO_NETWORK = "spans nodes, and the catalogue gives no network bandwidth"
    GLOBAL_BATCH = "global batch is not a multiple of micro-batch × data-parallel GPUs"
    OVER_MEMORY = "over the device memory"


class LayoutRejected(BadRequest):
    """A layout this model or cluster cannot take: the message says why in its own numbers,
    ``reason`` as the :class:`Rejection` it shares with other layouts."""

    def __init__(self, reason: Rejection, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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


def check_tensor_parallel(heads: int | None, size: int, gpus_per_node: int | None = None,
                          hardware: str = "", kv_heads: int | None = None) -> None:
    """A clear error where ``size`` GPUs cannot split a model of ``heads`` attention heads (None: its
    config names none) and ``kv_heads`` key-value heads, or span more than one node of
    ``gpus_per_node`` GPUs of ``hardware``: tensor parallelism's all-reduces run within a node.

    The key-value heads of grouped-query attention are split as the query heads are, each GPU
    holding kv_heads / size of them, or, when there are fewer of them than GPUs, each repeated on
    size / kv_heads GPUs (Megatron-LM, vLLM): the size must divide them or be a multiple of them."""
    if heads is None:
        raise LayoutRejected(Rejection.NO_HEADS, str(Rejection.NO_HEADS))
    if heads % size:
        raise LayoutRejected(Rejection.HEADS, f"{heads} attention heads cannot be split over {size} GPUs: tensor "
                             "parallelism needs a divisor of the head count")
    if kv_heads is not None and kv_heads % size and size % kv_heads:
        raise LayoutRejected(Rejection.KV_HEADS, f"{kv_heads} key-value heads cannot be split over {size} GPUs: "
                             "tensor parallelism needs a divisor of the key-value head count, or a multiple of it "
                             "(each head then repeated)")
    if gpus_per_node is not None and size > gpus_per_node:
        raise LayoutRejected(Rejection.BEYOND_NODE, f"tensor parallelism runs within a node: at most {gpus_per_node} "
                             f"GPUs of {hardware}, not {size}")


def link_seconds(nbytes: float, interconnect_bandwidth: float) -> float:
    """Time to send ``nbytes`` one way over a link quoted at ``interconnect_bandwidth`` both ways."""
    return nbytes / (interconnect_bandwidth / 2)
