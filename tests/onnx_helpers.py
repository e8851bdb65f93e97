"""Small ONNX graphs built with onnx.helper for the ONNX tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def tensor(name: str, shape: Sequence[int], dtype: Any = np.float32, value: Any = None) -> onnx.TensorProto:
    data = np.zeros(tuple(shape), dtype=dtype) if value is None else np.asarray(value, dtype=dtype)
    return numpy_helper.from_array(data, name)


def graph_model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, Sequence[int | str]],
    outputs: Sequence[str],
    initializers: Sequence[onnx.TensorProto] = (),
    opset: int = 21,
    extra_opsets: dict[str, int] | None = None,
    name: str = "test",
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_empty_tensor_value_info(n) for n in outputs],
        list(initializers),
    )
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    # graph outputs must declare a type and a rank: take them from shape inference, without sizes
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.output}
    for value in model.graph.output:
        found = inferred.get(value.name)
        rank = len(found.type.tensor_type.shape.dim) if found is not None and found.type.HasField("tensor_type") else 0
        value.CopyFrom(helper.make_tensor_value_info(value.name, FLOAT, [None] * rank))
    return model


def one_node(op: str, inputs: dict[str, Sequence[int]], weights: Sequence[onnx.TensorProto] = (),
             n_outputs: int = 1, domain: str = "", opset: int = 21, **attrs: Any) -> onnx.ModelProto:
    names = [*inputs, *(w.name for w in weights)]
    outputs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outputs, name=f"/{op.lower()}/{op}", domain=domain, **attrs)
    extra = {domain: 1} if domain else None
    return graph_model([node], inputs, outputs, weights, opset=opset, extra_opsets=extra)
