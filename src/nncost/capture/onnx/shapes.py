"""Input shapes and ONNX shape inference.

The graph's inputs may have symbolic dimensions (``batch``, ``sequence``).  The user's sizes fix
them: a full shape, or a shape without the batch dimension (nncost's usual ``3x224x224``) to
which the batch size is prepended.  A symbolic *first* dimension left unset takes the batch size
(1 unless given); any other symbolic dimension left unset is an error that names the input.
A symbol fixed by one input is fixed in every input that uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nncost.errors import BadRequest, ModelFileError

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


def with_input_shapes(model: Any, shapes: Mapping[str, Shape]) -> Any:
    """A copy of ``model`` whose graph inputs have the given concrete shapes."""
    onnx = __import__("onnx")
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name not in shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in shapes[value.name]:
            dims.add().dim_value = size
    return fixed


def infer(model: Any) -> Any:
    """The model with every intermediate shape ONNX shape inference can find."""
    onnx = __import__("onnx")
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # InferenceError, ValidationError, a C++ RuntimeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"ONNX shape inference failed on this model: {first}") from exc
