"""Generation against the real ``model.generate``: the same MACs, the same cache.

Each case builds a tiny config, runs the real greedy ``generate`` on the CPU under PyTorch's
``FlopCounterMode`` (FLOPs = 2 × MACs for the matrix work it counts) and compares it with
nncost's prefill + decode, traced on meta.  The cache is compared byte for byte: the storages
the real cache object holds after ``generate`` against ``kv_cache_bytes``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import nncost
from nncost.capture.generation import cache_bytes
from nncost.cli import run as cli_run
from nncost.request import Generation
from nncost.simulation.measure import peak_of_events, without_profiler_noise

transformers = pytest.importorskip("transformers")


def tiny(kind: str) -> Any:
    """A tiny causal LM with eager attention: GQA llama, sliding-window mistral, or gemma2's
    alternating full and sliding layers."""
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=128)
    if kind == "llama":
        config = transformers.LlamaConfig(**common)
    elif kind == "mistral":
        config = transformers.MistralConfig(**common, sliding_window=8)
    else:
        config = transformers.Gemma2Config(**common, head_dim=16, sliding_window=6, query_pre_attn_scalar=16)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def real_generate(model: Any, batch: int, prompt: int, new: int) -> tuple[int, int]:
    """MACs of the real greedy generate (FlopCounterMode's FLOPs / 2) and its cache's bytes."""
    ids = torch.randint(3, 100, (batch, prompt))
    with FlopCounterMode(display=False) as counter:
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             return_dict_in_generate=True, pad_token_id=0)
    assert out.sequences.shape == (batch, prompt + new)
    return counter.get_total_flops() // 2, cache_bytes({"cache": out.past_key_values})


def costed(model: Any, batch: int, prompt: int, new: int, **request: Any) -> nncost.Result:
    return nncost.run(nncost.Request(model, nncost.Inputs(batch_size=batch), generation=Generation(prompt, new),
                                     **request))


@pytest.mark.parametrize("kind", ["llama", "mistral", "gemma2"])
@pytest.mark.parametrize("batch, prompt, new", [(1, 5, 1), (2, 6, 7), (1, 3, 20), (3, 9, 2)])
def test_prefill_and_decode_are_the_real_generate(kind: str, batch: int, prompt: int, new: int) -> None:
    model = tiny(kind)
    macs, real_cache = real_generate(model, batch, prompt, new)
    result = costed(model, batch, prompt, new)
    g = result.generation
    assert g is not None and g.prefill.execution == "meta"
    assert g.prefill.totals.macs + g.decode.totals.macs == macs
    assert g.kv_cache_bytes == real_cache
    assert g.decode_steps == new - 1 and (g.decode.totals.macs == 0) == (new == 1)


def test_a_window_that_fills_midway_is_summed_exactly() -> None:
    """Mistral's window (8) fills after a few steps: the cost per step is a line, then flat."""
    model = tiny("mistral")
    macs, real_cache = real_generate(model, 1, 3, 60)
    g = costed(model, 1, 3, 60).generation
    assert g is not None and g.decode is not None
    assert g.prefill.totals.macs + g.decode.totals.macs == macs and g.kv_cache_bytes == real_cache
    contexts = [context for context, *_ in g.steps]
    assert len(contexts) < 20  # a handful of traced steps, not 59


def test_every_step_is_its_own_trace_summed() -> None:
    """The closed-form sum equals tracing every decode step one by one, figure by figure."""
    from nncost.analyses.reads import bytes_read
    from nncost.capture.generation import session

    model = tiny("gemma2")
    g = costed(model, 2, 4, 15).generation
    assert g is not None and g.decode is not None
    sums = dict.fromkeys(("macs", "flops", "read_bytes", "write_bytes"), 0)
    with session(model, 2, max_cache_length=4 + 15 - 1) as run:
        for context in range(4, 4 + 15 - 1):
            trace = bytes_read(run.decode_at(context)[0])
            for key in sums:
                sums[key] += sum(getattr(op, key) for op in trace.ops)
    assert sums == {key: getattr(g.decode.totals, key) for key in sums}


def test_per_token_cache_is_the_closed_form() -> None:
    """Llama: 2 (K and V) × layers × KV heads × head dim × 4 bytes per token of one sequence."""
    g = costed(tiny("llama"), 3, 10, 4).generation
    assert g is not None and g.kv_cache_bytes_per_token == 2 * 2 * 2 * 16 * 4
    assert g.kv_cache_bytes == 3 * (10 + 4 - 1) * g.kv_cache_bytes_per_token  # the last token is not cached


def test_the_model_is_left_untouched() -> None:
    model = tiny("llama")
    before = {name: p.clone() for name, p in model.state_dict().items()}
    costed(model, 1, 4, 3)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) and after[name].device.type == "cpu" for name in before)


