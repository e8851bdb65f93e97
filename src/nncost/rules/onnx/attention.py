"""ONNX attention: the opset-23 ``Attention`` and ONNX Runtime's ``com.microsoft`` fused ops.

Counted dense, as the ATen attention rule counts it: ``Q·Kᵀ`` and ``P·V`` in full, also when a
mask is causal, ``MACs = B·H·L·S·(E + Ev)``; FLOPs add 6 per score (scale and softmax).
``com.microsoft::Attention`` also projects its input through the packed ``(D, 3·D)`` QKV weight
(``B·L·D·3D`` MACs, plus its bias); it has no output projection.  ``MultiHeadAttention`` and
``GroupQueryAttention`` receive projected Q, K and V (a packed QKV or KV input is split here).
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten.attention import attention_cost
from nncost.rules.onnx import ONNX
from nncost.rules.registry import Cost, Shape, numel

Inputs = tuple[Shape | None, ...]


def _heads(shape: Shape, heads: int) -> Shape:
    """``(B, L, H·E)`` → ``(B, H, L, E)``; a 4-d ``(B, H, L, E)`` is kept."""
    if len(shape) == 4:
        return shape
    b, length, width = shape
    return (b, heads, length, width // heads)


@ONNX.rule("Attention", unit="attention",
           formula="Q (B,Hq,L,E) or (B,L,Hq·E), K (B,Hk,S,E), V (B,Hk,S,Ev), S including a past_key cache: "
                   "MACs = B·Hq·L·S·(E+Ev); FLOPs = 2·MACs + 6·B·Hq·L·S")
def attention(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    q, k, v = inputs[0], inputs[1], inputs[2]
    assert q is not None and k is not None and v is not None
    q_heads = int(attrs.get("q_num_heads", 0) or 1)
    kv_heads = int(attrs.get("kv_num_heads", 0) or 1)
    q4, k4, v4 = _heads(q, q_heads), _heads(k, kv_heads), _heads(v, kv_heads)
    past = inputs[4] if len(inputs) > 4 else None  # past_key (B, Hk, P, E): the cache is attended to too
    source = k4[2] + (past[2] if past is not None else 0)
    # grouped heads broadcast like batch: each query head reads its group's K and V
    return attention_cost(q4, (*q4[:2], source, k4[3]), (*q4[:2], source, v4[3]))


@ONNX.rule("com.microsoft::Attention", unit="attention",
           formula="input (B,L,D), weight (D,3D): MACs = B·L·D·3D + B·L·L·2D; FLOPs = 2·MACs + B·L·3D (bias) "
                   "+ 6·B·H·L·L")
def ms_attention(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    x, w = inputs[0], inputs[1]
    assert x is not None and w is not None
    heads = int(attrs.get("num_heads", 1))
    tokens = numel(x[:-1])
    projection = tokens * w[0] * w[1]
    widths = attrs.get("qkv_hidden_sizes") or [w[1] // 3] * 3
    qk, v_width = int(widths[0]), int(widths[2])
    b, length = x[0], x[1]
    scores = attention_cost((b, heads, length, qk // heads), (b, heads, length, qk // heads),
                            (b, heads, length, v_width // heads))
    bias = tokens * w[1] if len(inputs) > 2 and inputs[2] is not None else 0
    return Cost(projection + scores.macs, 2 * projection + bias + scores.flops)


def _projected(inputs: Inputs, heads: int, kv_heads: int) -> tuple[Shape, Shape, Shape]:
    q = inputs[0]
    assert q is not None
    k = inputs[1] if len(inputs) > 1 else None
    v = inputs[2] if len(inputs) > 2 else None
    if k is None or v is None:  # packed: query (B, L, (Hq + 2·Hk)·E)
        e = q[-1] // (heads + 2 * kv_heads)
        b, length = q[0], q[1]
        return (b, heads, length, e), (b, kv_heads, length, e), (b, kv_heads, length, e)
    return _heads(q, heads), _heads(k, kv_heads), _heads(v, kv_heads)


@ONNX.rule("com.microsoft::MultiHeadAttention", unit="attention",
           formula="Q (B,L,H·E), K (B,S,H·E) or (B,H,S,E), V likewise: MACs = B·H·L·S·(E+Ev); "
                   "FLOPs = 2·MACs + 6·B·H·L·S + numel(Q, K, V) with a bias")
def ms_multi_head_attention(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    heads = int(attrs.get("num_heads", 1))
    q4, k4, v4 = _projected(inputs, heads, heads)
    cost = attention_cost(q4, k4, v4)
    bias = numel(q4) + numel(k4) + numel(v4) if len(inputs) > 3 and inputs[3] is not None else 0
    return Cost(cost.macs, cost.flops + bias)


@ONNX.rule("com.microsoft::GroupQueryAttention", unit="attention",
           formula="Q (B,L,Hq·E), K and V (B,S,Hk·E) or packed: MACs = B·Hq·L·S·(E+Ev); FLOPs = 2·MACs + 6·B·Hq·L·S "
                   "(S: the new tokens; a KV cache given as past_key is not read here)")
def ms_group_query_attention(inputs: Inputs, attrs: dict[str, Any], *, out: tuple[Shape, ...]) -> Cost:
    heads = int(attrs.get("num_heads", 1))
    kv_heads = int(attrs.get("kv_num_heads", 0) or heads)
    q4, k4, v4 = _projected(inputs, heads, kv_heads)
    return attention_cost(q4, (*q4[:2], k4[2], k4[3]), (*q4[:2], v4[2], v4[3]))
