"""The module tree of an exported graph, read from its node names or metadata.

* The TorchScript exporter names nodes by module scope: ``/layer1/layer1.0/conv1/Conv``; each
  segment is a module's qualified name, the last is the node's own.
* The ``torch.export``-based exporter stores ``pkg.torch.onnx.name_scopes`` (qualified names, the
  root first and the ATen node last) and ``pkg.torch.onnx.class_hierarchy`` (their classes).

A graph with neither (a hand-built or converted model) gets one flat layer per node.
"""

from __future__ import annotations

import ast
from typing import Any

Scope = tuple[tuple[str, str], ...]  # (qualified name, type) from the outermost module inward


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
    props = {p.key: p.value for p in node.metadata_props}
    names = _literal_list(props.get("pkg.torch.onnx.name_scopes", ""))
    if not names:
        return None
    types = _literal_list(props.get("pkg.torch.onnx.class_hierarchy", "")) or []
    if len(types) != len(names):
        types = [""] * len(names)
    scope = tuple((name, _short(kind)) for name, kind in zip(names[1:-1], types[1:-1], strict=True) if name)
    return scope, _short(types[0]) if types else ""


def name_scope(node: Any) -> Scope | None:
    """The scope from a TorchScript exporter node name, or None when the name has none."""
    if not node.name.startswith("/"):
        return None
    segments = [s for s in node.name.split("/")[1:-1] if s]
    return tuple((segment, "") for segment in segments)


def node_scopes(nodes: list[Any]) -> tuple[list[Scope], str] | None:
    """Each node's scope, and the root module's class; None when the graph carries no scopes."""
    scopes: list[Scope] = []
    root_type = ""
    found = False
    for node in nodes:
        from_metadata = metadata_scope(node)
        if from_metadata is not None:
            scope, root = from_metadata
            root_type = root_type or root
            found = True
        else:
            by_name = name_scope(node)
            found = found or by_name is not None
            scope = by_name or ()
        scopes.append(scope)
    return (scopes, root_type) if found else None