def test_times_follow_the_roofline_and_the_bounds() -> None:
    model = tiny("llama")
    g = costed(model, 1, 16, 8, hardware="h100-sxm").generation
    assert g is not None and g.decode is not None
    h100 = nncost.hardware.catalogue_device("h100-sxm")
    assert g.time_to_first_token_seconds == g.prefill.totals.estimated_seconds
    assert g.tokens_per_second == pytest.approx(7 / g.decode.totals.estimated_seconds)
    assert g.tokens_per_second < h100.bandwidth / g.weights_bytes * 2  # weights read every step (embedding aside)
    decode_layers = {layer.name for layer in g.decode.layers}
    assert {layer.name for layer in g.prefill.layers} == decode_layers


def test_the_cli_document_has_the_generation_section(tmp_path: Any) -> None:
    chunks: list[str] = []
    code = cli_run(["hf:gpt2", "--prompt", "16", "--new-tokens", "4", "--format", "json"], out=chunks.append)
    assert code == 0
    data = json.loads("".join(chunks))
    g = data["generation"]
    assert g["prompt_tokens"] == 16 and g["new_tokens"] == 4 and g["batch"] == 1
    assert g["decode"]["macs"] > 0 and g["prefill"]["macs"] > g["decode"]["macs"] / 3
    assert g["kv_cache_bytes"] == (16 + 4 - 1) * g["kv_cache_bytes_per_token"]


def test_one_new_token_has_a_decode_phase_of_zeros() -> None:
    """The prefill yields the only new token: the decode phase is there, every figure and time 0."""
    jsonschema = pytest.importorskip("jsonschema")
    from pathlib import Path

    schema = json.loads((Path(__file__).resolve().parents[1] / "docs" / "schema.json").read_text())
    result = costed(tiny("llama"), 1, 8, 1, hardware="h100-sxm")
    g = result.generation
    assert g is not None and g.decode_steps == 0
    totals = g.decode.totals
    assert (totals.macs, totals.flops, totals.read_bytes, totals.write_bytes, totals.estimated_seconds) == (0, 0, 0, 0,
                                                                                                           0.0)
    assert g.tokens_per_second is None and not g.decode.uncounted
    data = json.loads(result.to_json())
    jsonschema.validate(data, schema)
    decode = data["generation"]["decode"]
    assert data["generation"]["decode_steps"] == 0
    assert {key: decode[key] for key in ("macs", "flops", "read_bytes", "write_bytes", "seconds")} == dict.fromkeys(
        ("macs", "flops", "read_bytes", "write_bytes", "seconds"), 0)
    assert all(layer["macs"] == layer["read_bytes"] == 0 for layer in decode["layers"])
    assert "no step (1 new token)" in str(result) and result.to_csv() and result.to_markdown()


@pytest.mark.parametrize("batch", [1, 3])
def test_the_embedding_reads_the_rows_it_gathers_not_the_table(batch: int) -> None:
    """A lookup reads one row of hidden_size floats and one int64 index a token: a decode step of B
    sequences B rows, the prefill B·P; never the vocabulary's 128 rows."""
    g = costed(tiny("llama"), batch, 5, 4).generation
    assert g is not None
    row = 64 * 4 + 8  # hidden_size float32 values and the token's index

    def embedding(report: nncost.Report) -> int:
        return next(layer.read_bytes for layer in report.layers if layer.name == "model.embed_tokens")

    assert embedding(g.prefill) == batch * 5 * row
    assert embedding(g.decode) == g.decode_steps * batch * row


def test_a_long_generation_costs_the_same_work_as_a_short_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """10⁸ new tokens trace as many decode steps as 10³ and sum their time without a figure a step;
    the MACs are the closed form: per step the projections, MLP and LM head, and the attention over
    the L + 1 keys a step at context L sees (QKᵀ and PV, 2 layers × 4 heads × 16 × 2)."""
    from nncost.analyses import roofline
    from nncost.capture.generation import GenerationSession

    calls: list[int] = []
    decode_at = GenerationSession.decode_at

    def counted(self: GenerationSession, context: int) -> Any:
        calls.append(context)
        return decode_at(self, context)

    def bounded(op: Any, slope: Any, k: Any, timed: Any) -> Any:
        assert len(k) <= roofline.SUMMED_CALLS, "a figure for every step"
        return series(op, slope, k, timed)

    series = roofline.op_seconds_at
    monkeypatch.setattr(GenerationSession, "decode_at", counted)
    monkeypatch.setattr(roofline, "op_seconds_at", bounded)
    model = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=128, max_position_embeddings=2**40))
    traced = []
    for new in (10**3, 10**8):
        calls.clear()
        g = costed(model, 1, 8, new, hardware="h100-sxm").generation
        assert g is not None and g.tokens_per_second is not None
        traced.append(len(calls))
        steps, first = new - 1, 8  # the steps' contexts: 8, 9, …, 8 + new − 2
        linear = 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128) + 64 * 128
        keys = steps * first + steps * (steps - 1) // 2 + steps  # Σ (L + 1)
        assert g.decode.totals.macs == steps * linear + 2 * 4 * 16 * 2 * keys
    assert traced[0] == traced[1] <= 6


