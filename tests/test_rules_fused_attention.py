"""The flash and memory-efficient attention kernels called directly, against the SDPA rules.

Layout ``(B, L, H, E)``; dense count ``MACs = B·H·L·S·(E + Ev)``, ``FLOPs = 2·MACs + 6·B·H·L·S``;
backward ``MACs = B·H·L·S·(3E + 2Ev)`` (``Q·Kᵀ`` recomputed, then the four gradient products, as
PyTorch's ``sdpa_backward_flop_count``), ``FLOPs = 2·MACs + 4·B·H·L·S``.  Packed variable-length batches
(B + 1 cumulative offsets) count each of the B sequences at the longest lengths.
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nncost
from calls import Call
from nncost.rules import ATEN

SETTINGS: dict[str, Any] = {"deadline": None}
aten = torch.ops.aten


def meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=torch.float16)


def offsets(batch: int) -> torch.Tensor:
    return torch.empty(batch + 1, device="meta", dtype=torch.int32)


def dense(batch: int, heads: int, length: int, source: int, e: int, ev: int) -> tuple[int, int]:
    scores = batch * heads * length * source
    macs = scores * (e + ev)  # Q·Kᵀ and P·V
    return macs, 2 * macs + 6 * scores


def sdpa_rule(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...]) -> tuple[int, int]:
    rule = ATEN.get("_scaled_dot_product_efficient_attention")
    assert rule is not None
    return tuple(rule.fn(q, k, v, None, False, out=()))  # type: ignore[return-value]


def only(report: nncost.Report, op: str) -> tuple[int, int]:
    assert report.uncounted == []
    assert [c.op for layer in report.layers for c in layer.self_ops] == [op]
    return report.totals.macs, report.totals.flops


shapes = {
    "batch": st.integers(1, 3),
    "kv_heads": st.integers(1, 2),
    "group": st.integers(1, 3),
    "length": st.integers(1, 9),
    "source": st.integers(1, 9),
    "e": st.sampled_from([8, 16, 32]),
}


@settings(max_examples=30, **SETTINGS)
@given(**shapes, causal=st.booleans())
def test_flash_forward_agrees_with_sdpa(batch: int, kv_heads: int, group: int, length: int, source: int, e: int,
                                        causal: bool) -> None:
    heads = kv_heads * group
    q, k, v = meta(batch, length, heads, e), meta(batch, source, kv_heads, e), meta(batch, source, kv_heads, e)
    flash = Call(lambda q, k, v: aten._flash_attention_forward(q, k, v, None, None, length, source, 0.0, causal,
                                                               False))
    got = only(nncost.profile(flash, inputs=(q, k, v)), "_flash_attention_forward")
    assert got == dense(batch, heads, length, source, e, e)
    assert got == sdpa_rule((batch, heads, length, e), (batch, kv_heads, source, e), (batch, kv_heads, source, e))
    # the same attention through SDPA on meta (PyTorch's math path): the same MACs
    sdpa = nncost.profile(Call(lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=causal, enable_gqa=True)), inputs=(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)))
    assert sdpa.totals.macs == got[0]


@settings(max_examples=30, **SETTINGS)
@given(**shapes, ev=st.sampled_from([8, 16, 32]), mask_type=st.sampled_from([0, 1]))
def test_efficient_forward_agrees_with_sdpa(batch: int, kv_heads: int, group: int, length: int, source: int, e: int,
                                            ev: int, mask_type: int) -> None:
    heads = kv_heads * group
    q, k, v = meta(batch, length, heads, e), meta(batch, source, heads, e), meta(batch, source, heads, ev)
    efficient = Call(lambda q, k, v: aten._efficient_attention_forward(q, k, v, None, None, None, None, None, 0.0,
                                                                       mask_type))
    got = only(nncost.profile(efficient, inputs=(q, k, v)), "_efficient_attention_forward")
    assert got == dense(batch, heads, length, source, e, ev)


@settings(max_examples=30, **SETTINGS)
@given(batch=st.integers(1, 4), heads=st.integers(1, 3), max_q=st.integers(1, 9), max_k=st.integers(1, 9),
       e=st.sampled_from([8, 16]))
def test_packed_sequences_count_every_sequence_at_the_longest_lengths(batch: int, heads: int, max_q: int,
                                                                      max_k: int, e: int) -> None:
    total_q, total_k = batch * max_q - (batch - 1), batch * max_k  # the packed lengths do not enter the count
    expected = dense(batch, heads, max_q, max_k, e, e)
    flash = Call(lambda q, k, v, cq, ck: aten._flash_attention_forward(q, k, v, cq, ck, max_q, max_k, 0.0, False,
                                                                       False))
    packed = (meta(total_q, heads, e), meta(total_k, heads, e), meta(total_k, heads, e), offsets(batch), offsets(batch))
    assert only(nncost.profile(flash, inputs=packed), "_flash_attention_forward") == expected
    efficient = Call(lambda q, k, v, cq, ck: aten._efficient_attention_forward(q, k, v, None, cq, ck, max_q, max_k,
                                                                               0.0, 0))
    packed = (meta(1, total_q, heads, e), meta(1, total_k, heads, e), meta(1, total_k, heads, e), offsets(batch),
              offsets(batch))
    assert only(nncost.profile(efficient, inputs=packed), "_efficient_attention_forward") == expected


def test_packed_sequences_without_a_longest_length_count_the_whole_packed_dimension() -> None:
    rule = ATEN.get("_efficient_attention_forward")
    assert rule is not None
    q = k = v = (1, 30, 2, 8)
    assert rule.fn(q, k, v, None, (4,), (4,), None, None, 0.0, 0, out=()) == dense(3, 2, 30, 30, 8, 8)


@settings(max_examples=40, **SETTINGS)
@given(**shapes, ev=st.sampled_from([8, 16]), packed=st.booleans())
def test_backward_kernels_agree_with_the_sdpa_backward(batch: int, kv_heads: int, group: int, length: int,
                                                       source: int, e: int, ev: int, packed: bool) -> None:
    heads = kv_heads * group
    sdpa_backward = ATEN.get("_scaled_dot_product_efficient_attention_backward")
    flash, efficient = ATEN.get("_flash_attention_backward"), ATEN.get("_efficient_attention_backward")
    assert sdpa_backward is not None and flash is not None and efficient is not None
    expected = sdpa_backward.fn((batch, heads, length, ev), (batch, heads, length, e), (batch, kv_heads, source, e),
                                (batch, kv_heads, source, ev), out=())
    scores = batch * heads * length * source
    macs = scores * (3 * e + 2 * ev)  # Q·Kᵀ, dO·Vᵀ, Pᵀ·dO, dS·K, dSᵀ·Q
    assert expected == (macs, 2 * macs + 4 * scores)
    if packed:
        q, k, v, o = (batch * length, heads, e), (batch * source, kv_heads, e), (batch * source, kv_heads, ev), (
            batch * length, heads, ev)
        cum = (batch + 1,)
        assert flash.fn(o, q, k, v, o, (heads, batch * length), cum, cum, length, source, 0.0, False, (2,), (),
                        out=()) == expected
        one = (1, *q), (1, *k), (1, *v), (1, *o)
        assert efficient.fn(one[3], *one[:3], None, one[3], cum, cum, length, source, (1, heads, batch * length),
                            0.0, (), (), 0, False, out=()) == expected
    else:
        q, k, v, o = (batch, length, heads, e), (batch, source, kv_heads, e), (batch, source, kv_heads, ev), (
            batch, length, heads, ev)
        assert flash.fn(o, q, k, v, o, (batch, heads, length), None, None, length, source, 0.0, False, (2,), (),
                        out=()) == expected
        assert efficient.fn(o, q, k, v, None, o, None, None, length, source, (batch, heads, length), 0.0, (), (), 0,
                            False, out=()) == expected


@settings(max_examples=20, **SETTINGS)
@given(batch=st.integers(1, 4), heads=st.integers(1, 3), max_q=st.integers(1, 9), max_k=st.integers(1, 9),
       e=st.sampled_from([8, 16]))
def test_varlen_attention_counts_like_the_packed_flash_kernel(batch: int, heads: int, max_q: int, max_k: int,
                                                              e: int) -> None:
    import torch.nn.attention.varlen  # registers the torch_attn operators

    q, k = meta(batch * max_q, heads, e), meta(batch * max_k, heads, e)
    varlen = Call(lambda q, k, v, cq, ck: torch.ops.torch_attn._varlen_attn(q, k, v, cq, ck, max_q, max_k))
    report = nncost.profile(varlen, inputs=(q, k, k, offsets(batch), offsets(batch)))
    assert only(report, "torch_attn::_varlen_attn") == dense(batch, heads, max_q, max_k, e, e)
    backward = ATEN.get("torch_attn::_varlen_attn_backward")
    assert backward is not None
    cum = (batch + 1,)
    scores = batch * heads * max_q * max_k
    macs = 5 * scores * e  # Q·Kᵀ recomputed, then the four gradient products
    assert backward.fn(q.shape, q.shape, k.shape, k.shape, q.shape, (heads, batch * max_q), cum, cum, max_q, max_k,
                       False, (2,), out=()) == (macs, 2 * macs + 4 * scores)
