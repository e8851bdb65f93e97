"""The module tree of an exported graph, read from its node names or metadata.

* The TorchScript exporter names nodes by module scope: ``/layer1/layer1.0/conv1/Conv``, the
  last segment the node's own.  A segment is the module's attribute name, except that a child
  of a container is named after the container's segment (``layer1.0``, and ``downsample.0`` in
  ``/layer2/layer2.0/downsample/downsample.0/Conv``): the qualified names are rebuilt from that.
* The ``torch.export``-based exporter stores ``pkg.torch.onnx.name_scopes`` (qualified names, the
  root first and the ATen node last) and ``pkg.torch.onnx.class_hierarchy`` (their classes).

A graph with neither (a hand-built or converted model) gets one flat layer per node.
"""

from __future__ import annotations

import ast
import re
from typing import Any

Scope = tuple[tuple[str, str, str], ...]  # (qualified name, type, key) from the outermost module inward
REPEATED_CALL = re.compile(r"^(.+)_(\d+)$")


def _literal_list(text: str) -> list[str] | None:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def metadata_scope(node: Any) -> tuple[Scope, str] | None:
    """The scope and the root's class from the dynamo exporter's metadata, if present."""
    props = {p.key: p.value for p in getattr(node, "metadata_props", ())}  # onnx >= 1.16
    names = _literal_list(props.get("pkg.torch.onnx.name_scopes", ""))
    if not names:
        return None
    types = _literal_list(props.get("pkg.torch.onnx.class_hierarchy", "")) or []
    if len(types) != len(names):
        types = [""] * len(names)
    scope = tuple((name, _short(kind), name) for name, kind in zip(names[1:-1], types[1:-1], strict=True) if name)
    return scope, _short(types[0]) if types else ""


def name_segments(node: Any) -> list[str] | None:
    """The scope segments of a TorchScript exporter node name, or None when the name has none."""
    if not node.name.startswith("/"):
        return None
    return [s for s in node.name.split("/")[1:-1] if s]


def qualify(segments: list[str], siblings: dict[tuple[str, ...], set[str]]) -> Scope:
    """Qualified module names from TorchScript scope segments.

    A second call of a module gets its segment with ``_1`` appended (``relu_1`` beside ``relu``):
    it keeps its own row, under the module's name, as a second call does on the PyTorch path.
    """
    scope: list[tuple[str, str, str]] = []
    parent_segment = parent_name = ""
    for depth, raw in enumerate(segments):
        segment = raw
        repeated = REPEATED_CALL.match(raw)
        if repeated and repeated.group(1) in siblings.get(tuple(segments[:depth]), ()):
            segment = repeated.group(1)
        if parent_segment and segment.startswith(parent_segment + "."):  # a container's child
            name = parent_name + segment[len(parent_segment):]
        else:
            name = f"{parent_name}.{segment}" if parent_name else segment
        scope.append((name, "", raw))
        parent_segment, parent_name = segment, name
    return tuple(scope)


def node_scopes(nodes: list[Any]) -> tuple[list[Scope], str] | None:
    """Each node's scope, and the root module's class; None when the graph carries no scopes."""
    from_metadata = [metadata_scope(node) for node in nodes]
    segments = [name_segments(node) for node in nodes]
    if all(m is None for m in from_metadata) and all(s is None for s in segments):
        return None
    siblings: dict[tuple[str, ...], set[str]] = {}
    for path in segments:
        for depth, segment in enumerate(path or []):
            siblings.setdefault(tuple((path or [])[:depth]), set()).add(segment)
    scopes: list[Scope] = []
    root_type = ""
    for metadata, path in zip(from_metadata, segments, strict=True):
        if metadata is not None:
            scopes.append(metadata[0])
            root_type = root_type or metadata[1]
        else:
            scopes.append(qualify(path, siblings) if path else ())
    return scopes, root_type
