"""Which tensors stored in an ONNX file are parameters.

The file's weights are its initializers and the tensors of its ``Constant`` nodes.  Each is
counted once by name; an ``Identity`` of a stored tensor (the PyTorch exporter's way of sharing
one tensor between nodes) is the same tensor.  Tensors with equal bytes but different names are
*not* merged: two biases that are both zero (a randomly initialised model folded from
BatchNorm) are still two weights.

A stored tensor is **not** a parameter when every use of it is
- a shape, index, axis, size or scale argument (``Reshape``'s shape, ``Gather``'s indices,
  ``Slice``'s starts, ``Resize``'s scales...) or an integer tensor: a *shape/index constant*;
- a float scalar fed to elementwise arithmetic or ``Clip``'s bounds (``x + 3`` in a hard-swish,
  ReLU6's 6): a *scalar constant*.
``BatchNormalization``'s ``input_mean`` and ``input_var`` are running statistics: *buffers*.
Tensors no node reads are *unused*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Inputs (by position) that are shapes, indices, axes, sizes or scales, not weights.
SHAPE_POSITIONS: dict[str, frozenset[int]] = {
    op: frozenset(positions) for op, positions in {
        "Reshape": {1}, "Expand": {1}, "Tile": {1}, "Unsqueeze": {1}, "Squeeze": {1}, "Split": {1},
        "Slice": {1, 2, 3, 4}, "Gather": {1}, "GatherElements": {1}, "GatherND": {1}, "ScatterND": {1},
        "ScatterElements": {1}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "Upsample": {1}, "ConstantOfShape": {0},
        "Range": {0, 1, 2}, "TopK": {1}, "OneHot": {0, 1, 2}, "CumSum": {1}, "Trilu": {1},
        "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1}, "ReduceMin": {1}, "ReduceProd": {1},
        "ReduceL1": {1}, "ReduceL2": {1}, "ReduceLogSum": {1}, "ReduceLogSumExp": {1}, "ReduceSumSquare": {1},
        "Shape": {0}, "Size": {0}, "CastLike": {1}, "DequantizeLinear": {1, 2}, "QuantizeLinear": {1, 2},
        "Dropout": {1, 2}, "ReverseSequence": {1}, "Compress": {1}, "Where": {0},
        "LSTM": {4}, "GRU": {4}, "RNN": {4},  # sequence_lens
    }.items()
}
BUFFER_POSITIONS = {"BatchNormalization": frozenset({3, 4})}  # running mean and variance
SCALAR_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Min", "Max", "Clip", "Equal", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "Where", "Sqrt", "Mod", "And", "Or",
})
INTEGER_TYPES = frozenset({2, 3, 4, 5, 6, 7, 9, 12, 13})  # uint8..int64, bool, uint32, uint64
INDEX_TYPES = frozenset({6, 7, 9, 12, 13})  # int32, int64, bool, uint32, uint64: never weights


@dataclass
class StoredTensor:
    name: str
    numel: int
    nbytes: int
    dtype: str
    elem_type: int
    shape: tuple[int, ...] = ()
    uses: list[tuple[str, int]] = field(default_factory=list)  # (op_type, input position)


@dataclass
class ParamClasses:
    """Stored tensors by what they are; ``params`` and ``buffers`` map names to element counts."""

    params: dict[str, StoredTensor]
    buffers: dict[str, StoredTensor]
    excluded: dict[str, str]  # name → why it is not a parameter


def classify(tensor: StoredTensor) -> str:
    """``param``, ``buffer``, or why the tensor is neither."""
    if not tensor.uses:
        return "unused"
    if all(position in BUFFER_POSITIONS.get(op, ()) for op, position in tensor.uses):
        return "buffer"
    if tensor.elem_type in INDEX_TYPES or all(position in SHAPE_POSITIONS.get(op, ()) for op, position in tensor.uses):
        return "shape/index constant"
    if tensor.numel <= 1 and tensor.elem_type not in INTEGER_TYPES and all(op in SCALAR_OPS for op, _ in tensor.uses):
        return "scalar constant"
    return "param"


def classify_all(tensors: dict[str, StoredTensor]) -> ParamClasses:
    params: dict[str, StoredTensor] = {}
    buffers: dict[str, StoredTensor] = {}
    excluded: dict[str, str] = {}
    for name, tensor in tensors.items():
        kind = classify(tensor)
        if kind == "param":
            params[name] = tensor
        elif kind == "buffer":
            buffers[name] = tensor
        else:
            excluded[name] = kind
    return ParamClasses(params, buffers, excluded)


def attribute_value(attribute: Any) -> Any:
    """A node attribute as a plain Python value (tensors and graphs stay protos)."""
    from onnx import helper

    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in value]
    return value
