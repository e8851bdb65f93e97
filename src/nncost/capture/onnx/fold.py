"""Folding the small shape computations ONNX shape inference cannot follow.

Exporters compute sizes inside the graph (``Shape → Gather → Mul → Slice``).  ONNX's data
propagation follows only some of these, so a size can stay unknown and every node after it
uncosted.  With the inputs' shapes fixed, these computations have constant results: this module
evaluates them with numpy, on tensors of at most :data:`MAX_ELEMENTS` elements, and shape
inference runs again on a copy of the graph in which their results are constants.  The original
graph, every node of it, is what is costed; only its shapes come from the copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_ELEMENTS = 1 << 16
MAX_ROUNDS = 64

Evaluate = Callable[[list[Any], dict[str, Any]], list[Any]]


def _axes(inputs: list[Any], attrs: dict[str, Any], position: int) -> list[int] | None:
    if len(inputs) > position and inputs[position] is not None:
        return [int(a) for a in np.asarray(inputs[position]).reshape(-1)]
    return [int(a) for a in attrs["axes"]] if "axes" in attrs else None


def _unsqueeze(inputs: list[Any], attrs: dict[str, Any]) -> list[Any]:
    x = inputs[0]
    axes = _axes(inputs, attrs, 1) or []
    rank = x.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = np.expand_dims(x, axis)
    return [x]


def _squeeze(inputs: list[Any], attrs: dict[str, Any]) -> list[Any]:
    axes = _axes(inputs, attrs, 1)
    return [np.squeeze(inputs[0], axis=tuple(axes) if axes is not None else None)]


def _slice(inputs: list[Any], attrs: dict[str, Any]) -> list[Any]:
    x = inputs[0]
    if len(inputs) > 1:
        starts, ends = [int(v) for v in inputs[1].reshape(-1)], [int(v) for v in inputs[2].reshape(-1)]
        axes = _axes(inputs, {}, 3) or list(range(len(starts)))
        steps = [int(v) for v in inputs[4].reshape(-1)] if len(inputs) > 4 and inputs[4] is not None else None
    else:
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes, steps = list(attrs.get("axes", range(len(starts)))), None
    index = [slice(None)] * x.ndim
    for i, axis in enumerate(axes):
        index[axis % x.ndim] = slice(starts[i], ends[i], steps[i] if steps else 1)
    return [x[tuple(index)]]


def _reshape(inputs: list[Any], attrs: dict[str, Any]) -> list[Any]:
    x, shape = inputs[0], [int(v) for v in inputs[1].reshape(-1)]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [x.reshape(shape)]


def _divide(inputs: list[Any], attrs: dict[str, Any]) -> list[Any]:
    a, b = inputs
    if np.issubdtype(a.dtype, np.integer):
        return [np.trunc(a / b).astype(a.dtype)]  # ONNX integer division truncates
    return [a / b]


def _reduce(function: Callable[..., Any]) -> Evaluate:
    def evaluate(inputs: list[Any], attrs: dict[str, Any]) -> list[Any]:
        axes = _axes(inputs, attrs, 1)
        keep = bool(attrs.get("keepdims", 1))
        return [function(inputs[0], axis=tuple(axes) if axes else None, keepdims=keep)]

    return evaluate


def _scatter_nd(inputs: list[Any], attrs: dict[str, Any]) -> list[Any]:
    data, indices, updates = inputs
    out = data.copy()
    flat = indices.reshape(-1, indices.shape[-1])
    rest = updates.reshape(flat.shape[0], *updates.shape[indices.ndim - 1:])
    for index, update in zip(flat, rest, strict=True):
        out[tuple(int(i) for i in index)] = update
    return [out]


def _cast(inputs: list[Any], attrs: dict[str, Any]) -> list[Any]:
    from onnx import helper

    return [inputs[0].astype(helper.tensor_dtype_to_np_dtype(int(attrs["to"])))]


def _constant_of_shape(inputs: list[Any], attrs: dict[str, Any]) -> list[Any]:
    from onnx import numpy_helper

    value = numpy_helper.to_array(attrs["value"]).reshape(-1)[0] if "value" in attrs else np.float32(0)
    shape = tuple(int(d) for d in inputs[0].reshape(-1))
    if math.prod(shape) > MAX_ELEMENTS:
        raise ValueError("too large to fold")
    return [np.full(shape, value, dtype=np.asarray(value).dtype)]


def _binary(function: Callable[[Any, Any], Any]) -> Evaluate:
    return lambda inputs, attrs: [np.asarray(function(inputs[0], inputs[1]))]


def _unary(function: Callable[[Any], Any]) -> Evaluate:
    return lambda inputs, attrs: [np.asarray(function(inputs[0]))]


EVALUATORS: dict[str, Evaluate] = {
    "Identity": _unary(lambda x: x),
    "Gather": lambda i, a: [np.take(i[0], i[1].astype(np.int64), axis=int(a.get("axis", 0)))],
    "Concat": lambda i, a: [np.concatenate([x for x in i if x is not None], axis=int(a["axis"]))],
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Slice": _slice,
    "Reshape": _reshape,
    "Flatten": lambda i, a: [i[0].reshape(math.prod(i[0].shape[:int(a.get("axis", 1))]), -1)],
    "Transpose": lambda i, a: [np.transpose(i[0], a.get("perm"))],
    "Expand": lambda i, a: [np.broadcast_to(i[0], np.broadcast_shapes(i[0].shape, tuple(int(d) for d in i[1])))],
    "Tile": lambda i, a: [np.tile(i[0], [int(r) for r in i[1]])],
    "Cast": _cast,
    "ConstantOfShape": _constant_of_shape,
    "Range": lambda i, a: [np.arange(i[0], i[1], i[2]).astype(np.asarray(i[0]).dtype)],
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply), "Div": _divide,
    "Mod": _binary(np.mod), "Max": _binary(np.maximum), "Min": _binary(np.minimum),
    "Equal": _binary(np.equal), "Less": _binary(np.less), "Greater": _binary(np.greater),
    "And": _binary(np.logical_and), "Or": _binary(np.logical_or), "Not": _unary(np.logical_not),
    "Neg": _unary(np.negative), "Abs": _unary(np.abs), "Floor": _unary(np.floor), "Ceil": _unary(np.ceil),
    "Sqrt": _unary(np.sqrt),
    "Where": lambda i, a: [np.where(i[0], i[1], i[2])],
    "ReduceProd": _reduce(np.prod), "ReduceSum": _reduce(np.sum), "ReduceMax": _reduce(np.max),
    "ReduceMin": _reduce(np.min),
    "ScatterND": _scatter_nd,
}


def fold_node(node: Any, values: dict[str, Any], shapes: dict[str, tuple[int, ...]],
              attrs: dict[str, Any]) -> list[Any] | None:
    """The node's outputs when they are small constants computable now, else None."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in ("Shape", "Size"):
        shape = shapes.get(node.input[0]) if node.input else None
        if shape is None:
            return None
        if node.op_type == "Size":
            return [np.array(math.prod(shape), dtype=np.int64)]
        start, end = int(attrs.get("start", 0)), attrs.get("end")
        return [np.array(shape[start:None if end is None else int(end)], dtype=np.int64)]
    evaluate = EVALUATORS.get(node.op_type)
    if evaluate is None or any(name and name not in values for name in node.input):
        return None
    inputs = [values[name] if name else None for name in node.input]
    if any(x is not None and x.size > MAX_ELEMENTS for x in inputs):
        return None
    outputs = evaluate(inputs, attrs)
    if any(np.asarray(x).size > MAX_ELEMENTS for x in outputs):
        return None
    return [np.asarray(x) for x in outputs]
