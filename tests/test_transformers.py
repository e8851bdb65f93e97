"""Transformer families through transformers' own classes, random weights, nothing downloaded."""

from __future__ import annotations

import pytest
import torch

import nncost

transformers = pytest.importorskip("transformers")


def gpt2_macs(layers: int, d: int, vocab: int, seq: int, inner: int | None = None) -> int:
    """Closed form: per layer QKV, projection and the two MLP matrices, dense attention, LM head."""
    inner = inner or 4 * d
    linear = layers * (3 * d * d + d * d + 2 * d * inner) * seq
    attention = layers * 2 * seq * seq * d
    return linear + attention + d * vocab * seq


def test_gpt2_small_params_and_attention_macs_at_1024_tokens() -> None:
    config = transformers.GPT2Config()
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(config)
    report = nncost.profile(model, kwargs={"input_ids": torch.zeros(1, 1024, dtype=torch.long)})
    assert report.totals.params == 124_439_808  # lm_head is tied to wte: counted once
    assert report.totals.macs == gpt2_macs(12, 768, 50257, 1024)
    assert report.uncounted == []
    assert report.execution == "meta"


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_attention_is_counted_the_same_on_cpu_and_meta(attn: str) -> None:
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64,
                                     attn_implementation=attn)
    model = transformers.GPT2LMHeadModel(config)
    ids = torch.zeros(2, 32, dtype=torch.long)
    meta = nncost.profile(model, kwargs={"input_ids": ids})
    real = nncost.profile(model, kwargs={"input_ids": ids}, device="cpu")
    assert real.execution == "real"
    assert meta.totals.macs == real.totals.macs == 2 * gpt2_macs(2, 64, 100, 32)


def test_llama_7b_default_config_on_meta() -> None:
    config = transformers.LlamaConfig()
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    seq = 64
    report = nncost.profile(model, kwargs={"input_ids": torch.zeros(1, seq, dtype=torch.long)})
    assert report.totals.params == 6_738_415_616
    d, inner, layers, vocab = 4096, 11008, 32, 32000
    linear = layers * (4 * d * d + 3 * d * inner) * seq + d * vocab * seq
    assert report.totals.macs == linear + layers * 2 * seq * seq * d


def test_bert_returns_nested_outputs_and_counts_everything() -> None:
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=100)
    model = transformers.BertModel(config)
    report = nncost.profile(model, kwargs={"input_ids": torch.zeros(1, 16, dtype=torch.long)})
    assert report.totals.params == sum(p.numel() for p in model.parameters())
    assert report.uncounted == []
    seq, d = 16, 64
    per_layer = (4 * d * d + 2 * d * 128) * seq + 2 * seq * seq * d
    pooler = d * d
    assert report.totals.macs == 2 * per_layer + pooler
