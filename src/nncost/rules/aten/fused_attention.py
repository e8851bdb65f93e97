"""The flash and memory-efficient attention kernels, called directly rather than through SDPA,
and the variable-length attention of ``torch.nn.attention.varlen`` (``torch_attn::`` operators).

They are counted as the SDPA rules count them (``attention.py``, ``backward.py``): dense ``Q·Kᵀ``
and ``P·V`` products, ``B·H·L·S·(E + Ev)`` MACs, also when causal, plus 6 FLOPs per score; the
backward ``B·H·L·S·(3E + 2Ev)`` MACs, the four gradient products and the kernels' recomputation
of ``Q·Kᵀ``, plus 4 FLOPs per score.  On the same shapes they give the same figures as SDPA.

Their tensors are laid out ``(B, L, H, E)``, heads after the sequence.  Variable-length batches
pack the sequences of every batch element into one dimension, ``(ΣL, H, E)`` for flash and
``(1, ΣL, H, E)`` for the memory-efficient kernel, and give the cumulative offsets
(``cum_seq_q``/``cum_seq_k``, ``cu_seqlens_q``/``cu_seqlens_k``, B + 1 entries each) and the
longest lengths.  A rule sees shapes, not the offsets' values, so each of the B sequences is
counted at the longest lengths ``max_q × max_k``.  That is PyTorch's ``FlopCounterMode`` figure
under fake or meta tensors; on real offsets ``FlopCounterMode`` sums the exact lengths, and this
count is an upper bound of that sum.  A missing longest length counts the whole packed dimension.
"""

from __future__ import annotations

from typing import Any

from nncost.rules.aten import ATEN
from nncost.rules.aten.attention import attention_cost
from nncost.rules.aten.backward import sdpa_backward
from nncost.rules.registry import Cost, Shape, is_shape

Heads = tuple[Shape, Shape, Shape]


def heads_first(q: Shape, k: Shape, v: Shape) -> Heads:
    """``(B, L, H, E)`` tensors as ``(B, H, L, E)``, the layout of the SDPA rules."""
    return (q[0], q[2], q[1], q[3]), (k[0], k[2], k[1], k[3]), (v[0], v[2], v[1], v[3])


def packed(q: Shape, k: Shape, v: Shape, offsets: Shape, max_q: int | None, max_k: int | None) -> Heads:
    """Packed ``(ΣL, H, E)`` tensors as B sequences at the longest lengths, ``(B, H, max, E)``."""
    batch = offsets[0] - 1
    length = q[-3] if max_q is None else max_q
    source = k[-3] if max_k is None else max_k
    return ((batch, q[-2], length, q[-1]), (batch, k[-2], source, k[-1]), (batch, v[-2], source, v[-1]))


def flash_shapes(q: Shape, k: Shape, v: Shape, cum_seq_q: Any, max_q: Any, max_k: Any) -> Heads:
    if is_shape(cum_seq_q):
        return packed(q, k, v, cum_seq_q, max_q, max_k)
    return heads_first(q, k, v)


def efficient_shapes(q: Shape, k: Shape, v: Shape, cu_seqlens_q: Any, max_q: Any, max_k: Any) -> Heads:
    if is_shape(cu_seqlens_q):
        return packed(q[1:], k[1:], v[1:], cu_seqlens_q, max_q, max_k)
    return heads_first(q, k, v)


