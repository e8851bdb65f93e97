"""Input shapes and ONNX shape inference.

The graph's inputs may have symbolic dimensions (``batch``, ``sequence``).  The user's sizes fix
them: a full shape, or a shape without the batch dimension (nncost's usual ``3x224x224``) to
which the batch size is prepended.  A symbolic *first* dimension left unset takes the batch size
(1 unless given); any other symbolic dimension left unset is an error that names the input.
A symbol fixed by one input is fixed in every input that uses it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from nncost.errors import BadRequest, ModelFileError, first_line

Dim = int | str | None  # a size, a symbol, or unknown
Shape = tuple[int, ...]


def graph_inputs(model: Any) -> list[Any]:
    """The graph's real inputs: not the initializers that old IR versions also list as inputs."""
    initializers = {t.name for t in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def declared_dims(value: Any) -> list[Dim]:
    if not value.type.HasField("tensor_type"):
        raise BadRequest(f"input {value.name!r} is not a tensor; nncost reads tensor inputs only")
    dims: list[Dim] = []
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def _describe(dims: list[Dim]) -> str:
    return "x".join(str(d) if d is not None else "?" for d in dims) or "scalar"


def resolve_inputs(model: Any, given: Mapping[str, Shape] | Shape | None,
                   batch_size: int | None) -> dict[str, Shape]:
    """The concrete shape of every graph input; a bare size is the only input's."""
    inputs = graph_inputs(model)
    declared = {value.name: declared_dims(value) for value in inputs}
    if isinstance(given, tuple):
        if len(declared) != 1:
            raise BadRequest(f"the model has {len(declared)} inputs ({', '.join(declared) or 'none'}): "
                             "give each size by name, NAME=1x3x224x224")
        given = {next(iter(declared)): given}
    given = dict(given or {})
    unknown = [name for name in given if name not in declared]
    if unknown:
        raise BadRequest(f"the model has no input {unknown[0]!r}; its inputs are: {', '.join(declared) or 'none'}")
    symbols: dict[str, int] = {}
    shapes: dict[str, Shape] = {}
    for name, size in given.items():
        dims = declared[name]
        if len(size) == len(dims) - 1:
            if isinstance(dims[0], int) and batch_size is not None and dims[0] != batch_size:
                raise BadRequest(f"input {name!r} has a fixed batch dimension {dims[0]} ({_describe(dims)}); "
                                 f"--batch {batch_size} cannot change it")
            first = dims[0] if isinstance(dims[0], int) else (batch_size or 1)
            size = (first, *size)
        if len(size) != len(dims):
            raise BadRequest(f"input {name!r} has {len(dims)} dimensions ({_describe(dims)}); "
                             f"got {'x'.join(map(str, size))}")
        for declared_dim, value in zip(dims, size, strict=True):
            if isinstance(declared_dim, int) and declared_dim != value:
                raise BadRequest(f"input {name!r} is {_describe(dims)}: its fixed dimension {declared_dim} "
                                 f"cannot be {value}")
            if isinstance(declared_dim, str):
                symbols.setdefault(declared_dim, value)
        shapes[name] = tuple(size)
    for name, dims in declared.items():
        if name in shapes:
            continue
        resolved: list[int] = []
        missing: list[str] = []
        for position, dim in enumerate(dims):
            if isinstance(dim, int):
                if position == 0 and batch_size is not None and len(dims) > 1 and dim != batch_size:
                    raise BadRequest(f"input {name!r} has a fixed batch dimension {dim} ({_describe(dims)}); "
                                     f"--batch {batch_size} cannot change it")
                resolved.append(dim)
            elif isinstance(dim, str) and dim in symbols:
                resolved.append(symbols[dim])
            elif position == 0 and len(dims) > 1:
                resolved.append(batch_size or 1)
                if isinstance(dim, str):
                    symbols[dim] = batch_size or 1
            else:
                missing.append(dim or f"dimension {position}")
        if missing:
            raise BadRequest(f"input {name!r} has symbolic dimensions {', '.join(map(str, missing))} "
                             f"({_describe(dims)}): give its size with --input {name}="
                             + "x".join(str(d) if isinstance(d, int) else "N" for d in dims))
        shapes[name] = tuple(resolved)
    return shapes


WEIGHT_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def with_input_shapes(model: Any, shapes: Mapping[str, Shape]) -> Any:
    """A copy of ``model`` whose graph inputs have the given concrete shapes, and whose large
    initializers keep their shapes but not their values (never needed, and shape inference
    copies the model several times)."""
    from nncost.capture.onnx.fold import MAX_ELEMENTS

    onnx = __import__("onnx")
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for tensor in fixed.graph.initializer:
        if math.prod(tensor.dims) > MAX_ELEMENTS:
            for name in WEIGHT_FIELDS:
                tensor.ClearField(name)
    for value in fixed.graph.input:
        if value.name not in shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in shapes[value.name]:
            dims.add().dim_value = size
    return fixed


def infer_once(model: Any) -> Any:
    onnx = __import__("onnx")
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # InferenceError, ValidationError, a C++ RuntimeError
        raise ModelFileError(f"ONNX shape inference failed on this model: {first_line(exc)}") from exc


def known_shapes(model: Any) -> dict[str, Shape]:
    """Every value whose shape inference found each dimension."""
    shapes: dict[str, Shape] = {}
    graph = model.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        if value.type.HasField("tensor_type") and tensor.HasField("shape"):
            dims = tensor.shape.dim
            if all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
                shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    for tensor in graph.initializer:
        shapes[tensor.name] = tuple(int(d) for d in tensor.dims)
    return shapes


def unknown_outputs(model: Any) -> bool:
    shapes = known_shapes(model)
    return any(name and name not in shapes for node in model.graph.node for name in node.output)


def constant_values(model: Any) -> dict[str, Any]:
    """Small stored tensors and Constant node values, as numpy arrays (for folding sizes only)."""
    from onnx import numpy_helper

    from nncost.capture.onnx.fold import MAX_ELEMENTS

    values: dict[str, Any] = {}
    for tensor in model.graph.initializer:
        if tensor.data_location != 1 and math.prod(tensor.dims) <= MAX_ELEMENTS:
            try:
                values[tensor.name] = numpy_helper.to_array(tensor)
            except Exception:  # a corrupt or unsupported tensor: it stays unknown
                continue
    return values


def constant_node_value(node: Any) -> Any:
    import numpy as np
    from onnx import numpy_helper

    for attribute in node.attribute:
        if attribute.name == "value" and attribute.HasField("t"):
            return numpy_helper.to_array(attribute.t)
        if attribute.name == "value_int":
            return np.array(attribute.i, dtype=np.int64)
        if attribute.name == "value_ints":
            return np.array(list(attribute.ints), dtype=np.int64)
        if attribute.name == "value_float":
            return np.array(attribute.f, dtype=np.float32)
        if attribute.name == "value_floats":
            return np.array(list(attribute.floats), dtype=np.float32)
    return None


def fold_round(model: Any, inferred: Any, values: dict[str, Any], folded: dict[str, Any]) -> bool:
    """Evaluate every node now computable; True when something new was folded."""
    from nncost.capture.onnx.fold import fold_node
    from nncost.capture.onnx.params import attribute_value

    shapes = known_shapes(inferred)
    progress = False
    for node in model.graph.node:
        names = [name for name in node.output if name]
        if not names or all(name in values for name in names):
            continue
        outputs: list[Any] | None
        try:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                outputs = [constant_node_value(node)]
            else:
                attrs = {a.name: attribute_value(a) for a in node.attribute}
                outputs = fold_node(node, values, shapes, attrs)
        except Exception:  # values the operator rejects: leave them to shape inference
            continue
        if outputs is None or any(x is None for x in outputs) or len(outputs) < len(node.output):
            continue
        for name, array in zip(node.output, outputs, strict=False):
            if name:
                values[name] = folded[name] = array
                shapes[name] = tuple(array.shape)  # so that a Shape of it folds in this round
        progress = True
    return progress


# ONNX Runtime's fused operators, which onnx's shape inference does not know: their first output
# has the first input's shape and type.
CONTRIB_SAME_SHAPE = frozenset({
    "Gelu", "FastGelu", "BiasGelu", "QuickGelu", "BiasAdd", "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization", "LayerNormalization", "SimplifiedLayerNormalization",
})


def contrib_output(node: Any, shapes: dict[str, Shape]) -> Shape | None:
    """The first output's shape of an ONNX Runtime contrib operator, from its inputs' shapes."""
    x = shapes.get(node.input[0]) if node.input else None
    if x is None:
        return None
    if node.op_type in CONTRIB_SAME_SHAPE:
        return x
    if node.op_type == "Attention" and len(node.input) > 1 and node.input[1] in shapes and len(x) == 3:
        sizes = next((list(a.ints) for a in node.attribute if a.name == "qkv_hidden_sizes"), None)
        return (x[0], x[1], sizes[2] if sizes else shapes[node.input[1]][1] // 3)
    if node.op_type == "MultiHeadAttention" and len(node.input) > 2 and node.input[2] in shapes and len(x) == 3:
        value = shapes[node.input[2]]
        return (x[0], x[1], value[-1] if len(value) == 3 else value[1] * value[3])
    return None


def contrib_round(model: Any, inferred: Any, contrib: dict[str, tuple[Shape, int]]) -> bool:
    """Shapes for the outputs of contrib operators that inference left unknown; True if any is new."""
    shapes = known_shapes(inferred)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.input, *inferred.graph.value_info]}
    types.update((t.name, t.data_type) for t in inferred.graph.initializer)
    progress = False
    for node in model.graph.node:
        if node.domain != "com.microsoft" or not node.output or node.output[0] in shapes:
            continue
        shape = contrib_output(node, shapes)
        if shape is not None and node.output[0] not in contrib:
            contrib[node.output[0]] = (shape, types.get(node.input[0], 1))
            progress = True
    return progress