def test_tensor_parallel_is_one_gpu_of_the_megatron_layout() -> None:
    """Llama, 2 GPUs: heads, MLP columns, embedding and output projection split, norms whole;
    two all-reduces of each layer's output, the embedding's all-reduce and the logits' gather."""
    model = tiny("llama")
    whole = costed(model, 1, 16, 5, hardware="h100-sxm").generation
    half = nncost.run(nncost.Request(model, nncost.Inputs(batch_size=1), hardware="h100-sxm",
                                     generation=Generation(16, 5, tensor_parallel=2))).generation
    assert whole is not None and half is not None and half.tensor_parallel == 2
    hidden, layers, vocab = 64, 2, 128
    norms = (2 * layers + 1) * hidden  # two RMS norms a layer and the final one: not split
    params = sum(p.numel() for p in model.parameters())
    assert half.weights_bytes == 4 * (norms + (params - norms) // 2) + sum(b.numel() * 4 for b in model.buffers())
    assert half.kv_cache_bytes == whole.kv_cache_bytes // 2  # 2 KV heads: one on each GPU
    assert half.prefill.totals.macs == whole.prefill.totals.macs // 2  # every MAC is in a split layer
    prefill_bytes = 2 * layers * 16 * hidden * 4 + 16 * hidden * 4 + vocab * 4 // 2  # ring factor 2·(2−1)/2 = 1
    assert half.communication_bytes == (prefill_bytes, 4 * (2 * layers * hidden * 4 + hidden * 4 + vocab * 4 // 2))
    assert half.communication_seconds == pytest.approx(ring_seconds("h100-sxm", 2, 16, 4))
    assert half.time_to_first_token_seconds == pytest.approx(half.prefill.totals.estimated_seconds
                                                             + half.communication_seconds[0])


def ring_seconds(hardware: str, n: int, prompt: int, steps: int, hidden: int = 64, layers: int = 2,
                 vocab: int = 128, width: int = 4) -> tuple[float, float]:
    """The closed form of one GPU's collectives in a tiny Llama's generation (fp32, batch 1), as
    NCCL's ring times them: per call of the model, two all-reduces a layer and the embedding's (each
    2(n−1) ring steps, 2(n−1)/n of the tokens' hidden states sent) and the logits' all-gather (n−1
    steps, (n−1)/n of the last position's logits); each call latency + bytes ÷ busbw."""
    ring = nncost.hardware.catalogue_device(hardware).collectives
    assert ring is not None

    def model_call(tokens: int) -> float:
        reduce = ring.base_latency + 2 * (n - 1) * ring.step_latency + 2 * (n - 1) / n * tokens * hidden * width \
            / ring.bus_bandwidth
        gather = ring.base_latency + (n - 1) * ring.step_latency + (n - 1) / n * vocab * width / ring.bus_bandwidth
        return (2 * layers + 1) * reduce + gather

    return model_call(prompt), steps * model_call(1)


@pytest.mark.parametrize("n", [2, 4])
def test_tensor_parallel_collectives_are_nccl_rings(n: int) -> None:
    """At 2 and 4 GPUs of an H100 SXM, the communication time is the closed form of NCCL's ring
    (latency per call + bus bytes ÷ busbw, :func:`ring_seconds`), in the times and in the JSON, under
    hf-generate and vllm alike."""
    model = tiny("llama")
    for engine in ("hf-generate", "vllm"):
        result = nncost.run(nncost.Request(model, nncost.Inputs(batch_size=1), hardware="h100-sxm",
                                           generation=Generation(16, 5, tensor_parallel=n, engine=engine)))
        g = result.generation
        assert g is not None and g.communication_seconds is not None
        assert g.communication_seconds == pytest.approx(ring_seconds("h100-sxm", n, 16, 4)), engine
        document = json.loads(result.to_json())
        assert document["generation"]["communication_seconds"] == pytest.approx(
            dict(zip(("prefill", "decode"), ring_seconds("h100-sxm", n, 16, 4), strict=True)))


def test_collective_time_grows_with_the_ring() -> None:
    """More GPUs: each call takes 2(n−1) ring steps of latency and sends 2(n−1)/n of its bytes, so the
    same all-reduces take longer on 4 GPUs than on 2, by the ring's factors; one GPU sends nothing."""
    model = tiny("llama")
    seconds = {}
    for n in (1, 2, 4):
        g = nncost.run(nncost.Request(model, nncost.Inputs(batch_size=1), hardware="a100-80gb",
                                      generation=Generation(16, 5, tensor_parallel=n))).generation
        assert g is not None
        seconds[n] = g.communication_seconds
    assert seconds[1] is None
    assert seconds[2] == pytest.approx(ring_seconds("a100-80gb", 2, 16, 4))
    assert seconds[4] == pytest.approx(ring_seconds("a100-80gb", 4, 16, 4))
    assert seconds[4][0] > seconds[2][0] and seconds[4][1] > seconds[2][1]


def test_collectives_without_nccl_figures_keep_the_link_bound() -> None:
    """A device with no published busbw (the V100's NVLink 2) times its bytes at half its link's two-way
    bandwidth, with no latency."""
    g = nncost.run(nncost.Request(tiny("llama"), nncost.Inputs(batch_size=1), hardware="v100",
                                  generation=Generation(16, 5, tensor_parallel=2))).generation
    assert g is not None and g.communication_seconds is not None
    one_way = nncost.hardware.catalogue_device("v100").interconnect_bandwidth / 2
    assert nncost.hardware.catalogue_device("v100").collectives is None
    assert g.communication_seconds == pytest.approx((g.communication_bytes[0] / one_way,
                                                     g.communication_bytes[1] / one_way))


def test_tensor_parallel_needs_a_divisor_of_the_heads() -> None:
    with pytest.raises(nncost.BadRequest, match="4 attention heads cannot be split over 3 GPUs"):
        nncost.run(nncost.Request(tiny("llama"), generation=Generation(4, 2, tensor_parallel=3)))


def test_tensor_parallel_needs_a_divisor_or_a_multiple_of_the_key_value_heads() -> None:
    """28 query heads and 4 key-value heads (Qwen2.5-7B's): 7 GPUs divide the query heads only, and
    are no multiple of the key-value heads that a GPU could repeat: refused."""
    config = transformers.LlamaConfig(hidden_size=224, intermediate_size=128, num_hidden_layers=1,
                                      num_attention_heads=28, num_key_value_heads=4, vocab_size=128)
    model = transformers.LlamaForCausalLM(config)
    with pytest.raises(nncost.BadRequest, match="4 key-value heads cannot be split over 7 GPUs"):
        nncost.run(nncost.Request(model, generation=Generation(4, 2, tensor_parallel=7)))


def test_tensor_parallel_stays_within_a_node_as_a_training_layout_does() -> None:
    """16 GPUs of an 8-GPU H100 node would send every all-reduce over the network, not NVLink: refused, with
    the training layout's words."""
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=16, num_key_value_heads=16, vocab_size=128)
    model = transformers.LlamaForCausalLM(config)
    with pytest.raises(nncost.BadRequest, match="tensor parallelism runs within a node: at most 8 GPUs of h100-sxm"):
        nncost.run(nncost.Request(model, generation=Generation(4, 2, tensor_parallel=16), hardware="h100-sxm"))
    eight = nncost.run(nncost.Request(model, generation=Generation(4, 2, tensor_parallel=8), hardware="h100-sxm"))
    assert eight.generation is not None and eight.generation.tensor_parallel == 8


def test_the_html_page_charts_step_time_and_cache_against_the_context(tmp_path: Any) -> None:
    from nncost.render.html import write_html

    result = costed(tiny("mistral"), 1, 3, 30, hardware="h100-sxm")
    g = result.generation
    assert g is not None
    path = tmp_path / "generation.html"
    write_html(path, result)
    page = path.read_text()
    assert 'aria-label="decode step time"' in page and 'aria-label="kv cache"' in page
    assert page.count("<circle") >= 2 * len(g.steps)  # every traced context is a point on both charts
    assert "Time to first token" in page and "KV cache" in page
    assert f"Layer tree ({len(g.prefill.layers)} module calls)" in page  # the prefill's layers


@pytest.mark.parametrize("prompt, new", [(200, 6), (16, 40)])  # the prefill's peak, the decode's
def test_the_peak_is_the_measured_peak_of_the_real_generate(prompt: int, new: int) -> None:
    """The CPU allocator's events over a real ``generate`` (bench/memory.py's method) against
    ``peak_bytes``: in a decode step each layer's cache is replaced by a longer copy, and the
    copy it replaces is freed as the step goes, so the cache is not held twice."""
    config = transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=256)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    batch = 4 if new < 10 else 8
    ids = torch.randint(3, 100, (batch, prompt))
    held = sum(p.numel() * p.element_size() for p in model.parameters()) + ids.numel() * ids.element_size()
    with torch.no_grad(), without_profiler_noise(), torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    measured = held + peak_of_events(prof)
    g = costed(model, batch, prompt, new).generation
    assert g is not None and g.peak_phase == ("prefill" if new < 10 else "decode")
    assert g.peak_bytes == pytest.approx(measured, rel=0.01)
