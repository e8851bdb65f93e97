"""From an inferred ONNX graph to nncost's :class:`~nncost.records.trace.Trace`.

Each node becomes one operator call, costed by its rule in :data:`nncost.rules.onnx.ONNX`, in the
layer of its module scope.  Bytes read are those of every input tensor (weights included), bytes
written those of every output; free operators (aliases, metadata, constants) have none.

Liveness follows the graph in its (topological) order: a node's outputs are allocated when it
runs, and a tensor dies after the last node that reads it or any alias of it (``Reshape``,
``Squeeze``, ``Flatten``, ``Identity`` outputs share their input's storage).  Graph inputs, stored
weights and the outputs of metadata operators (``Shape``, ``Constant``) are not activations;
graph outputs stay alive to the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nncost.capture.onnx.params import ParamClasses, StoredTensor, attribute_value, classify_all
from nncost.capture.onnx.scopes import Scope, node_scopes
from nncost.records.trace import LayerCall, OpCall, ParamStats, Trace
from nncost.rules.onnx import ONNX
from nncost.rules.onnx.movement import ALIASES, METADATA
from nncost.rules.registry import Shape

DEFAULT_DOMAINS = ("", "ai.onnx")


def op_key(node: Any) -> str:
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"


_ITEMSIZE: dict[int, tuple[int, str]] = {}


def element(elem_type: int) -> tuple[int, str]:
    """Bytes per element and dtype name of an ONNX element type (0 bytes when it has none)."""
    if elem_type not in _ITEMSIZE:
        from onnx import helper

        try:
            dtype = helper.tensor_dtype_to_np_dtype(elem_type)
            _ITEMSIZE[elem_type] = (int(dtype.itemsize), str(dtype))
        except Exception:  # STRING, UNDEFINED, or a type this onnx does not know
            _ITEMSIZE[elem_type] = (0, f"onnx type {elem_type}")
    return _ITEMSIZE[elem_type]


@dataclass
class Value:
    shape: Shape | None  # None when shape inference could not find every dimension
    elem_type: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * element(self.elem_type)[0] if self.shape is not None else 0


def value_of(info: Any) -> Value:
    kind = info.type
    if not kind.HasField("tensor_type"):
        return Value(None, 0)
    tensor = kind.tensor_type
    if not tensor.HasField("shape"):
        return Value(None, tensor.elem_type)
    dims = []
    for dim in tensor.shape.dim:
        if not dim.HasField("dim_value") or dim.dim_value < 0:
            return Value(None, tensor.elem_type)
        dims.append(int(dim.dim_value))
    return Value(tuple(dims), tensor.elem_type)


def stored_tensor(name: str, dims: Any, elem_type: int) -> StoredTensor:
    shape = tuple(max(int(d), 0) for d in dims)
    numel = math.prod(shape)
    size, dtype = element(elem_type)
    return StoredTensor(name=name, numel=numel, nbytes=numel * size, dtype=dtype, elem_type=elem_type, shape=shape)


CONSTANT_SCALARS: dict[str, tuple[int, tuple[int, ...] | None]] = {
    "value_float": (1, ()), "value_int": (7, ()), "value_floats": (1, None), "value_ints": (7, None),
}


def constant_tensor(node: Any) -> StoredTensor | None:
    """The tensor a ``Constant`` node holds (its shape and type; never its values)."""
    if not node.output:
        return None
    for attribute in node.attribute:
        if attribute.name == "value" and attribute.HasField("t"):
            return stored_tensor(node.output[0], attribute.t.dims, attribute.t.data_type)
        if attribute.name in CONSTANT_SCALARS:
            elem_type, dims = CONSTANT_SCALARS[attribute.name]
            if dims is None:
                dims = (len(attribute.floats) if attribute.name == "value_floats" else len(attribute.ints),)
            return stored_tensor(node.output[0], dims, elem_type)
    return None


@dataclass
class Graph:
    """The facts about one graph the trace is built from."""

    nodes: list[Any]
    values: dict[str, Value]
    stored: dict[str, StoredTensor]
    alias_of: dict[str, str]  # an Identity's output → the stored tensor it passes on
    inputs: list[str]
    outputs: list[str]
    classes: ParamClasses = field(init=False)


def read_graph(model: Any, input_shapes: dict[str, Shape]) -> Graph:
    graph = model.graph
    values: dict[str, Value] = {}
    for info in [*graph.value_info, *graph.output]:
        values[info.name] = value_of(info)
    inputs = [v.name for v in graph.input if v.name in input_shapes]
    for info in graph.input:
        if info.name in input_shapes:
            values[info.name] = Value(tuple(input_shapes[info.name]), info.type.tensor_type.elem_type)
    stored: dict[str, StoredTensor] = {}
    for tensor in graph.initializer:
        stored.setdefault(tensor.name, stored_tensor(tensor.name, tensor.dims, tensor.data_type))
    nodes = list(graph.node)
    alias_of: dict[str, str] = {}
    for node in nodes:
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
            constant = constant_tensor(node)
            if constant is not None:
                stored.setdefault(constant.name, constant)
        elif node.op_type == "Identity" and node.input and node.output:
            source = alias_of.get(node.input[0], node.input[0])
            if source in stored:
                alias_of[node.output[0]] = source
    for tensor in stored.values():  # a stored tensor's shape is its own, whatever inference says
        values[tensor.name] = Value(tensor.shape, tensor.elem_type)
    result = Graph(nodes, values, stored, alias_of, inputs, [o.name for o in graph.output])
    record_uses(result, nodes)
    result.classes = classify_all(stored)
    return result


def record_uses(graph: Graph, nodes: list[Any]) -> None:
    """Note every (operator, input position) that reads each stored tensor, in subgraphs too."""
    for node in nodes:
        if node.op_type == "Identity" and node.output and node.output[0] in graph.alias_of:
            continue
        for position, name in enumerate(node.input):
            source = graph.alias_of.get(name, name)
            if source in graph.stored:
                graph.stored[source].uses.append((node.op_type, position))
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.HasField("g") else []
            for subgraph in [*subgraphs, *attribute.graphs]:
                record_uses(graph, list(subgraph.node))


@dataclass
class Layers:
    calls: list[LayerCall]
    of_node: list[int]  # each node's innermost layer
    chains: list[list[int]]  # each layer's ancestors and itself, root first


def build_layers(graph: Graph, root_name: str) -> Layers:
    found = node_scopes(graph.nodes)
    root = LayerCall(index=0, name="", type=root_name, depth=0, parent=None, own_params=0, params=0)
    calls = [root]
    chains: list[list[int]] = [[0]]
    of_node: list[int] = []
    if found is None:  # no module scopes: one flat layer per node
        for position, node in enumerate(graph.nodes):
            calls.append(LayerCall(index=len(calls), name=node.name or f"{op_key(node)}_{position}",
                                   type=op_key(node), depth=1, parent=0, own_params=0, params=0))
            chains.append([0, len(calls) - 1])
            of_node.append(len(calls) - 1)
        return Layers(calls, of_node, chains)
    scopes, root_type = found
    root.type = root_type or root_name
    by_path: dict[Scope, int] = {(): 0}
    for scope in scopes:
        parent = 0
        for depth in range(1, len(scope) + 1):
            path = scope[:depth]
            if path not in by_path:
                name, kind, _ = path[-1]
                calls.append(LayerCall(index=len(calls), name=name, type=kind, depth=depth, parent=parent,
                                       own_params=0, params=0))
                chains.append([*chains[parent], len(calls) - 1])
                by_path[path] = len(calls) - 1
            parent = by_path[path]
        of_node.append(parent)
    name_untyped(calls, of_node, graph.nodes)
    return Layers(calls, of_node, chains)


def name_untyped(calls: list[LayerCall], of_node: list[int], nodes: list[Any]) -> None:
    """Give scopes without a class name the operator they ran, when they ran only one kind."""
    kinds: dict[int, set[str]] = {}
    for layer, node in zip(of_node, nodes, strict=True):
        kinds.setdefault(layer, set()).add(op_key(node))
    parents = {c.parent for c in calls}
    for call in calls:
        if call.type:
            continue
        ran = kinds.get(call.index, set())
        call.type = next(iter(ran)) if len(ran) == 1 and call.index not in parents else "module"


def node_inputs(graph: Graph, node: Any) -> tuple[Shape | None, ...]:
    return tuple(graph.values[name].shape if name and name in graph.values else None for name in node.input)


def cost_node(graph: Graph, node: Any, layer: int) -> OpCall:
    key = op_key(node)
    if ONNX.is_free(key):
        return OpCall(key, layer, 0, 0, 0, 0, True, unit="free")
    inputs = node_inputs(graph, node)
    outputs = [graph.values.get(name) for name in node.output if name]
    read = sum(graph.values[name].nbytes for name in node.input if name and name in graph.values)
    write = sum(v.nbytes for v in outputs if v is not None)
    rule = ONNX.get(key)
    if rule is None:
        return OpCall(key, layer, 0, 0, read, write, False)
    if any(name not in graph.values or graph.values[name].shape is None for name in node.input if name):
        return OpCall(f"{key} (shapes not inferred)", layer, 0, 0, read, write, False)
    # Outputs ONNX cannot infer (ONNX Runtime's contrib ops have no shape inference in onnx) are
    # left out: the rules of those ops read only their inputs' shapes.
    out = tuple(v.shape for v in outputs if v is not None and v.shape is not None)
    try:
        attrs = {a.name: attribute_value(a) for a in node.attribute}
        cost = rule.fn(inputs, attrs, out=out)
        unit = rule.unit_of(inputs, attrs, out=out)
    except Exception:  # attributes or shapes that contradict the operator's definition
        why = "inconsistent shapes or attributes" if len(out) == len(outputs) else "shapes not inferred"
        return OpCall(f"{key} ({why})", layer, 0, 0, read, write, False)
    return OpCall(key, layer, int(cost.macs), int(cost.flops), read, write, True, unit=unit, args=inputs,
                  out_shapes=out)


def memory_events(graph: Graph) -> list[tuple[int, int, int]]:
    """The allocation timeline: ``(node index, ±bytes, storage id)``."""
    storage_of: dict[str, int] = {}
    sizes: list[int] = []
    born: list[int] = []
    for index, node in enumerate(graph.nodes):
        key = op_key(node)
        if key in ALIASES or (node.op_type == "Identity" and node.domain in DEFAULT_DOMAINS):
            if node.input and node.input[0] in storage_of and node.output:
                storage_of[node.output[0]] = storage_of[node.input[0]]
            continue
        if key in METADATA:
            continue
        for name in node.output:
            if name and name in graph.values:
                storage_of[name] = len(sizes)
                sizes.append(graph.values[name].nbytes)
                born.append(index)
    last_use = list(born)
    for index, node in enumerate(graph.nodes):
        for name in node.input:
            if name in storage_of:
                last_use[storage_of[name]] = max(last_use[storage_of[name]], index)
    kept = {storage_of[name] for name in graph.outputs if name in storage_of}
    events: list[tuple[int, int, int]] = []
    dying: dict[int, list[int]] = {}
    for storage, last in enumerate(last_use):
        if storage not in kept:
            dying.setdefault(last, []).append(storage)
    by_birth: dict[int, list[int]] = {}
    for storage, index in enumerate(born):
        by_birth.setdefault(index, []).append(storage)
    for index in range(len(graph.nodes)):
        events.extend((index, sizes[s], s) for s in by_birth.get(index, ()))
        events.extend((index, -sizes[s], s) for s in dying.get(index, ()))
    return events


def layer_io(graph: Graph, layers: Layers) -> None:
    """Inputs, outputs and parameters of every layer, from which node produced and read each value."""
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        for name in node.output:
            if name:
                producer[name] = index
    chain_sets = [set(layers.chains[layers.of_node[i]]) for i in range(len(graph.nodes))]
    ins: list[dict[str, None]] = [{} for _ in layers.calls]
    outs: list[dict[str, None]] = [{} for _ in layers.calls]
    params: list[set[str]] = [set() for _ in layers.calls]
    own: list[set[str]] = [set() for _ in layers.calls]
    counted = graph.classes.params
    graph_outputs = set(graph.outputs)
    for index, node in enumerate(graph.nodes):
        if node.output and node.output[0] in graph.alias_of:  # an Identity passing a stored tensor on
            continue
        chain = layers.chains[layers.of_node[index]]
        for name in node.input:
            source = graph.alias_of.get(name, name)
            if source in counted:
                own[chain[-1]].add(source)
                for layer in chain:
                    params[layer].add(source)
                continue
            if not name or source in graph.stored or name not in graph.values:
                continue
            made_by = producer.get(name)
            for layer in chain:
                if made_by is None or layer not in chain_sets[made_by]:
                    ins[layer].setdefault(name)
        for name in node.output:
            if name and name in graph_outputs:
                for layer in chain:
                    outs[layer].setdefault(name)
    for index, node in enumerate(graph.nodes):  # a value read outside the layer that made it
        for name in node.input:
            made_by = producer.get(name)
            if made_by is None:
                continue
            for layer in layers.chains[layers.of_node[made_by]]:
                if layer not in chain_sets[index]:
                    outs[layer].setdefault(name)
    for name in graph.inputs:
        ins[0].setdefault(name)
    for call in layers.calls:
        i = call.index
        call.input_shapes = [s for s in (graph.values[n].shape for n in ins[i]) if s is not None]
        known_outs = [graph.values[n] for n in outs[i] if n in graph.values]
        call.output_shapes = [v.shape for v in known_outs if v.shape is not None]
        call.output_bytes = sum(v.nbytes for v in known_outs)
        call.params = sum(counted[n].numel for n in params[i])
        call.own_params = sum(counted[n].numel for n in own[i])


def param_stats(classes: ParamClasses) -> ParamStats:
    by_dtype: dict[str, int] = {}
    for tensor in classes.params.values():
        by_dtype[tensor.dtype] = by_dtype.get(tensor.dtype, 0) + tensor.nbytes
    total = sum(t.numel for t in classes.params.values())
    return ParamStats(params=total, trainable_params=total, buffers=sum(t.numel for t in classes.buffers.values()),
                      buffer_bytes=sum(t.nbytes for t in classes.buffers.values()), param_bytes_by_dtype=by_dtype)


def build_trace(model: Any, input_shapes: dict[str, Shape], label: str) -> tuple[Trace, ParamClasses]:
    graph = read_graph(model, input_shapes)
    layers = build_layers(graph, model.graph.name or "graph")
    ops = [cost_node(graph, node, layers.of_node[i]) for i, node in enumerate(graph.nodes)]
    layer_io(graph, layers)
    first = input_shapes[graph.inputs[0]] if graph.inputs else ()
    trace = Trace(
        model=label,
        execution="onnx",
        device="none",
        batch_size=first[0] if len(first) >= 1 and first[0] > 0 else 1,
        layers=layers.calls,
        ops=ops,
        memory_events=memory_events(graph),
        params=param_stats(graph.classes),
        input_bytes=sum(graph.values[name].nbytes for name in graph.inputs),
    )
    return trace, graph.classes