@ATEN.rule(
    "_flash_attention_forward",
    unit="attention",
    formula="q (B,L,H,E), k (B,S,Hk,E), v (B,S,Hk,Ev): MACs = B·H·L·S·(E+Ev), dense even when causal; "
    "FLOPs = 2·MACs + 6·B·H·L·S; packed (ΣL,H,E) with cum_seq_q of B+1 offsets: L = max_q, S = max_k",
)
def flash_attention_forward(q: Shape, k: Shape, v: Shape, cum_seq_q: Any = None, cum_seq_k: Any = None,
                            max_q: Any = None, max_k: Any = None, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return attention_cost(*flash_shapes(q, k, v, cum_seq_q, max_q, max_k))


@ATEN.rule(
    "_efficient_attention_forward",
    unit="attention",
    formula="q (B,L,H,E), k (B,S,Hk,E), v (B,S,Hk,Ev): MACs = B·H·L·S·(E+Ev), dense even when causal; "
    "FLOPs = 2·MACs + 6·B·H·L·S; packed (1,ΣL,H,E) with cu_seqlens_q of B+1 offsets: L = max_seqlen_q, "
    "S = max_seqlen_k",
)
def efficient_attention_forward(q: Shape, k: Shape, v: Shape, bias: Any = None, cu_seqlens_q: Any = None,
                                cu_seqlens_k: Any = None, max_seqlen_q: Any = None, max_seqlen_k: Any = None,
                                *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return attention_cost(*efficient_shapes(q, k, v, cu_seqlens_q, max_seqlen_q, max_seqlen_k))


@ATEN.rule(
    "_flash_attention_backward",
    unit="attention",
    formula="as _flash_attention_forward's shapes: MACs = B·H·L·S·(3E + 2Ev), Q·Kᵀ recomputed then dV, dP, dQ, "
    "dK, dense; FLOPs = 2·MACs + 4·B·H·L·S",
)
def flash_attention_backward(grad_out: Shape, q: Shape, k: Shape, v: Shape, output: Any = None,
                             logsumexp: Any = None, cum_seq_q: Any = None, cum_seq_k: Any = None,
                             max_q: Any = None, max_k: Any = None, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    q_, k_, v_ = flash_shapes(q, k, v, cum_seq_q, max_q, max_k)
    return sdpa_backward(q_, q_, k_, v_, out=out)


@ATEN.rule(
    "_efficient_attention_backward",
    unit="attention",
    formula="as _efficient_attention_forward's shapes: MACs = B·H·L·S·(3E + 2Ev), Q·Kᵀ recomputed then dV, dP, "
    "dQ, dK, dense; FLOPs = 2·MACs + 4·B·H·L·S",
)
def efficient_attention_backward(grad_out: Shape, q: Shape, k: Shape, v: Shape, bias: Any = None,
                                 output: Any = None, cu_seqlens_q: Any = None, cu_seqlens_k: Any = None,
                                 max_seqlen_q: Any = None, max_seqlen_k: Any = None, *rest: Any,
                                 out: tuple[Shape, ...]) -> Cost:
    q_, k_, v_ = efficient_shapes(q, k, v, cu_seqlens_q, max_seqlen_q, max_seqlen_k)
    return sdpa_backward(q_, q_, k_, v_, out=out)


@ATEN.rule(
    "torch_attn::_varlen_attn",
    unit="attention",
    formula="torch.nn.attention.varlen: packed q (ΣL,H,E), cu_seq_q of B+1 offsets: as _flash_attention_forward "
    "with L = max_q, S = max_k",
)
def varlen_attention(q: Shape, k: Shape, v: Shape, cu_seq_q: Shape, cu_seq_k: Any, max_q: int, max_k: int,
                     *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return attention_cost(*packed(q, k, v, cu_seq_q, max_q, max_k))


@ATEN.rule(
    "torch_attn::_varlen_attn_out",
    unit="attention",
    formula="as torch_attn::_varlen_attn, written into a given output",
)
def varlen_attention_out(output: Shape, q: Shape, k: Shape, v: Shape, cu_seq_q: Shape, cu_seq_k: Any, max_q: int,
                         max_k: int, *rest: Any, out: tuple[Shape, ...]) -> Cost:
    return varlen_attention(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, out=out)


@ATEN.rule(
    "torch_attn::_varlen_attn_backward",
    unit="attention",
    formula="as torch_attn::_varlen_attn's shapes: MACs = B·H·L·S·(3E + 2Ev), Q·Kᵀ recomputed, dense; "
    "FLOPs = 2·MACs + 4·B·H·L·S",
)
def varlen_attention_backward(grad_out: Shape, q: Shape, k: Shape, v: Shape, output: Any, lse: Any,
                              cu_seq_q: Shape, cu_seq_k: Any, max_q: int, max_k: int, *rest: Any,
                              out: tuple[Shape, ...]) -> Cost:
    q_, k_, v_ = packed(q, k, v, cu_seq_q, max_q, max_k)
    return sdpa_backward(q_, q_, k_, v_, out=out)