def with_folded(model: Any, folded: dict[str, Any], contrib: dict[str, tuple[Shape, int]]) -> Any:
    """A copy of ``model`` where folded values are constants and the nodes that made them are gone."""
    onnx = __import__("onnx")
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [node for node in copy.graph.node if not all(name in folded for name in node.output if name)]
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    del copy.graph.value_info[:]
    copy.graph.value_info.extend(contrib_infos(contrib))
    copy.graph.initializer.extend(numpy_helper.from_array(array, name) for name, array in folded.items())
    return copy


def contrib_infos(contrib: dict[str, tuple[Shape, int]]) -> list[Any]:
    from onnx import helper

    return [helper.make_tensor_value_info(name, elem, list(shape)) for name, (shape, elem) in contrib.items()]


def merged(model: Any, inferred_copy: Any, folded: dict[str, Any], contrib: dict[str, tuple[Shape, int]]) -> Any:
    """``model`` with the shapes found on the folded copy."""
    onnx = __import__("onnx")
    from onnx import helper

    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.value_info[:]
    result.graph.value_info.extend(inferred_copy.graph.value_info)
    known = {v.name for v in inferred_copy.graph.value_info}
    result.graph.value_info.extend(v for v in contrib_infos(contrib) if v.name not in known)
    for name, array in folded.items():
        result.graph.value_info.append(
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)))
    outputs = {value.name: value for value in inferred_copy.graph.output}
    for value in result.graph.output:
        if value.name in outputs:
            value.CopyFrom(outputs[value.name])
    return result


def infer(model: Any) -> Any:
    """The model with every intermediate shape that shape inference finds, helped by folding the
    graph's own size computations (:mod:`nncost.capture.onnx.fold`) and by the output shapes of
    ONNX Runtime's fused operators."""
    from nncost.capture.onnx.fold import MAX_ROUNDS

    inferred = infer_once(model)
    if not unknown_outputs(inferred):
        return inferred
    values = constant_values(model)
    folded: dict[str, Any] = {}
    contrib: dict[str, tuple[Shape, int]] = {}
    for _ in range(MAX_ROUNDS):
        folded_now = fold_round(model, inferred, values, folded)
        if not (contrib_round(model, inferred, contrib) or folded_now):
            break
        inferred = merged(model, infer_once(with_folded(model, folded, contrib)), folded, contrib)
        if not unknown_outputs(inferred):
            break
    return inferred
