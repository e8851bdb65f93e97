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


@ATEN.rule(
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
    family="attention",
    formula="q (B,H,L,E), k (B,H,S,E), v (B,H,S,Ev): MACs = B·H·L·S·(E+Ev), dense even when causal; "
    "FLOPs = 2·MACs + 6·B·H·L·S (scale and softmax)",
)
def sdpa(q: Shape, k: Shape, v: Shape, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return attention_cost(q, k, v)
