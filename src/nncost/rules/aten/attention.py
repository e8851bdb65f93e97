"""Fused scaled-dot-product attention kernels.

Attention is counted dense, as the math kernel computes it: the full ``Q·Kᵀ`` score matrix
and the full ``P·V`` product, also when the mask is causal.  The fused CPU and GPU kernels
skip masked blocks; nncost still counts them so that every backend gives the same figure.
When SDPA runs on the meta device PyTorch takes the math path, which nncost sees as
``bmm`` and ``_safe_softmax`` calls: the MACs are the same as this rule's.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.registry import Cost, Shape, numel

SOFTMAX_FLOPS_PER_SCORE = 5  # max, subtract, exp, sum, divide
SCALE_FLOPS_PER_SCORE = 1


def attention_cost(q: Shape, k: Shape, v: Shape) -> Cost:
    """q ``(*B, L, E)``, k ``(*B, S, E)``, v ``(*B, S, Ev)``; GQA heads broadcast like batch."""
    batch = numel(q[:-2])
    length, source = q[-2], k[-2]
    scores = batch * length * source
    macs = scores * q[-1] + scores * v[-1]
    return Cost(macs, 2 * macs + (SOFTMAX_FLOPS_PER_SCORE + SCALE_FLOPS_PER_SCORE) * scores)


def _plug_sdpa(q: Shape, k: Shape, v: Shape, *rest: Any, out: tuple[Shape, ...]) -> str:
    return (f"MACs = B·H·L·S·(E+Ev) = {'·'.join(map(str, q[:-2]))}·{q[-2]}·{k[-2]}·({q[-1]}+{v[-1]}), dense;"
            " FLOPs = 2·MACs + 6·B·H·L·S")


@ATEN.rule(
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
    unit="attention",
    plug=_plug_sdpa,
    formula="q (B,H,L,E), k (B,H,S,E), v (B,H,S,Ev): MACs = B·H·L·S·(E+Ev), dense even when causal; "
    "FLOPs = 2·MACs + 6·B·H·L·S (scale and softmax)",
)
def sdpa(q: Shape, k: Shape, v: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return attention_cost(q, k, v)


@ATEN.rule(
    "_native_multi_head_attention",
    unit="attention",
    formula="nn.MultiheadAttention's inference fast path, q (B,L,E), k and v (B,S,E): "
    "MACs = B·L·E² (q) + 2·B·S·E² (k, v) + 2·B·L·S·E (attention) + B·L·E² (out); "
    "FLOPs = 2·MACs + biases + 6·B·H·L·S",
)
def native_multi_head_attention(q: Shape, k: Shape, v: Shape, embed_dim: int, num_heads: int,
                                *rest: Any, out: tuple[Shape, ...]) -> Cost:
    batch, length, source, e = numel(q[:-2]), q[-2], k[-2], embed_dim
    projections = batch * (2 * length + 2 * source) * e * e
    attention = attention_cost((batch, num_heads, length, e // num_heads), (batch, num_heads, source, e // num_heads),
                               (batch, num_heads, source, e // num_heads))
    biases = batch * (2 * length + 2 * source) * e
    return Cost(projections + attention.macs, 2 * projections + biases + attention.flops)


@ATEN.rule(
    "_transformer_encoder_layer_fwd",
    unit="attention",
    formula="nn.TransformerEncoderLayer's inference fast path, src (B,L,E), FFN width F: self-attention as "
    "_native_multi_head_attention, plus MACs = 2·B·L·E·F; FLOPs add biases, 2 LayerNorms (7/elt), "
    "the activation (1/elt of B·L·F) and 2 residual adds",
)
def transformer_encoder_layer(src: Shape, embed_dim: int, num_heads: int, *rest: Any,
                              out: tuple[Shape, ...]) -> Cost:
    attention = native_multi_head_attention(src, src, src, embed_dim, num_heads, out=out)
    ffn_weight_1 = rest[11]
    tokens, width = numel(src[:-1]), ffn_weight_1[0]
    ffn_macs = 2 * tokens * embed_dim * width
    extra = tokens * (width + embed_dim) + 2 * 7 * tokens * embed_dim + tokens * width + 2 * tokens * embed_dim
    return Cost(attention.macs + ffn_macs, attention.flops + 2 * ffn_macs + extra)
