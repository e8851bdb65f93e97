"""The teaching view: the formulas behind one layer's figures, with its numbers plugged in.

The closed forms of the classic tutorials (``Co × (Kw × Kh × Cin + 1)`` parameters,
``H × W × M × C × K × K`` multiplications), shown for the layer as nncost counted it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from nncost.records.trace import token_rows
from nncost.rules import ATEN
from nncost.rules.onnx import ONNX
from nncost.rules.registry import op_label

if TYPE_CHECKING:
    from nncost.records.report import Layer
    from nncost.records.trace import OpCall


def _n(value: int) -> str:
    return f"{value:,}"


def _dims(values: Any) -> list[int]:
    return list(values) if isinstance(values, (list, tuple)) else [values]


def params_formula(layer: Layer) -> str | None:
    """The closed form of the layer's own parameters, or None when there is none to show."""
    c = layer.module_config
    bias = 1 if c.get("bias") else 0
    kind = layer.type
    if "Conv" in kind and "out_channels" in c:
        k = _dims(c["kernel_size"])
        groups = c.get("groups", 1)
        if "Transpose" in kind:
            value = c["in_channels"] * (c["out_channels"] // groups) * math.prod(k) + bias * c["out_channels"]
            return (f"{kind} params = Cin × Co/groups × {'·'.join('K' for _ in k)} + bias·Co = "
                    f"{c['in_channels']} × {c['out_channels']}/{groups} × {'·'.join(map(str, k))}"
                    f" + {bias}·{c['out_channels']} = {_n(value)}")
        per_filter = math.prod(k) * c["in_channels"] // groups
        value = c["out_channels"] * (per_filter + bias)
        return (f"{kind} params = Co × ({'·'.join('K' for _ in k)}·Cin/groups + bias) = "
                f"{c['out_channels']} × ({'·'.join(map(str, k))}·{c['in_channels']}/{groups} + {bias}) = {_n(value)}")
    if "in_features" in c and "out_features" in c:
        value = (c["in_features"] + bias) * c["out_features"]
        return (f"{kind} params = (D1 + bias) × D2 = ({c['in_features']} + {bias}) × {c['out_features']}"
                f" = {_n(value)}")
    if "nx" in c and "nf" in c:  # transformers' Conv1D: a linear layer with a transposed weight
        value = (c["nx"] + bias) * c["nf"]
        return f"{kind} params = (nx + bias) × nf = ({c['nx']} + {bias}) × {c['nf']} = {_n(value)}"
    if "BatchNorm" in kind and "num_features" in c:
        return (f"{kind} params = 2 × C (γ and β; running mean and variance are buffers) = "
                f"2 × {c['num_features']} = {_n(layer.own_params)}")
    if "num_embeddings" in c and "embedding_dim" in c:
        return (f"{kind} params = rows × dim = {c['num_embeddings']} × {c['embedding_dim']} = "
                f"{_n(c['num_embeddings'] * c['embedding_dim'])}")
    if layer.own_params:
        return f"{kind} params = sum of its own parameter tensors = {_n(layer.own_params)}"
    return None


def op_formula(op: OpCall) -> str:
    """One operator call: its rule's formula with the call's shapes, and the result."""
    head, formula = _op_parts(op)
    if formula is None:
        return f"{head}: UNCOUNTED (no cost rule); reads {_n(op.read_bytes)} B, writes {_n(op.write_bytes)} B"
    return f"{head}: {formula}\n    → MACs = {_n(op.macs)}, FLOPs = {_n(op.flops)}"


def _op_parts(op: OpCall) -> tuple[str, str | None]:
    """The operator's label and its rule's formula with the call's shapes plugged in where the
    rule knows how (:meth:`~nncost.rules.registry.Rule.plugged`; None: no rule counts it)."""
    rule = ATEN.get(op.op)
    head = op_label(op.op)
    if rule is None and ONNX.get(op.op) is not None:  # ONNX op types are CamelCase: no clash with ATen
        rule, head = ONNX.get(op.op), f"onnx {op.op}"
    if rule is None:
        return head, None
    return head, rule.plugged(*op.args, out=op.out_shapes)


def routed_lines(layer: Layer) -> list[str]:
    """Each grouped product of the layer that routed rows through slices of a parameter (the
    experts of a mixture of experts): the parameter one token uses, and each expert's share under
    uniform routing, said to be an assumption (the trace has one product for all the experts)."""
    lines = []
    tokens = token_rows(layer.input_shapes)
    for op in layer.self_ops:
        routed = op.routed
        if routed is None:
            continue
        head = (f"  {op_label(op.op)}: each of {_n(routed.rows)} rows reads 1 of {routed.slices} slices of"
                f" {routed.param} ({_n(routed.numel)} params)")
        if tokens:
            share = routed.share(tokens)
            per_token = routed.rows / tokens
            lines.append(f"{head}; {_n(tokens)} tokens, {per_token:g} slices per token (top-k): each token uses"
                         f" {share.numerator}/{share.denominator} of it, {_n(round(routed.numel * share))} active")
        else:
            lines.append(head)
        lines.append(f"    per expert, if the routing were uniform (an assumption; the routing is data, and"
                     f" which experts a token picks does not change the total): {routed.rows / routed.slices:g}"
                     f" rows, MACs {_n(op.macs // routed.slices)}")
        if tokens:
            from nncost.analyses.reads import experts_read

            top_k, expected = experts_read(routed, tokens)
            lines.append(f"    bytes read: the slices its tokens route to, E·(1 − (1 − k/E)^T) = {expected:.3g} of"
                         f" E = {routed.slices} (T = {_n(tokens)}, k = {top_k:g}), {ROUTING_ASSUMED}")
    return lines


ROUTING_ASSUMED = "routing assumed uniform and independent from token to token"



def explain(layer: Layer) -> str:
    lines = [
        f"{layer.label} ({layer.type})",
        f"  input {', '.join('×'.join(map(str, s)) for s in layer.input_shapes) or '-'}"
        f" → output {', '.join('×'.join(map(str, s)) for s in layer.output_shapes) or '-'}",
    ]
    formula = params_formula(layer)
    if formula:
        lines.append("  " + formula)
    if layer.params != layer.own_params:
        lines.append(f"  params in the whole subtree: {_n(layer.params)}")
    grouped: dict[str, list[OpCall]] = {}
    for op in layer.self_ops:
        grouped.setdefault(op.op, []).append(op)
    shown = 0
    for ops in grouped.values():
        for op in ops[:3]:
            lines.append("  " + op_formula(op).replace("\n", "\n  "))
            shown += 1
        if len(ops) > 3:
            rest = ops[3:]
            lines.append(f"  … and {len(rest)} more {rest[0].op} calls: MACs {_n(sum(o.macs for o in rest))},"
                         f" FLOPs {_n(sum(o.flops for o in rest))}")
    lines.extend(routed_lines(layer))
    if not layer.is_leaf:
        own_macs = sum(op.macs for op in layer.self_ops)
        own_flops = sum(op.flops for op in layer.self_ops)
        lines.append(f"  children: MACs {_n(layer.macs - own_macs)}, FLOPs {_n(layer.flops - own_flops)}")
    lines.append(f"  total: MACs {_n(layer.macs)}, FLOPs {_n(layer.flops)}, output {_n(layer.output_bytes)} B,"
                 f" read {_n(layer.read_bytes)} B, written {_n(layer.write_bytes)} B")
    return "\n".join(lines)


def explanation(layer: Layer) -> dict[str, Any]:
    """The parts of :func:`explain` as plain data, for ``--explain LAYER --format json``: the
    layer, its parameters' closed form, every operator call with its formula and figures (none
    left out), the routed products' lines, and the totals."""
    own_macs = sum(op.macs for op in layer.self_ops)
    own_flops = sum(op.flops for op in layer.self_ops)
    ops = []
    for op in layer.self_ops:
        head, formula = _op_parts(op)
        ops.append({"op": head, "formula": formula, "counted": formula is not None, "macs": op.macs,
                    "flops": op.flops, "read_bytes": op.read_bytes, "write_bytes": op.write_bytes})
    return {
        "layer": layer.label,
        "name": layer.name,
        "type": layer.type,
        "input_shapes": [list(s) for s in layer.input_shapes],
        "output_shapes": [list(s) for s in layer.output_shapes],
        "params_formula": params_formula(layer),
        "own_params": layer.own_params,
        "params": layer.params,
        "ops": ops,
        "routed": [line.strip() for line in routed_lines(layer)],
        "children": None if layer.is_leaf else {"macs": layer.macs - own_macs, "flops": layer.flops - own_flops},
        "totals": {"macs": layer.macs, "flops": layer.flops, "output_bytes": layer.output_bytes,
                   "read_bytes": layer.read_bytes, "write_bytes": layer.write_bytes},
    }
