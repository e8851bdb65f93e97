"""``--engine vllm``: the decode step against the paged engine's closed form.

A paged engine's decode step at context ``L`` (tokens already cached, per sequence) moves

    weights read once
  + the context's keys and values read once from their blocks: for each layer,
    2 (K and V) × kv_heads × head_dim × bytes × min(L + 1, window) × batch
    (the new token is written first, then read with the context, as vLLM's kernels do)
  + the new token's keys and values written once: the same with 1 token, and the copy that writes
    them reads them and their slot index (8 bytes a token)
  + activations.

The first three terms are written below from the config alone, and checked exactly against the
bytes the traced step reads from the cache's and the parameters' storages and writes to the
cache's.  The activations (every read and write of a storage that is neither a weight nor the
cache: hidden states, norms, rotary tables, logits) are eager PyTorch's many small operators; an
exact closed form of them would be a per-family formula, so they are held to two exact checks
instead: they do not depend on the context length (no concatenation, no copy of the cache grows
with it; the one change is the mask a sliding-window model's own code builds once its window is
full, W booleans, which vLLM's kernel does not need), and they are the hf-generate step's own
activations plus the slot index reads, so the engine changes the cache traffic and nothing else.
The matrix work (MACs) is that of the hf-generate step at the same context, and the prefill's
that of hf-generate's prefill.

The models are tiny configs in bf16, the dtype vLLM serves in (its attention kernel is then
FlashAttention, which takes grouped-query heads without repeating them).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

import nncost
from nncost.analyses.reads import bytes_read, expected_experts
from nncost.capture.generation import session
from nncost.capture.paged import BLOCK_TOKENS
from nncost.cli import run as cli_run
from nncost.errors import BadRequest
from nncost.records.trace import Trace
from nncost.request import Generation

transformers = pytest.importorskip("transformers")

BATCH, BYTES = 3, 2  # sequences; bf16
COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=128, max_position_embeddings=256)


def config(kind: str) -> Any:
    if kind == "llama":
        return transformers.LlamaConfig(**COMMON)
    if kind == "mistral":
        return transformers.MistralConfig(**COMMON, sliding_window=8)
    return transformers.MixtralConfig(**COMMON, num_local_experts=4, num_experts_per_tok=2)


def model(kind: str) -> Any:
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config(kind))


def traffic(trace: Trace) -> Counter[str]:
    """Bytes read and written, by what the storage holds: param, cache, or activation."""
    trace = bytes_read(trace)
    totals: Counter[str] = Counter()
    for op in trace.ops:
        for verb, pairs in (("read", op.reads), ("write", op.writes)):
            for sid, n in pairs:
                named = trace.named.get(sid)
                totals[f"{named.kind if named else 'activation'} {verb}"] += n
    return totals


def weights_read(c: Any) -> int:
    """Every weight once, but the embedding table: one row a sequence (vLLM's lookup too); a
    mixture's experts in the share a decode step's tokens route to (the uniform-routing
    expectation of nncost.analyses.reads, each expert tensor rounded as it is read)."""
    hidden, inter, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    head_dim = hidden // c.num_attention_heads
    kv = c.num_key_value_heads * head_dim
    attention = hidden * hidden * 2 + hidden * kv * 2
    norms = 2 * hidden
    per_layer = (attention + norms) * BYTES
    experts = getattr(c, "num_local_experts", None)
    if experts is None:
        per_layer += 3 * hidden * inter * BYTES
    else:
        share = expected_experts(experts, c.num_experts_per_tok, BATCH) / experts
        gate_up, down = experts * 2 * inter * hidden * BYTES, experts * hidden * inter * BYTES
        per_layer += round(gate_up * share) + round(down * share) + experts * hidden * BYTES  # + the router
    lm_head = c.vocab_size * hidden * BYTES
    return layers * per_layer + hidden * BYTES + lm_head + BATCH * hidden * BYTES


def kv_bytes(c: Any, tokens: int) -> int:
    """Keys and values of ``tokens`` tokens a sequence over every layer and the batch."""
    head_dim = c.hidden_size // c.num_attention_heads
    return c.num_hidden_layers * 2 * c.num_key_value_heads * head_dim * BYTES * tokens * BATCH


def window(c: Any, context: int) -> int:
    """The tokens attention reads at a decode step of ``context``: the context and the new one, at
    most the sliding window."""
    sliding = getattr(c, "sliding_window", None)
    return min(context + 1, sliding) if sliding else context + 1


def steps(kind: str, contexts: tuple[int, ...], engine: str) -> dict[int, Trace]:
    with session(model(kind), BATCH, dtype=torch.bfloat16, max_cache_length=max(contexts) + 1, kernels="cuda",
                 engine=engine) as run:
        return {context: run.decode_at(context)[0] for context in contexts}


@pytest.mark.parametrize("kind", ["llama", "mistral", "mixtral"])
def test_the_decode_step_is_the_paged_engines_closed_form(kind: str) -> None:
    c = config(kind)
    contexts = (5, 6, 20, 33)  # mistral's window (8) fills between them
    engine, hf = steps(kind, contexts, "vllm"), steps(kind, contexts, "hf-generate")
    layers = c.num_hidden_layers
    for context in contexts:
        moved, hf_moved = traffic(engine[context]), traffic(hf[context])
        assert moved["param read"] == weights_read(c)
        assert moved["param write"] == 0
        assert moved["cache read"] == kv_bytes(c, window(c, context))
        assert moved["cache write"] == kv_bytes(c, 1)
        slot_index = layers * 2 * 8  # the K and the V copy of each layer read the one-token slot index
        assert moved["activation read"] == hf_moved["activation read"] + slot_index
        assert moved["activation write"] == hf_moved["activation write"]
        activations = moved["activation read"] + moved["activation write"]
        total = sum(op.read_bytes + op.write_bytes for op in bytes_read(engine[context]).ops)
        assert total == weights_read(c) + kv_bytes(c, window(c, context)) + kv_bytes(c, 1) + activations
        assert sum(op.macs for op in engine[context].ops) == sum(op.macs for op in hf[context].ops)
    # the activations do not grow with the context; a sliding window's mask (the model's own code
    # builds it, W booleans, once the window is full) is the one change, between 6 and 20
    same = ((5, 6), (20, 33)) if kind == "mistral" else ((5, 6), (6, 20), (20, 33))
    for a, b in same:
        assert traffic(engine[a])["activation read"] == traffic(engine[b])["activation read"]
        assert traffic(engine[a])["activation write"] == traffic(engine[b])["activation write"]


@pytest.mark.parametrize("kind", ["llama", "mistral", "mixtral"])
def test_prefill_and_every_step_do_the_matrix_work_of_hf_generate(kind: str) -> None:
    costed = {engine: nncost.run(nncost.Request(model(kind), nncost.Inputs(batch_size=BATCH), dtype=torch.bfloat16,
                                                generation=Generation(12, 25, engine=engine))).generation
              for engine in ("hf-generate", "vllm")}
    hf, engine = costed["hf-generate"], costed["vllm"]
    assert hf is not None and engine is not None and engine.engine == "vllm"
    assert engine.prefill.totals.macs == hf.prefill.totals.macs
    assert engine.decode.totals.macs == hf.decode.totals.macs
    assert engine.decode.totals.read_bytes < hf.decode.totals.read_bytes  # no concatenation of the cache


def test_the_cache_holds_whole_blocks() -> None:
    c = config("llama")
    g = nncost.run(nncost.Request(model("llama"), nncost.Inputs(batch_size=BATCH), dtype=torch.bfloat16,
                                  generation=Generation(12, 25, engine="vllm"))).generation
    assert g is not None
    tokens = 12 + 25 - 1  # in the cache after the last decode step
    assert g.kv_cache_bytes == kv_bytes(c, -(-tokens // BLOCK_TOKENS) * BLOCK_TOKENS)
    assert g.kv_cache_bytes_per_token * BATCH == kv_bytes(c, 1)
    assert g.cache == "DynamicCache (PagedLayer ×2)"


def test_a_sliding_layer_frees_the_blocks_out_of_its_window() -> None:
    c = config("mistral")
    g = nncost.run(nncost.Request(model("mistral"), nncost.Inputs(batch_size=BATCH), dtype=torch.bfloat16,
                                  generation=Generation(30, 20, engine="vllm"))).generation
    assert g is not None
    # 49 tokens: blocks 0-3 written; the window (8) holds tokens 41-48, in blocks 2 and 3
    assert g.kv_cache_bytes == kv_bytes(c, 2 * BLOCK_TOKENS)


def test_a_cache_layer_it_cannot_page_is_refused_by_name() -> None:
    with torch.device("meta"):
        mamba = transformers.AutoModelForCausalLM.from_config(transformers.MambaConfig(
            hidden_size=32, num_hidden_layers=2, vocab_size=64, state_size=4))
    with pytest.raises(BadRequest, match="paged"):
        nncost.run(nncost.Request(mamba, nncost.Inputs(batch_size=1), generation=Generation(4, 3, engine="vllm")))


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(BadRequest, match="hf-generate, vllm"):
        Generation(4, 4, engine="trtllm")


@pytest.fixture
def llama_dir(tmp_path: Path) -> Path:
    config("llama").save_pretrained(tmp_path)
    return tmp_path


def test_the_engine_shows_in_the_text_and_the_json(llama_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(llama_dir), "--prompt", "8", "--new-tokens", "4", "--dtype", "bfloat16"]
    assert cli_run([*args, "--engine", "vllm"]) == 0
    assert "as vLLM runs them (--engine vllm" in capsys.readouterr().out
    assert cli_run([*args, "--engine", "vllm", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["generation"]["engine"] == "vllm"
    assert cli_run([*args, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["generation"]["engine"] == "hf-generate"


def test_engine_without_a_prompt_is_refused(llama_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_run([str(llama_dir), "--engine", "vllm"]) != 0
    assert "--engine vllm sets whose generation is costed: add --prompt" in capsys.readouterr().err
    with pytest.raises(BadRequest, match="add --prompt"):
        nncost.build_request(str(llama_dir), engine="vllm")


def test_the_engine_flag_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_run(["--help"])
    out = capsys.readouterr().out
    assert "--engine {hf-generate,vllm}" in out and "paged KV cache" in out
